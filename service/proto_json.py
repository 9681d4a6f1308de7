"""Strict proto3 JSON input for REST bodies the gateway hands over raw (google.api.HttpBody):
unknown fields and wrong JSON types are refused by name, all at once, before json_format
converts the document, which would accept `"35"` for a number and report one error at a time."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from service.domain.errors import FieldViolation, InvalidInput, invalid
from service.rest_json import loads

M = TypeVar("M", bound=Message)
_INTEGERS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}


def _value_rule(field: FieldDescriptor, value: Any) -> str | None:
    """The broken rule when `value` is not a JSON value of the field's type."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return None if isinstance(value, str) else "must be a string"
    if kind == FieldDescriptor.TYPE_BOOL:
        return None if isinstance(value, bool) else "must be true or false"
    if kind in _INTEGERS:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "must be an integer"
    if kind in _FLOATS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "must be a number"
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        names = [v.name for v in field.enum_type.values if v.number != 0]
        if isinstance(value, str) and value in names:
            return None
        return f"must be one of {', '.join(names)}"
    assert field.message_type is not None
    if field.message_type.full_name == "google.protobuf.Timestamp":
        return None if isinstance(value, str) else "must be an ISO-8601 time"
    return None if isinstance(value, dict) else "must be a JSON object"


def _check(
    document: dict[str, Any], descriptor: Descriptor, path: str, out: list[FieldViolation]
) -> None:
    by_name = {f.json_name: f for f in descriptor.fields}
    by_name.update({f.name: f for f in descriptor.fields})
    unknown = [key for key in document if key not in by_name]
    if unknown:
        names = ", ".join(f"{path}{key}" for key in unknown)
        out.append(FieldViolation(names, f"unknown field{'s' * (len(unknown) > 1)}: {names}"))
    for key, value in document.items():
        field = by_name.get(key)
        if field is None or value is None:
            continue
        where = f"{path}{key}"
        items: list[tuple[str, Any]] = [(where, value)]
        if field.is_repeated:
            if not isinstance(value, list):
                out.append(FieldViolation(where, "must be a JSON array"))
                continue
            items = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
        for item_path, item in items:
            rule = _value_rule(field, item)
            if rule is not None:
                out.append(FieldViolation(item_path, rule))
            elif isinstance(item, dict) and field.message_type is not None:
                _check(item, field.message_type, f"{item_path}.", out)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def parse(raw: bytes, message: M) -> tuple[M, frozenset[str]]:
    """Fills `message` from a JSON body; returns it with the top-level names the body had
    (proto3 cannot tell an empty list from an absent one). InvalidInput names every
    offending field."""
    return parse_document(loads(raw), message)


def parse_document(document: Any, message: M) -> tuple[M, frozenset[str]]:
    """As parse, for JSON already decoded (a document after a patch)."""
    if not isinstance(document, dict):
        raise invalid("body", "must be a JSON object")
    violations: list[FieldViolation] = []
    _check(document, cast(Descriptor, message.DESCRIPTOR), "", violations)
    if violations:
        raise InvalidInput(violations)
    try:
        json_format.ParseDict(_without_nulls(document), message)
    except json_format.ParseError as error:  # values out of range, bad times
        raise invalid("body", str(error)) from None
    return message, frozenset(document)
