"""An index per filterable custom field (persistence/custom_indexes.py), on SQLite on the
field's JSON value, on PostgreSQL on a column of its own that a trigger fills and upkeep
backfills: made when a type declares the field, used by the list filter (the plans say so),
kept while any type declares it and dropped when none does; answers never change; on both
backends."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from unittest.mock import ANY

import pytest

from helpers import event, insert, rows, run
from persistence import custom_indexes
from persistence.custom_indexes import existing, index_name
from persistence.event_types import EventTypeRepository
from persistence.events import list_sql
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.conditions import event_matcher
from service.domain.custom_fields import FieldDefinition, FieldType, Instant
from service.domain.event_types import EventTypeManager, EventTypeSpec
from service.domain.events import Event, EventManager, EventQuery, now_us
from service.domain.filters import FieldType as FilterType
from service.domain.filters import compile_filter
from service.domain.listing import ListRequest

ACME = Principal(tenant_id="acme", key_id="k1", name="a", role=Role.ADMIN)
PLANT = FieldDefinition("plant", FieldType.STRING, filterable=True)
DUE = FieldDefinition("due", FieldType.TIMESTAMP, filterable=True)
NOTE = FieldDefinition("note", FieldType.STRING)  # not filterable: no index


def indexes(store: Store) -> set[str]:
    async def settle() -> set[str]:
        await store.custom_indexes.settled()
        return await store.read(lambda db: existing(db.cursor(), store.postgres))

    return run(settle())


def plan(store: Store, filter_text: str) -> str:
    types = {"plant": "string", "due": "timestamp"}
    condition = compile_filter(filter_text, types.get)
    query = EventQuery(condition=condition, history=False, limit=21)

    def explain(db: Any) -> str:
        columns = store.custom_indexes.refresh_columns(db)
        _, sql, args = list_sql(ACME, query, store.postgres, db.param, columns)
        if store.postgres:
            db.execute_sql("SET enable_seqscan = off")  # a tiny table: show the index serves
            rows = db.execute_sql("EXPLAIN " + sql, args).fetchall()
            db.execute_sql("RESET enable_seqscan")
            return "\n".join(r[0] for r in rows)
        rows = db.execute_sql("EXPLAIN QUERY PLAN " + sql, args).fetchall()
        return "\n".join(str(r[-1]) for r in rows)

    return run(store.read(explain))


def test_a_filterable_field_gets_an_index_that_its_filter_uses(store: Store) -> None:
    types = EventTypeManager(EventTypeRepository(store))
    first = run(types.create(ACME, EventTypeSpec(name="a", fields=(PLANT, DUE, NOTE))))
    second = run(types.create(ACME, EventTypeSpec(name="b", fields=(PLANT,))))
    plant, due = index_name("plant", False), index_name("due", True)
    assert indexes(store) == {plant, due}
    insert(
        store,
        *(
            event(
                "acme", type_id=first.id, timestamp=now_us(), custom_fields={"plant": f"P{n % 3}"}
            )
            for n in range(30)
        ),
    )
    assert plant in plan(store, '{"plant": "P1"}')
    assert due in plan(store, '{"due": "2026-01-01T00:00:00Z"}')
    # The index changes no answer.
    page = run(
        EventManager(store.events).list_events(
            ACME, ListRequest(filter='{"plant": "P1"}', size=100), {"plant": "string"}.get
        )
    )
    assert page.total == 10

    # Kept while a type declares the field, dropped when none does.
    run(types.delete(ACME, second.id, None))
    assert indexes(store) == {plant, due}
    run(store.read(lambda db: db.execute_sql("DELETE FROM events")))
    run(types.delete(ACME, first.id, None))
    assert indexes(store) == set()


def test_upkeep_creates_what_a_crash_left_missing(store: Store) -> None:
    """At start the server reconciles: a declared field whose index is missing gets it."""
    types = EventTypeManager(EventTypeRepository(store))
    run(types.create(ACME, EventTypeSpec(name="a", fields=(PLANT,))))
    assert indexes(store) == {index_name("plant", False)}

    def drop(db: Any) -> None:
        # On PostgreSQL: the column's index, whose build a crash interrupted.
        if store.postgres:
            (column,) = store.custom_indexes.refresh_columns(db).values()
            db.execute_sql(f"DROP INDEX events_{column}")
        else:
            db.execute_sql(f"DROP INDEX {index_name('plant', False)}")

    run(store.read(drop))
    assert indexes(store) == set()

    async def restart_upkeep() -> None:
        store.custom_indexes.schedule()
        await store.custom_indexes.settled()

    asyncio.run(restart_upkeep())
    assert indexes(store) == {index_name("plant", False)}


FILTERS = [
    '{"plant": "P1"}',
    '{"plant": {"in": ["P0", "P2"]}}',
    '{"plant": {"like": "P*"}}',
    '{"temperature": {"after": 20}}',
    '{"temperature": {"between": "[10,30)"}}',
    '{"temperature": {"before": 20}}',
    '{"due": {"after": "2026-01-01T00:00:00Z"}}',
    '{"not": {"plant": "P1"}}',
]
TYPES: dict[str, FilterType] = {"plant": "string", "temperature": "double", "due": "timestamp"}


def answers(store: Store) -> dict[str, set[str]]:
    manager = EventManager(store.events)

    async def listed(text: str) -> set[str]:
        page = await manager.list_events(ACME, ListRequest(filter=text, size=100), TYPES.get)
        assert page.total == len(page.events)
        # Not the audit events of the type's changes (service/domain/event_types.py).
        return {e.description for e in page.events if not e.description.startswith("event type")}

    return {text: run(listed(text)) for text in FILTERS}


def oracle(events: list[Event]) -> dict[str, set[str]]:
    """What the Python matcher of each filter selects (service/domain/conditions.py)."""
    found = {}
    for text in FILTERS:
        matches = event_matcher(compile_filter(text, TYPES.get))  # type: ignore[arg-type]
        found[text] = {e.description for e in events if matches(e)}
    return found


def columns(store: Store) -> list[str]:
    """The custom field columns of events, ready or not, and their triggers (PostgreSQL)."""
    return [
        name
        for (name,) in rows(
            store,
            "SELECT attname FROM pg_attribute WHERE attrelid = 'events'::regclass "
            "AND attname LIKE 'cf%%' AND NOT attisdropped UNION ALL SELECT tgname "
            "FROM pg_trigger WHERE tgrelid = 'events'::regclass AND tgname LIKE 'fill%%'",
        )
    ]


def test_a_field_declared_after_its_events_is_backfilled_and_filters_alike(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events stored before any type declares their fields (and some holding values of
    another type) answer the same filters before and after the fields have columns,
    as the Python matcher does; so do events stored or changed later; on PostgreSQL the
    columns, triggers and indexes go when no type declares the fields any more."""
    monkeypatch.setattr(custom_indexes, "BACKFILL_PAGES", 1)  # many passes over few pages
    now = now_us()
    values: list[dict[str, Any]] = [
        {"plant": "P1"},
        {"plant": "P2", "temperature": 25.5},
        {"plant": 1, "temperature": "25"},  # another type's values: no match as declared
        {"temperature": 15, "due": Instant(now + 10**9)},
        {"due": Instant(1_700_000_000_000_000)},
        {"plant": "Px", "due": "soon"},
        {},
    ]
    stored = [
        event("acme", timestamp=now - n, description=f"e{n}", custom_fields=values[n % 7])
        for n in range(60)
    ]
    insert(store, *stored)
    before = answers(store)
    assert before == oracle(stored)
    assert before['{"plant": "P1"}'] == {f"e{n}" for n in range(0, 60, 7)}

    types = EventTypeManager(EventTypeRepository(store))
    declared = run(
        types.create(
            ACME,
            EventTypeSpec(
                name="a",
                fields=(
                    PLANT,
                    DUE,
                    FieldDefinition("temperature", FieldType.DOUBLE, filterable=True),
                ),
            ),
        )
    )
    keys = {index_name("plant", False), index_name("due", True), index_name("temperature", False)}
    assert indexes(store) == keys
    if store.postgres:
        assert len(columns(store)) == 6  # a column and its trigger per field
        assert index_name("plant", False) in plan(store, '{"plant": "P1"}')
    assert answers(store) == before

    # Stored and changed after the columns exist: the trigger fills them.
    later = [
        event("acme", timestamp=now - 100 - n, description=f"late{n}", custom_fields=values[n])
        for n in range(7)
    ]
    insert(store, *later)
    changed = dataclasses.replace(stored[0], custom_fields={"plant": "P2"}, etag=2)
    assert run(store.events.replace(changed, stored[0].etag))
    everything = [changed, *stored[1:], *later]
    after = answers(store)
    assert after == oracle(everything)
    assert "late0" in after['{"plant": "P1"}'] and "e0" not in after['{"plant": "P1"}']

    run(types.delete(ACME, declared.id, None))
    assert indexes(store) == set()
    if store.postgres:
        assert columns(store) == []
    assert answers(store) == after


def test_a_column_another_process_dropped_is_read_from_the_json(database_url: str) -> None:
    """Two server processes: one still holds the column of a field that the other's upkeep
    dropped (no type declares it any more); its next filter on the field reads the JSON and
    answers as before, instead of failing."""
    first, second = Store(database_url), Store(database_url)
    first.migrate()
    try:
        insert(first, *(event("acme", custom_fields={"plant": f"P{n % 2}"}) for n in range(6)))
        types = EventTypeManager(EventTypeRepository(second))
        declared = run(types.create(ACME, EventTypeSpec(name="a", fields=(PLANT,))))
        run(second.custom_indexes.settled())
        request = ListRequest(filter='{"plant": "P1"}', start_time=0)
        listed = EventManager(first.events).list_events
        assert run(first.read(first.custom_indexes.refresh_columns)) == (
            {index_name("plant", False): ANY} if first.postgres else {}
        )
        assert run(listed(ACME, request, TYPES.get)).total == 3
        run(types.delete(ACME, declared.id, None))
        run(second.custom_indexes.settled())
        assert indexes(second) == set()
        assert run(listed(ACME, request, TYPES.get)).total == 3
    finally:
        first.close()
        second.close()
