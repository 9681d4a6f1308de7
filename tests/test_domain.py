"""Domain helpers that have no transport or store of their own."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from eventmgmt.domain.access import Principal, Role
from eventmgmt.domain.errors import InvalidInput
from eventmgmt.domain.events import MAX_SOURCE_DEPTH, EventManager, new_event_id


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
