"""PostgreSQL's events partitioned by month (persistence/partitions.py): time windows read only
their months (EXPLAIN), retention drops a wholly expired month instead of deleting its rows,
and migration 30 converts a database that already holds events."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import peewee
import pytest

from persistence import migrations
from persistence.event_types import RetentionRepository
from persistence.events import list_sql, point_sql
from persistence.partitions import (
    ensure_partitions,
    month_bounds,
    month_of,
    partition_name,
    shift,
)
from persistence.rows import EVENT_COLUMNS, event_row
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.events import Event, EventManager, EventQuery, now_us
from service.domain.filters import Compare, FieldRef, all_of
from service.domain.retention import DAY_US, RetentionSweeper

TENANT = "acme"
ACME = Principal(TENANT, "k", "key", Role.ADMIN)


@pytest.fixture
def pg(postgres_databases: Any) -> Any:
    opened = Store(str(postgres_databases()))
    opened.migrate()
    yield opened
    opened.close()


def event(age_days: float, stored_days: float | None = None, **fields: Any) -> Event:
    ts = now_us() - int(age_days * DAY_US)
    created = now_us() - int((age_days if stored_days is None else stored_days) * DAY_US)
    return Event(
        id=str(uuid.uuid4()),
        tenant_id=TENANT,
        entity_id="e1",
        timestamp=ts,
        create_time=created,
        update_time=created,
        **fields,
    )


def rows(store: Store, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
    def read(db: peewee.Database) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in db.execute_sql(sql, args).fetchall()]

    return asyncio.run(store.read(read))


def month_partitions(store: Store) -> set[str]:
    return {
        r[0]
        for r in rows(
            store,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass",
        )
    }


def make_months(store: Store, ages: list[float]) -> None:
    """Partitions for the months of events this many days old (upkeep makes only recent ones)."""
    months = [month_of(now_us() - int(age * DAY_US)) for age in ages]

    def create(db: peewee.Database) -> None:
        with db.atomic():
            ensure_partitions(db.cursor(), now_us(), months)

    asyncio.run(store.read(create))


def plan(store: Store, sql: str, args: Any) -> str:
    return "\n".join(r[0] for r in rows(store, "EXPLAIN " + sql, args))


def test_a_time_window_reads_only_the_partitions_it_overlaps(pg: Store) -> None:
    """The list's page query and its count for the last 7 days plan no older month."""
    ages = [0, 1, 40, 70, 100]
    make_months(pg, ages)
    for age in ages:
        asyncio.run(pg.events.insert(event(age)))
    asyncio.run(pg.read(lambda db: db.execute_sql("ANALYZE events")))
    now = now_us()
    window = Compare(FieldRef("timestamp", "timestamp"), "ge", now - 7 * DAY_US)
    query = EventQuery(condition=window, history=False, limit=21)
    (count_where, count_args), sql, args = list_sql(ACME, query, True, "%s")
    page_plan = plan(pg, sql, args)
    count_plan = plan(pg, f"SELECT COUNT(*) FROM events WHERE {count_where}", count_args)
    print(page_plan, count_plan, sep="\n")  # shown with -s; make bench prints them too
    read = {partition_name(*month_of(now - d * DAY_US)) for d in (0, 7)}
    older = {partition_name(*month_of(now - d * DAY_US)) for d in (70, 100)} - read
    assert older and older <= month_partitions(pg)
    for shown in (page_plan, count_plan):
        assert all(name in shown for name in read)
        assert not any(name in shown for name in older)
    # A window that ends inside the months with partitions leaves the default one out too.
    bounded = Compare(FieldRef("timestamp", "timestamp"), "lt", now)
    both = EventQuery(condition=all_of([window, bounded]), history=False, limit=21)
    _, sql, args = list_sql(ACME, both, True, "%s")
    shown = plan(pg, sql, args)
    assert "events_default" not in shown
    assert all(name in shown for name in read)


def test_retention_drops_a_wholly_expired_month_and_keeps_what_refers_to_it_right(
    pg: Store,
) -> None:
    old_month = shift(month_of(now_us()), -4)
    low, high = month_bounds(*old_month)
    age = (now_us() - (low + high) // 2) / DAY_US  # the middle of that month
    make_months(pg, [age, age + 31])
    expired = [
        event(age, correlation_id="c1"),  # the newest of c1 yet expired
        event(age + 0.1),
        event(age + 0.2),
    ]
    older_of_c1 = event(age + 31, stored_days=1, correlation_id="c1")  # back-filled yesterday
    recent = event(1)
    assert {month_of(e.timestamp) for e in expired} == {old_month}

    async def fill() -> None:
        for e in expired:
            await pg.events.insert_batch(ACME, [(e, f"key-{e.id}")])
        await pg.events.insert(older_of_c1)
        await pg.events.insert(recent)

    asyncio.run(fill())
    # An open alarm of that month, acknowledged: a de-duplication window and a transition.
    alarm = event(age + 0.3, classification="ALARM", code="hot")
    asyncio.run(pg.events.insert(alarm, dedup_key="hot-pump-key"))
    asyncio.run(EventManager(pg.events).acknowledge(ACME, alarm.id))
    alarm_rows = (
        "SELECT (SELECT COUNT(*) FROM open_alarms), (SELECT COUNT(*) FROM event_transitions)"
    )
    assert rows(pg, alarm_rows) == [(1, 1)]
    old = partition_name(*old_month)
    older = partition_name(*month_of(older_of_c1.timestamp))
    assert {old, older} <= month_partitions(pg)
    assert rows(pg, "SELECT latest FROM events WHERE id = %s", (older_of_c1.id,)) == [(False,)]

    deleted = asyncio.run(RetentionSweeper(RetentionRepository(pg)).sweep())

    assert deleted == 4
    assert old not in month_partitions(pg)
    assert older in month_partitions(pg)  # it holds an event stored yesterday
    remaining = {r[0] for r in rows(pg, "SELECT id FROM events")}
    assert remaining == {older_of_c1.id, recent.id}
    # c1's newest event went with the partition: its predecessor is listed in its place.
    assert rows(pg, "SELECT latest FROM events WHERE id = %s", (older_of_c1.id,)) == [(True,)]
    assert rows(pg, "SELECT COUNT(*) FROM event_idempotency_keys") == [(0,)]
    assert rows(pg, "SELECT SUM(event_count) FROM event_rollups") == [(2,)]
    assert rows(pg, alarm_rows) == [(0, 0)]  # the alarm's open window and transition went too
    # The month can hold events again (they land in the default partition).
    asyncio.run(pg.events.insert(event(age)))
    assert rows(pg, "SELECT COUNT(*) FROM events_default") == [(1,)]


def test_a_month_that_still_holds_an_unexpired_event_is_not_dropped(pg: Store) -> None:
    make_months(pg, [125])
    keep = event(125, stored_days=2)
    gone = event(126)
    for e in (keep, gone):
        asyncio.run(pg.events.insert(e))
    assert asyncio.run(RetentionSweeper(RetentionRepository(pg)).sweep()) == 1
    assert partition_name(*month_of(keep.timestamp)) in month_partitions(pg)
    assert {r[0] for r in rows(pg, "SELECT id FROM events")} == {keep.id}


def test_migration_30_converts_a_database_that_holds_events(
    postgres_databases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(postgres_databases())
    before = [m for m in migrations.MIGRATIONS if m[0] < 30]
    monkeypatch.setattr(migrations, "MIGRATIONS", before)
    store = Store(url)
    try:
        store.migrate()
        stored = [event(age) for age in (0, 3, 45, 400, 3000)]
        # The columns the events table has before migration 30 (later ones add more).
        present = {
            r[0]
            for r in rows(
                store,
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                ("events",),
            )
        }
        kept = [i for i, c in enumerate(EVENT_COLUMNS) if c in present]
        columns = ", ".join((*(EVENT_COLUMNS[i] for i in kept), "seq", "idempotency_key"))

        def fill(db: peewee.Database) -> None:
            with db.atomic():
                for n, e in enumerate(stored):
                    row = event_row(e)
                    db.execute_sql(
                        f"INSERT INTO events ({columns}) VALUES "
                        f"({', '.join(['%s'] * (len(kept) + 2))})",
                        (*(row[i] for i in kept), n + 1, f"key-{n}" if n % 2 else None),
                    )
                db.execute_sql("UPDATE feed_state SET last_seq = %s", (len(stored),))

        asyncio.run(store.read(fill))
        monkeypatch.undo()
        assert store.migrate() == [v for v, _, _ in migrations.MIGRATIONS if v >= 30]

        assert {r[0] for r in rows(store, "SELECT id FROM events")} == {e.id for e in stored}
        assert rows(store, "SELECT relkind FROM pg_class WHERE relname = 'events'") == [("p",)]
        # Each event in its month's partition, the one of 3,000 days ago in the default one.
        for e in stored[:4]:
            name = partition_name(*month_of(e.timestamp))
            assert rows(store, f"SELECT id FROM {name} WHERE id = %s", (e.id,)) == [(e.id,)]
        assert rows(store, "SELECT id FROM events_default") == [(stored[4].id,)]
        assert sorted(
            rows(store, "SELECT idempotency_key, event_id FROM event_idempotency_keys")
        ) == [
            ("key-1", stored[1].id),
            ("key-3", stored[3].id),
        ]
        indexes = {
            r[0] for r in rows(store, "SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
        }
        assert {
            "events_tenant_ts",
            "events_tenant_entity_ts",
            "events_tenant_type_ts",
            "events_tenant_severity_ts",
            "events_correlation",
            "events_device_report",
            "events_seq",
            "events_type_create_time",
        } <= indexes
        assert rows(store, "SELECT SUM(event_count) FROM event_rollups") == [(5,)]

        async def resend() -> list[str | None]:
            # A resent key is still recognised after the move; a new one stores.
            again = event(0)
            return await store.events.insert_batch(ACME, [(event(0), "key-1"), (again, "key-new")])

        assert asyncio.run(resend()) == [stored[1].id, None]
        assert len(rows(store, "SELECT id FROM events")) == 6
    finally:
        store.close()


def test_an_idempotency_key_is_unique_across_partitions(pg: Store) -> None:
    """The side table refuses a second event under one key, whatever its month."""
    first, second = event(0), event(100)

    def insert_key(db: peewee.Database, e: Event) -> None:
        with db.atomic():
            db.execute_sql(
                "INSERT INTO event_idempotency_keys VALUES (%s, %s, %s, %s)",
                (TENANT, "k", e.id, e.timestamp),
            )

    asyncio.run(pg.read(lambda db: insert_key(db, first)))
    with pytest.raises(peewee.IntegrityError):
        asyncio.run(pg.read(lambda db: insert_key(db, second)))


def test_a_get_by_id_reads_the_primary_key_of_a_partition_never_analyzed(pg: Store) -> None:
    """Without statistics (autovacuum off, or a month just begun), `tenant_id = ... AND id = ...`
    was planned onto a tenant index that holds id as a later column: a walk over all of the
    tenant's events. The id alone finds the row; the scope is still checked on it."""
    events = [event(0) for _ in range(400)]

    async def insert_all() -> None:
        await asyncio.gather(*(pg.events.insert(e) for e in events))

    asyncio.run(insert_all())
    wanted = events[123]
    sql, args = point_sql(ACME, wanted.id, True, "%s")
    shown = plan(pg, sql, args)
    current = partition_name(*month_of(wanted.timestamp))
    assert f"{current}_pkey" in shown, shown
    assert f"Index Scan using {current}_tenant" not in shown, shown
    found = asyncio.run(pg.events.get(ACME, wanted.id))
    assert found is not None and found.id == wanted.id
    stranger = Principal("other", "k2", "key", Role.ADMIN)
    assert asyncio.run(pg.events.get(stranger, wanted.id)) is None
