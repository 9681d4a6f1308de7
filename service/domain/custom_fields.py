"""Custom field values: the field definitions of event types and the checks a custom event's
values pass. Kept apart from event_types so that the event rules can use it without a cycle."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.domain import times
from service.domain.errors import FieldViolation

# The built-in root type: the v3 API's id (docs/rest-v3.md#standard-type), which the
# platform's events and clients carry.
# `StandardEvent`, this service's id for it before it served those clients, is accepted for
# it wherever a type id is input.
STANDARD_EVENT = "com.siemens.mindsphere.eventmgmt.event.type.MindSphereStandardEvent"
STANDARD_EVENT_ALIAS = "StandardEvent"
MAX_STRING_VALUE = 4096
_INT64 = 2**63


@dataclass(frozen=True, slots=True)
class Instant:
    """A TIMESTAMP field's value, microseconds since the epoch: kept apart from integers so
    that it is printed as a time (ISO-8601 over REST, a Timestamp over gRPC)."""

    micros: int


class FieldType(StrEnum):
    STRING = "STRING"
    INTEGER = "INTEGER"
    DOUBLE = "DOUBLE"
    BOOLEAN = "BOOLEAN"
    TIMESTAMP = "TIMESTAMP"
    ENUM = "ENUM"


@dataclass(frozen=True, slots=True)
class FieldDefinition:
    name: str
    type: FieldType
    values: tuple[str, ...] = ()
    required: bool = False
    filterable: bool = False
    updatable: bool = False


def canonical_type_id(type_id: str) -> str:
    """The stored id of a type id as input: the standard type's alias is the standard type."""
    return STANDARD_EVENT if type_id == STANDARD_EVENT_ALIAS else type_id


def coerce_value(definition: FieldDefinition, value: Any) -> Any:
    """The value to store for `definition`, from a JSON value (or an Instant over gRPC);
    raises ValueError whose text is the broken rule."""
    kind = definition.type
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == FieldType.STRING:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if len(value) > MAX_STRING_VALUE:
            raise ValueError(f"at most {MAX_STRING_VALUE} characters")
        return value
    if kind == FieldType.INTEGER:
        if not is_int:
            raise ValueError("must be an integer")
        if not -_INT64 <= value < _INT64:
            raise ValueError("must fit in 64 bits")
        return value
    if kind == FieldType.DOUBLE:
        if not (is_int or isinstance(value, float)) or not math.isfinite(value):
            raise ValueError("must be a number")
        return float(value)
    if kind == FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if kind == FieldType.TIMESTAMP:
        if isinstance(value, Instant):
            return value
        if is_int:
            return Instant(value * 1000)
        if isinstance(value, str):
            try:
                return Instant(times.parse_iso(value))
            except ValueError as error:
                rule = str(error) if "zone" in str(error) else "must be an ISO-8601 time"
                raise ValueError(f"{rule}, such as 2018-07-29T06:09:29.743Z") from None
        raise ValueError(
            "must be an ISO-8601 time such as 2018-07-29T06:09:29.743Z or epoch millis"
        )
    if not isinstance(value, str) or value not in definition.values:
        raise ValueError(f"must be one of {', '.join(definition.values)}")
    return value


def _unknown(names: list[str], type_id: str) -> FieldViolation:
    plural = "s" if len(names) > 1 else ""
    owner = (
        "the standard event has"
        if type_id == STANDARD_EVENT
        else f"event type {type_id} and its ancestors define"
    )
    return FieldViolation(
        ", ".join(names), f"unknown field{plural}: {', '.join(names)}; {owner} no such field"
    )


def check_custom_fields(
    type_id: str, definitions: Mapping[str, FieldDefinition], values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[FieldViolation]]:
    """Checks a new event's custom fields against its type and ancestors: every required
    field present, every value of its field's type, no unknown names (all listed at once)."""
    coerced: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    unknown = []
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            unknown.append(name)
        elif value is not None:
            try:
                coerced[name] = coerce_value(definition, value)
            except ValueError as error:
                violations.append(FieldViolation(name, str(error)))
    for name, definition in definitions.items():
        if definition.required and values.get(name) is None:
            violations.append(FieldViolation(name, f"required by event type {type_id}"))
    if unknown:
        violations.append(_unknown(unknown, type_id))
    return coerced, violations


def check_custom_changes(
    type_id: str,
    definitions: Mapping[str, FieldDefinition],
    stored: Mapping[str, Any],
    values: Mapping[str, Any],
) -> tuple[dict[str, Any], list[str], list[FieldViolation]]:
    """For an update: the updatable values that change, the names sent with another value
    that are not updatable (kept and reported), and the violations."""
    changes: dict[str, Any] = {}
    kept: list[str] = []
    violations: list[FieldViolation] = []
    unknown = []
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            unknown.append(name)
            continue
        if value is None:
            continue
        try:
            new = coerce_value(definition, value)
        except ValueError as error:
            violations.append(FieldViolation(name, str(error)))
            continue
        if definition.updatable:
            changes[name] = new
        elif new != stored.get(name):
            kept.append(name)
    if unknown:
        violations.append(_unknown(unknown, type_id))
    return changes, kept, violations
