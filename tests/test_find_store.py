"""Find at the store on SQLite and PostgreSQL: custom TIMESTAMP fields, which the event type
feature stores as {"$timestamp": microseconds}, behave as Elasticsearch dates (epoch millis)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from eventmgmt.domain.access import Principal, Role
from eventmgmt.domain.custom_fields import Instant
from eventmgmt.domain.events import Event
from eventmgmt.domain.find import EventFinder
from eventmgmt.persistence.store import Store

MILLIS = 1460661813164


def test_custom_timestamps_compare_sort_and_aggregate_as_epoch_millis(store: Store) -> None:
    tenant = uuid.uuid4().hex
    principal = Principal(tenant, "k", "me", Role.READ)
    events = [
        Event(id=str(uuid.uuid4()), tenant_id=tenant, timestamp=1, custom_fields=fields)
        for fields in (
            {"t": Instant(MILLIS * 1000 + 123), "n": 1},
            {"t": Instant((MILLIS + 5) * 1000)},
            {"n": 2},
        )
    ]

    async def scenario() -> list[Any]:
        await asyncio.gather(*(store.events.insert(e) for e in events))
        finder = EventFinder(store.events)
        documents = [
            {"query": {"range": {"custom.t": {"gte": MILLIS, "lt": MILLIS + 1}}}},
            {"query": {"exists": {"field": "custom.t"}}, "sort": [{"custom.t": "desc"}]},
            {"query": {"match_all": {}}, "aggs": {"last": {"max": {"field": "custom.t"}}}},
        ]
        return [await finder.find(principal, d) for d in documents]

    exact, ordered, aggregated = asyncio.run(scenario())
    assert [h["_id"] for h in exact["hits"]["hits"]] == [events[0].id]
    assert exact["hits"]["hits"][0]["_source"]["custom"] == {"t": MILLIS, "n": 1}
    assert [h["_id"] for h in ordered["hits"]["hits"]] == [events[1].id, events[0].id]
    assert [h["sort"] for h in ordered["hits"]["hits"]] == [[MILLIS + 5], [MILLIS]]
    assert aggregated["aggregations"]["last"] == {"value": float(MILLIS + 5)}
