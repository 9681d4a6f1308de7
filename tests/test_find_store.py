"""Find at the store on SQLite and PostgreSQL: custom TIMESTAMP fields behave as dates, and
every field with every clause either answers or is refused by name."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.custom_fields import Instant
from service.domain.errors import InvalidInput
from service.domain.events import Event
from service.domain.find import EventFinder
from service.domain.find_fields import FIELD_NAMES

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


FIELDS = [
    *(n for n in FIELD_NAMES if "<" not in n),
    "source.thingName",
    "custom.n",
    "custom.t",
]
VALUES: list[Any] = ["x", 3, 2.5, True, "2016-04-14T19:23:33.164Z", MILLIS]


def _every_combination() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for name in FIELDS:
        for value in VALUES:
            for clause in ("term", "match", "match_phrase", "prefix", "wildcard"):
                documents.append({"query": {clause: {name: value}}})
            documents.append({"query": {"terms": {name: [value, value]}}})
            documents += [{"query": {"range": {name: {op: value}}}} for op in ("gt", "lte")]
        documents.append({"query": {"exists": {"field": name}}})
        documents.append({"query": {"match_all": {}}, "sort": [{name: "desc"}]})
        aggregations: dict[str, Any] = {
            kind: {kind: {"field": name}}
            for kind in ("min", "max", "avg", "sum", "value_count", "cardinality")
        }
        aggregations["terms"] = {
            "terms": {"field": name, "order": {"_key": "desc"}},
            "aggs": {"h": {"histogram": {"field": "severity", "interval": 1}}},
        }
        aggregations["histogram"] = {
            "histogram": {"field": name, "interval": 0.5},
            "aggs": {"t": {"terms": {"field": "custom.n"}}},
        }
        aggregations["date_histogram"] = {
            "date_histogram": {"field": name, "calendar_interval": "quarter"},
        }
        aggregations["range"] = {"range": {"field": name, "ranges": [{"from": 1, "to": 2}]}}
        for kind, body in aggregations.items():
            documents.append({"query": {"match_all": {}}, "aggs": {kind: body}})
    return documents


def test_every_field_with_every_clause_answers_or_names_the_rule(store: Store) -> None:
    """No combination of field and clause reaches the database as SQL it rejects (a 500)."""
    tenant = uuid.uuid4().hex
    principal = Principal(tenant, "k", "me", Role.READ)
    events = [
        Event(
            id=str(uuid.uuid4()),
            tenant_id=tenant,
            description=f"A b {i}",
            category="c" if i else "",
            source={"thingName": "x"} if i % 2 else "text",
            custom_fields={"n": i, "t": Instant(i * 10**9)} if i else {},
            timestamp=i * 10**9,
            acknowledged_at=None if i % 2 else 5000,
        )
        for i in range(4)
    ]

    async def scenario() -> tuple[int, int]:
        await asyncio.gather(*(store.events.insert(e) for e in events))
        finder = EventFinder(store.events)
        answered = refused = 0
        for document in _every_combination():
            try:
                await finder.find(principal, document)
                answered += 1
            except InvalidInput:
                refused += 1
        return answered, refused

    answered, refused = asyncio.run(scenario())
    assert answered > 400 and refused > 400
