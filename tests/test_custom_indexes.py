"""An expression index per filterable custom field (persistence/custom_indexes.py): made when a
type declares the field, used by the list filter (the plans say so), kept while any type
declares it and dropped when none does; on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import event, insert, run
from persistence.custom_indexes import existing, index_name
from persistence.event_types import EventTypeRepository
from persistence.events import list_sql
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.custom_fields import FieldDefinition, FieldType
from service.domain.event_types import EventTypeManager, EventTypeSpec
from service.domain.events import EventManager, EventQuery, now_us
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
    _, sql, args = list_sql(ACME, query, store.postgres, store.database.param)

    def explain(db: Any) -> str:
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
        db.execute_sql(f"DROP INDEX {index_name('plant', False)}")

    run(store.read(drop))
    assert indexes(store) == set()

    async def restart_upkeep() -> None:
        store.custom_indexes.schedule()
        await store.custom_indexes.settled()

    asyncio.run(restart_upkeep())
    assert indexes(store) == {index_name("plant", False)}
