"""Domain helpers that have no transport or store of their own."""

from __future__ import annotations

import time
import uuid

from eventmgmt.domain.events import new_event_id


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
