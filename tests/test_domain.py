"""Domain helpers that have no transport or store of their own."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from service.domain.access import Principal, Role
from service.domain.custom_fields import (
    FieldDefinition,
    FieldType,
    Instant,
    check_custom_fields,
    coerce_value,
)
from service.domain.errors import InvalidInput
from service.domain.events import MAX_SOURCE_DEPTH, EventManager, new_event_id


def test_event_ids_are_uuid_v7_in_time_order() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000

    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)
    assert before <= millis[0] and millis[-1] <= after
    assert len(set(ids)) == len(ids)


def _nested(levels: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"child": value}
    return value


def test_source_nesting_is_capped_so_grpc_clients_can_read_it() -> None:
    manager = EventManager(repository=None)  # type: ignore[arg-type]  # prepare stores nothing
    principal = Principal("t", "k", "key", Role.READ_WRITE)

    ok = asyncio.run(manager.prepare(principal, {"source": _nested(MAX_SOURCE_DEPTH)}))
    assert ok.source == _nested(MAX_SOURCE_DEPTH)
    with pytest.raises(InvalidInput) as too_deep:
        asyncio.run(manager.prepare(principal, {"source": _nested(MAX_SOURCE_DEPTH + 1)}))
    assert too_deep.value.violations[0].field == "source"
    assert "levels" in too_deep.value.violations[0].rule


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        (FieldType.INTEGER, 2**63 - 1, 2**63 - 1),
        (FieldType.DOUBLE, 3, 3.0),
        (FieldType.TIMESTAMP, 0, Instant(0)),
        (FieldType.TIMESTAMP, "1970-01-01T01:00:00+01:00", Instant(0)),
        (FieldType.BOOLEAN, False, False),
    ],
)
def test_custom_values_are_stored_with_their_types(
    kind: FieldType, value: Any, stored: Any
) -> None:
    coerced = coerce_value(FieldDefinition("f", kind), value)
    assert coerced == stored
    assert type(coerced) is type(stored)


@pytest.mark.parametrize(
    ("kind", "value", "rule"),
    [
        (FieldType.INTEGER, True, "must be an integer"),
        (FieldType.INTEGER, 2**63, "must fit in 64 bits"),
        (FieldType.DOUBLE, False, "must be a number"),
        (FieldType.STRING, "x" * 4097, "at most 4096 characters"),
        (FieldType.TIMESTAMP, 1.5, "must be an ISO-8601 time"),
        (FieldType.TIMESTAMP, "soon", "must be an ISO-8601 time"),
        (FieldType.BOOLEAN, 0, "must be true or false"),
    ],
)
def test_wrong_custom_values_name_the_rule(kind: FieldType, value: Any, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        coerce_value(FieldDefinition("f", kind), value)


def test_custom_field_checks_report_everything_at_once() -> None:
    definitions = {
        "a": FieldDefinition("a", FieldType.STRING, required=True),
        "b": FieldDefinition("b", FieldType.INTEGER),
    }

    _, violations = check_custom_fields("T", definitions, {"b": "1", "x": 1, "y": None})

    found = {v.field: v.rule for v in violations}
    assert found["a"] == "required by event type T"
    assert found["b"] == "must be an integer"
    assert found["x, y"].startswith("unknown fields: x, y")


def test_the_field_table_declares_every_standard_event_attribute_in_order() -> None:
    import dataclasses

    from service.domain.event_fields import FIELDS
    from service.domain.events import Event

    attributes = [f.name for f in dataclasses.fields(Event)]
    assert [f.attribute for f in FIELDS] == attributes[: len(FIELDS)]
    assert attributes[len(FIELDS) :] == ["custom_fields", "seq"]
