"""The fields find's queries name: their kinds, the Event attribute behind each, and how an
event's value of one is read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from service.domain import conditions
from service.domain.custom_fields import Instant
from service.domain.errors import InvalidInput, invalid
from service.domain.event_fields import FIELDS as EVENT_FIELDS
from service.domain.event_fields import Kind as EventKind
from service.domain.events import Event

INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
PROPERTY_REQUIRED = "PROPERTY_REQUIRED"
FIELD_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def find_error(where: str, rule: str) -> InvalidInput:
    return invalid(where, rule, reason=INVALID_ARGUMENTS)


class Kind(Enum):
    """How a field compares: exact strings, words, numbers, times, booleans or JSON values."""

    KEYWORD = "keyword"
    TEXT = "text"
    INTEGER = "integer"
    TIME = "time"
    BOOLEAN = "boolean"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A queryable field: its DSL name, kind, the Event attribute holding it and, for JSON
    attributes (`source`, `custom_fields`), the key inside (None for the whole value)."""

    name: str
    kind: Kind
    attribute: str
    key: str | None = None
    lowercase: bool = False


_KINDS = {
    EventKind.TEXT: Kind.KEYWORD,
    EventKind.INTEGER: Kind.INTEGER,
    EventKind.TIME: Kind.TIME,
    EventKind.BOOLEAN: Kind.BOOLEAN,
    EventKind.SOURCE: Kind.JSON,
}
_FIELDS: dict[str, FieldRef] = {
    name: FieldRef(name, Kind.TEXT if f.words else _KINDS[f.kind], f.attribute)
    for f in EVENT_FIELDS
    for name in f.find
}
# The exact text in lowercase, for sorting and terms that ignore case.
_FIELDS["message.lowercase"] = FieldRef(
    "message.lowercase", Kind.KEYWORD, "description", None, True
)
FIELD_NAMES = (*_FIELDS, "source.<key>", "custom.<name>")


def resolve_field(name: Any, where: str) -> FieldRef:
    """The field a DSL name means; unknown names are an error, never an empty answer."""
    if not isinstance(name, str):
        raise find_error(where, "a field name must be a string")
    known = _FIELDS.get(name)
    if known is not None:
        return known
    for prefix, attribute in (("source.", "source"), ("custom.", "custom_fields")):
        if name.startswith(prefix):
            key = name[len(prefix) :]
            if not FIELD_KEY.match(key):
                raise find_error(where, f"{prefix}<key> needs a key of letters, digits, _ or -")
            return FieldRef(name, Kind.JSON, attribute, key)
    raise find_error(where, f"unknown field {name!r}; fields: {', '.join(FIELD_NAMES)}")


_CONDITION_TYPES: dict[Kind, conditions.FieldType] = {
    Kind.KEYWORD: "string",
    Kind.TEXT: "string",
    Kind.INTEGER: "integer",
    Kind.TIME: "timestamp",
    Kind.BOOLEAN: "boolean",
    Kind.JSON: "json",
}


def as_condition(ref: FieldRef) -> conditions.FieldRef:
    """The field as the condition tree names it: custom.<name> is the custom field <name>
    as any JSON value, source.<key> a member of the source."""
    if ref.attribute == "custom_fields":
        return conditions.FieldRef(ref.key or "", "json", custom=True)
    return conditions.FieldRef(
        ref.attribute, _CONDITION_TYPES[ref.kind], key=ref.key, lowercase=ref.lowercase
    )


def event_value(event: Event, ref: FieldRef) -> Any:
    """The field's value in an event, None when absent (the store keeps absent text as "")."""
    value = getattr(event, ref.attribute)
    if ref.kind is Kind.JSON:
        if ref.key is None:
            return value
        found = value.get(ref.key) if isinstance(value, dict) else None
        return found.micros // 1000 if isinstance(found, Instant) else found
    if isinstance(value, str):
        if value == "":
            return None
        return value.lower() if ref.lowercase else value
    return value
