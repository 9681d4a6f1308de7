"""Event types in the store on both backends: round trips, visibility, the checks of a delete
in one transaction, the filterable-field lookup, and the retention sweeper."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

import pytest

from helpers import run
from persistence.event_types import EventTypeRepository, RetentionRepository
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.custom_fields import STANDARD_EVENT, FieldDefinition, FieldType, Instant
from service.domain.errors import FailedPrecondition, InvalidInput
from service.domain.event_types import EventTypeManager, EventTypeSpec, Scope
from service.domain.events import Event, EventManager, EventQuery, now_us
from service.domain.retention import DAY_US, RetentionSweeper

T = TypeVar("T")
ACME = Principal(tenant_id="acme", key_id="k1", name="a", role=Role.ADMIN)
GLOBEX = Principal(tenant_id="globex", key_id="k2", name="g", role=Role.ADMIN)


def spec(**fields: Any) -> EventTypeSpec:
    fields.setdefault("name", "test")
    return EventTypeSpec(**fields)


def stored_event(type_id: str, age_days: float, tenant: str = "acme") -> Event:
    created = now_us() - int(age_days * DAY_US)
    return Event(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        type_id=type_id,
        timestamp=created,
        create_time=created,
        update_time=created,
    )


def all_events(store: Store, principal: Principal = ACME) -> list[Event]:
    events, _ = run(store.events.query(principal, EventQuery(limit=1000)))
    return events


def event_ids(store: Store, principal: Principal = ACME) -> set[str]:
    """The ids of the tenant's own events, without the platform's audit events."""
    return {e.id for e in all_events(store, principal) if not e.internal}


def test_types_round_trip_and_respect_scope(store: Store) -> None:
    types = EventTypeManager(EventTypeRepository(store))
    fields = (
        FieldDefinition("level", FieldType.ENUM, ("LOW", "HIGH"), required=True, filterable=True),
        FieldDefinition("seen", FieldType.TIMESTAMP, updatable=True),
    )
    local = run(types.create(ACME, spec(id="acme.pump", fields=fields, ttl_days=3)))
    shared = run(types.create(ACME, spec(scope=Scope.GLOBAL, parent_id="")))

    assert run(types.get(ACME, "acme.pump")) == local
    assert run(EventTypeRepository(store).get(GLOBEX, "acme.pump")) is None
    assert run(types.get(GLOBEX, shared.id)) == shared
    assert {t.id for t in run(types.list_types(GLOBEX, 0, 100))[0]} == {shared.id}
    with pytest.raises(InvalidInput):
        run(types.create(GLOBEX, spec(parent_id="acme.pump")))


def test_type_changes_are_recorded_as_internal_events(store: Store) -> None:
    types = EventTypeManager(EventTypeRepository(store))
    kind = run(types.create(ACME, spec()))
    run(types.update(ACME, kind.id, spec(name="renamed"), 1))
    run(types.delete(ACME, kind.id, 2))

    audit = sorted(
        (e.code, e.entity_type, e.entity_id, e.classification)
        for e in all_events(store)
        if e.internal
    )
    assert audit == [
        ("1201", "EventType", kind.id, "INTERNAL"),
        ("1202", "EventType", kind.id, "INTERNAL"),
        ("1203", "EventType", kind.id, "INTERNAL"),
    ]
    assert not [e for e in all_events(store, GLOBEX) if e.internal]


def test_custom_values_round_trip_with_their_types(store: Store) -> None:
    types = EventTypeManager(EventTypeRepository(store))
    events = EventManager(store.events, types)
    kind = run(
        types.create(
            ACME,
            spec(
                fields=(
                    FieldDefinition("seen", FieldType.TIMESTAMP),
                    FieldDefinition("cycles", FieldType.INTEGER),
                    FieldDefinition("ratio", FieldType.DOUBLE),
                )
            ),
        )
    )
    created = run(
        events.create(
            ACME,
            {
                "type_id": kind.id,
                "custom_fields": {"seen": "2018-07-29T08:09:29.743+02:00", "cycles": 3, "ratio": 1},
            },
        )
    )

    loaded = run(events.get(ACME, created.id))
    assert loaded.custom_fields == {
        "seen": Instant(1_532_844_569_743_000),
        "cycles": 3,
        "ratio": 1.0,
    }
    assert type(loaded.custom_fields["ratio"]) is float


def test_delete_checks_children_and_events_of_every_tenant(store: Store) -> None:
    types = EventTypeManager(EventTypeRepository(store))
    parent = run(types.create(ACME, spec(scope=Scope.GLOBAL)))
    child = run(types.create(GLOBEX, spec(parent_id=parent.id)))
    run(store.events.insert(stored_event(child.id, 0, tenant="globex")))

    with pytest.raises(FailedPrecondition, match="child event types"):
        run(types.delete(ACME, parent.id, None))
    with pytest.raises(FailedPrecondition, match="events"):
        run(types.delete(GLOBEX, child.id, None))
    # Other tenants' children keep a GLOBAL type GLOBAL.
    with pytest.raises(FailedPrecondition):
        run(types.update(ACME, parent.id, spec(scope=Scope.LOCAL), None))


def test_field_type_sees_filterable_fields_of_visible_types(store: Store) -> None:
    types = EventTypeManager(EventTypeRepository(store))
    run(
        types.create(
            ACME,
            spec(
                fields=(
                    FieldDefinition("pressure", FieldType.DOUBLE, filterable=True),
                    FieldDefinition("secret", FieldType.STRING),
                )
            ),
        )
    )

    assert run(types.field_type(ACME, "pressure")) == FieldType.DOUBLE
    assert run(types.field_type(ACME, "secret")) is None
    assert run(types.field_type(GLOBEX, "pressure")) is None


def test_the_sweeper_deletes_events_older_than_their_types_retention(store: Store) -> None:
    types = EventTypeManager(EventTypeRepository(store))
    short = run(types.create(ACME, spec(ttl_days=1)))
    expired = [stored_event(short.id, 2) for _ in range(5)]
    expired.append(stored_event(STANDARD_EVENT, 36))
    kept = [stored_event(short.id, 0.5), stored_event(STANDARD_EVENT, 34)]

    async def sweep() -> int:
        for e in expired + kept:
            await store.events.insert(e)
        # Batches of two: several writer transactions, each short.
        return await RetentionSweeper(RetentionRepository(store), batch=2).sweep()

    assert run(sweep()) == len(expired)
    assert event_ids(store) == {e.id for e in kept}


def test_the_sweeper_runs_in_the_background_until_cancelled(store: Store) -> None:
    old = stored_event(STANDARD_EVENT, 40)
    young = stored_event(STANDARD_EVENT, 1)

    async def sweep_in_background() -> None:
        await store.events.insert(old)
        await store.events.insert(young)
        task = asyncio.create_task(
            RetentionSweeper(RetentionRepository(store), interval=0.01).run()
        )
        try:
            while await store.events.get(ACME, old.id) is not None:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()

    run(sweep_in_background())
    assert event_ids(store) == {young.id}
