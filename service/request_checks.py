"""Checks every request message before its servicer sees it, from the descriptors alone, so
that each rpc (and each new one) gets them: the bytes must parse, and no value may be one
that the wire format allows but nothing downstream can hold (NUL in a string, an enum number
without a name, NaN or Infinity, a Timestamp outside its range). Failures name the field by
its path in the message and the rule, as INVALID_ARGUMENT, and nothing is stored.

Streamed ingest checks a thousand events per message, so the check comes in two parts: a
plan per message type that only answers "clean or not" and skips what the wire bytes cannot
hold, and, for the rare message that is not clean, a walk that names every violation."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from service.domain.errors import FieldViolation, InvalidInput, invalid

# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
_TIMESTAMP = "google.protobuf.Timestamp"
_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
# Prefilters on the wire bytes: a string holding NUL puts a zero byte on the wire, and a NaN
# or infinite double (little-endian, exponent all ones) ends in 0x7f or 0xff after a byte of
# 0xf0 or more. A false match only costs the checks it would have skipped.
_NON_FINITE = re.compile(rb"[\xf0-\xff][\x7f\xff]")
# Requests whose items get an answer each: a bad item fails alone, so the servicer checks
# each with check_request and answers its error in place (streamed ingest).
ANSWERED_ONE_BY_ONE = {"eventmgmt.v1.IngestEventsRequest": "items"}
_NOT_FINITE = "must be a finite number, not NaN or Infinity"
_HAS_NUL = "must not contain NUL characters"
_KEY_HAS_NUL = "keys must not contain NUL characters"
_STRING = FieldDescriptor.TYPE_STRING
_ENUM = FieldDescriptor.TYPE_ENUM
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_MESSAGES = (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP)


def _map_entry(f: FieldDescriptor) -> Descriptor | None:
    entry = f.message_type
    return entry if entry is not None and entry.GetOptions().map_entry else None


def _enum_rule(f: FieldDescriptor, value: int) -> str | None:
    enum = f.enum_type
    assert enum is not None
    if value in enum.values_by_number:
        return None
    return f"{value} is no value of {enum.name}; use one of {', '.join(enum.values_by_name)}"


def _timestamp_rules(message: Any) -> list[str]:
    rules = []
    if not MIN_TIMESTAMP_SECONDS <= message.seconds <= MAX_TIMESTAMP_SECONDS:
        rules.append("seconds must lie between 0001-01-01 and 9999-12-31")
    if not 0 <= message.nanos <= 999_999_999:
        rules.append("nanos must be 0 to 999999999")
    return rules


# --- naming every violation ----------------------------------------------------------------


def _scalar_rule(f: FieldDescriptor, value: Any) -> str | None:
    if f.type == _STRING:
        # PostgreSQL stores no NUL in text; refused everywhere so both backends agree.
        return _HAS_NUL if "\x00" in value else None
    if f.type == _ENUM:
        return _enum_rule(f, value)
    if f.type in _FLOATS:
        return None if math.isfinite(value) else _NOT_FINITE
    return None


def _walk(message: Any, path: str, out: list[FieldViolation], skip: str = "") -> None:
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        out.extend(FieldViolation(path, rule) for rule in _timestamp_rules(message))
        return
    for f, value in message.ListFields():
        if f.name == skip:
            continue
        where = f"{path}.{f.name}" if path else f.name
        entry = _map_entry(f)
        if entry is not None:
            value_field = entry.fields_by_name["value"]
            items = []
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    out.append(FieldViolation(where, _KEY_HAS_NUL))
                items.append((f"{where}.{key}", item))
            f = value_field
        elif f.is_repeated:
            items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
        else:
            items = [(where, value)]
        for item_path, item in items:
            if f.type in _MESSAGES:
                _walk(item, item_path, out)
            elif (rule := _scalar_rule(f, item)) is not None:
                out.append(FieldViolation(item_path, rule))


# --- the fast yes-or-no --------------------------------------------------------------------

# What a message's ListFields() answered: its set fields and their values.
Listed = Sequence[tuple[FieldDescriptor, Any]]
# A check answers whether one field's value (as ListFields gives it) is clean.
_Check = Callable[[Any], bool]
# Per message type and prefilter: the checks of the fields that can hold something to refuse.
_plans: dict[tuple[str, bool, bool, str], dict[FieldDescriptor, _Check]] = {}


def _clean(
    message: Any, checks: dict[FieldDescriptor, _Check], listed: Listed | None = None
) -> bool:
    """Looks at the fields that are set only (a request sets few of its fields)."""
    for f, value in message.ListFields() if listed is None else listed:
        check = checks.get(f)
        if check is not None and not check(value):
            return False
    return True


def _no_nul(text: str) -> bool:
    return "\x00" not in text


def _clean_timestamp(message: Any) -> bool:
    return not _timestamp_rules(message)


def _clean_value(value: Any) -> bool:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return math.isfinite(value.number_value)
    if kind == "string_value":
        return "\x00" not in value.string_value
    if kind == "struct_value":
        return _clean_struct(value.struct_value)
    if kind == "list_value":
        return all(_clean_value(item) for item in value.list_value.values)
    return True


def _clean_struct(struct: Any) -> bool:
    return all("\x00" not in key and _clean_value(item) for key, item in struct.fields.items())


_SPECIAL_CHECKS: dict[str, _Check] = {
    _TIMESTAMP: _clean_timestamp,
    _STRUCT: _clean_struct,
    _VALUE: _clean_value,
}


def _message_check(descriptor: Descriptor, strings: bool, floats: bool) -> _Check:
    special = _SPECIAL_CHECKS.get(descriptor.full_name)
    if special is not None:
        return special
    checks = _plan(descriptor, strings, floats)  # filled later for a recursive type
    return lambda message: _clean(message, checks)


def _value_check(f: FieldDescriptor, strings: bool, floats: bool) -> _Check | None:
    if f.type == _STRING:
        return _no_nul if strings else None
    if f.type == _ENUM:
        assert f.enum_type is not None
        return frozenset(f.enum_type.values_by_number).__contains__
    if f.type in _FLOATS:
        return math.isfinite if floats else None
    if f.type in _MESSAGES:
        assert f.message_type is not None
        return _message_check(f.message_type, strings, floats)
    return None


def _field_check(f: FieldDescriptor, strings: bool, floats: bool) -> _Check | None:
    entry = _map_entry(f)
    if entry is not None:
        values = _value_check(entry.fields_by_name["value"], strings, floats)
        keys = strings and entry.fields_by_name["key"].type == _STRING
        if keys and values is not None:
            return lambda items: all(map(_no_nul, items)) and all(map(values, items.values()))
        if keys:
            return lambda items: all(map(_no_nul, items))
        if values is not None:
            return lambda items: all(map(values, items.values()))
        return None
    check = _value_check(f, strings, floats)
    if check is not None and f.is_repeated:
        each = check
        return lambda items: all(map(each, items))
    return check


def _plan(
    descriptor: Descriptor, strings: bool, floats: bool, skip: str = ""
) -> dict[FieldDescriptor, _Check]:
    key = (descriptor.full_name, strings, floats, skip)
    checks = _plans.get(key)
    if checks is not None:
        return checks
    # Stored before it is filled, so that a recursive type finds its own checks.
    checks = _plans[key] = {}
    for f in descriptor.fields:
        check = None if f.name == skip else _field_check(f, strings, floats)
        if check is not None:
            checks[f] = check
    return checks


def check_request(message: Message, raw: bytes | None = None, listed: Listed | None = None) -> None:
    """Raises InvalidInput naming every value no rpc may receive, except in the items that
    the servicer answers one by one. With the wire bytes at hand, kinds of values that they
    show cannot be there are not looked at; `listed`: the message's ListFields(), when the
    caller has asked it already (it costs as much as the check)."""
    strings = raw is None or b"\x00" in raw
    floats = raw is None or _NON_FINITE.search(raw) is not None
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    skip = ANSWERED_ONE_BY_ONE.get(descriptor.full_name, "")
    if _clean(message, _plan(descriptor, strings, floats, skip), listed):
        return
    violations: list[FieldViolation] = []
    _walk(message, "", violations, skip)
    raise InvalidInput(violations)


def checked_deserializer(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserializer` made to raise InvalidInput (not DecodeError) for corrupt bytes, and to
    check what it parsed. Called by the interceptor inside the call, where errors are
    answered, rather than by grpc, which answers a corrupt message with UNKNOWN."""

    def parse(raw: bytes) -> Any:
        try:
            message = deserializer(raw)
        except DecodeError as error:
            raise invalid(
                "request", f"must be a valid protobuf message: {error}", reason="MALFORMED_MESSAGE"
            ) from None
        check_request(message, raw)
        return message

    return parse
