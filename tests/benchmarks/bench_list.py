"""`make bench`, second part: list latency at 100k and 1M events, and the query plans.

Fills a fresh SQLite database (and PostgreSQL when EVENTMGMT_BENCH_POSTGRES_URL is set: a
fresh database is created on that server and dropped afterwards; 100k events there unless
--postgres-sizes / EVENTMGMT_BENCH_POSTGRES_SIZES asks for more) directly through the store's
own insert SQL (`insert_events`, the writer's statement and its latest-flag upkeep), in big
transactions. Then, at 100k and again at 1M events, times the domain's list call (filter
compilation, the page query and its exact count; no transport) for each shape:

  default      no filter: the last 7 days, history collapsed, newest first
  entity       entityId = one of 1,000 entities
  type         filter {"typeId": ...}, one of 20 types
  sev+time     severity 1 or 2 within a 3-day startTime/endTime range
  custom       filter {"plant": ...} on a custom field, one of 50 values
  cursor deep  the default list resumed from a cursor 10% into the window
  offset deep  the same position reached by page number, for comparison

and prints p50 / p99 over --repeat runs (first page 20 events), then EXPLAIN QUERY PLAN
(SQLite) and EXPLAIN (PostgreSQL) of each shape's page query at the largest size.

Events: one tenant, timestamps spread over the last 30 days (so the default window holds
about a quarter), every tenth event in a correlation group of two versions.
Flags: --sizes 100000,1000000  --repeat 30  --no-explain
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from persistence.events import list_sql
from persistence.rows import event_row, insert_events
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.events import Event, EventManager, EventQuery, new_event_id, now_us
from service.domain.filters import FieldType, all_of
from service.domain.listing import DEFAULT_WINDOW_US, ListRequest

TENANT = "bench"
PRINCIPAL = Principal(tenant_id=TENANT, key_id="bench", name="bench", role=Role.ADMIN)
DAY = 86_400 * 1_000_000
SPAN = 30 * DAY
ENTITIES, TYPES, PLANTS = 1000, 20, 50
CHUNK = 50_000
CUSTOM: dict[str, FieldType] = {"plant": "string", "temperature": "double"}


def make_rows(start: int, count: int, now: int, rng: random.Random) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(start, start + count):
        ts = now - rng.randrange(SPAN)
        correlation = f"corr-{n // 2}" if n % 20 < 2 else ""
        entity = f"entity-{(n // 2 if correlation else n) % ENTITIES}"
        event = Event(
            id=new_event_id(),  # time-ordered, as the service assigns them
            tenant_id=TENANT,
            type_id=f"Type{n % TYPES}",
            correlation_id=correlation,
            entity_type="Device",
            entity_id=entity,
            domain="/",
            timestamp=ts,
            create_time=ts,
            update_time=ts,
            severity=n % 6,
            code=str(10000 + n % 100),
            description="Error happened in the engine",
            classification="ALARM",
            custom_fields={"plant": f"P{n % PLANTS}", "temperature": round(rng.random() * 100, 2)},
        )
        rows.append(event_row(event))
    return rows


def fill(store: Store, start: int, end: int, now: int) -> float:
    began = time.perf_counter()
    rng = random.Random(start)
    db = store.database
    # A first small chunk, then statistics: on a table without them PostgreSQL's planner
    # may look a correlation group up by the type index instead of the correlation index.
    bounds = [start, *range(min(start + 5000, end), end, CHUNK), end]
    db.connect(reuse_if_open=True)  # one connection for the whole load
    # The list indexes are dropped during the load and built again after it (a sort beats a
    # million random index inserts); the correlation index stays, the writer's upkeep uses it.
    if store.postgres:
        found = db.execute_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' "
            f"AND indexname LIKE {db.param}",
            ("events_tenant_%",),
        ).fetchall()
    else:
        found = db.execute_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            f"AND tbl_name = 'events' AND name LIKE {db.param}",
            ("events_tenant_%",),
        ).fetchall()
    for name, _ in found:
        db.execute_sql(f"DROP INDEX {name}")
    if not store.postgres:
        # SQLite's default 2 MB page cache thrashes on seven indexes of a million rows; this
        # loading connection gets 256 MB (the service's own connections keep the default).
        db.execute_sql("PRAGMA cache_size = -262144")
    for low, high in itertools.pairwise(bounds):
        rows = make_rows(low, high - low, now, rng)
        with db.atomic():
            insert_events(db.cursor(), rows, store.postgres)
        if store.postgres and low == start:
            db.execute_sql("ANALYZE events")
    for _, definition in found:
        db.execute_sql(definition)
    # Fresh statistics (and on PostgreSQL the visibility map that index-only scans need), as
    # autovacuum would leave a table that grew this much.
    db.execute_sql("VACUUM ANALYZE events" if store.postgres else "ANALYZE")
    return time.perf_counter() - began


def shapes(now: int) -> dict[str, ListRequest]:
    return {
        "default": ListRequest(),
        "entity": ListRequest(entity_id="entity-17"),
        "type": ListRequest(filter='{"typeId": "Type7"}'),
        "sev+time": ListRequest(
            severities=(1, 2), start_time=now - 5 * DAY, end_time=now - 2 * DAY
        ),
        "custom": ListRequest(filter='{"plant": "P7"}'),
    }


async def deep_token(manager: EventManager, request: ListRequest, depth: int) -> str:
    """The cursor `depth` events into the list, reached with pages of 1,000."""
    token, seen = "", 0
    while seen < depth:
        size = min(1000, depth - seen)
        page = await manager.list_events(
            PRINCIPAL, _with(request, size=size, page_token=token), CUSTOM.get
        )
        token, seen = page.next_token, seen + len(page.events)
    return token


def _with(request: ListRequest, **changes: Any) -> ListRequest:
    import dataclasses

    return dataclasses.replace(request, **changes)


async def measure(store: Store, repeat: int, now: int) -> dict[str, tuple[float, float, int]]:
    manager = EventManager(store.events)
    requests = shapes(now)
    total = (await manager.list_events(PRINCIPAL, ListRequest(), CUSTOM.get)).total
    depth = max(20, total // 10 // 20 * 20)
    requests["cursor deep"] = _with(
        ListRequest(), page_token=await deep_token(manager, ListRequest(), depth)
    )
    requests["offset deep"] = ListRequest(page=depth // 20)
    results = {}
    for name, request in requests.items():
        samples = []
        for _ in range(repeat):
            began = time.perf_counter()
            page = await manager.list_events(PRINCIPAL, request, CUSTOM.get)
            samples.append((time.perf_counter() - began) * 1000)
        quantiles = statistics.quantiles(samples, n=100, method="inclusive")
        results[name] = (statistics.median(samples), quantiles[98], page.total)
    return results


def explain(store: Store, now: int) -> None:
    """The page query of each shape, as the store would run it, with the database's plan."""
    from service.domain.filters import Compare, FieldRef, compile_filter

    window = Compare(FieldRef("timestamp", "timestamp"), "ge", now - DEFAULT_WINDOW_US)
    conditions: dict[str, Any] = {
        "default": window,
        "entity": all_of([Compare(FieldRef("entity_id", "string"), "eq", "entity-17"), window]),
        "type": all_of([compile_filter('{"typeId": "Type7"}'), window]),  # type: ignore[list-item]
        "sev+time": all_of(
            [
                Compare(FieldRef("severity", "integer"), "in", (1, 2)),
                Compare(FieldRef("timestamp", "timestamp"), "ge", now - 5 * DAY),
                Compare(FieldRef("timestamp", "timestamp"), "lt", now - 2 * DAY),
            ]
        ),
        "custom": all_of([compile_filter('{"plant": "P7"}', CUSTOM.get), window]),  # type: ignore[list-item]
    }
    queries = {
        name: EventQuery(condition=condition, history=False, limit=21)
        for name, condition in conditions.items()
    }
    queries["cursor deep"] = EventQuery(
        condition=window, history=False, limit=21, after=(now - DAY, "8" + "0" * 35)
    )
    db = store.database
    for name, query in queries.items():
        (count_where, count_args), sql, args = list_sql(PRINCIPAL, query, store.postgres, db.param)
        with db.connection_context():
            prefix = "EXPLAIN " if store.postgres else "EXPLAIN QUERY PLAN "
            plan = db.execute_sql(prefix + sql, args).fetchall()
            count_plan = db.execute_sql(
                prefix + f"SELECT COUNT(*) FROM events WHERE {count_where}", count_args
            ).fetchall()
        print(f"\n  -- {name}: page query")
        for row in plan:
            print("    " + str(row[-1] if not store.postgres else row[0]))
        print(f"  -- {name}: count")
        for row in count_plan:
            print("    " + str(row[-1] if not store.postgres else row[0]))


def bench(url: str, label: str, sizes: list[int], repeat: int, show_plans: bool) -> None:
    store = Store(url)
    store.migrate()
    now = now_us()
    filled = 0
    try:
        for size in sizes:
            seconds = fill(store, filled, size, now)
            print(
                f"\n{label}: {size:,} events (filled {size - filled:,} in {seconds:.1f} s, "
                f"{(size - filled) / seconds:,.0f} rows/s)"
            )
            filled = size
            results = asyncio.run(measure(store, repeat, now))
            print(f"  {'shape':<12} {'p50 ms':>8} {'p99 ms':>8} {'total':>9}")
            for name, (p50, p99, total) in results.items():
                print(f"  {name:<12} {p50:8.1f} {p99:8.1f} {total:9,}")
        if show_plans:
            print(f"\n{label} plans at {filled:,} events:")
            explain(store, now)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    # PostgreSQL loads a few thousand rows/s through the writer's SQL here, so 1M takes
    # minutes: opt in with --postgres-sizes 100000,1000000 (or the environment variable).
    parser.add_argument(
        "--postgres-sizes", default=os.environ.get("EVENTMGMT_BENCH_POSTGRES_SIZES", "100000")
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        bench(
            f"sqlite:///{Path(directory) / 'events.db'}",
            "SQLite",
            sizes,
            args.repeat,
            not args.no_explain,
        )
    postgres = os.environ.get("EVENTMGMT_BENCH_POSTGRES_URL")
    if postgres:
        import psycopg2

        name = f"eventmgmt_bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(postgres)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        try:
            bench(
                postgres.rsplit("/", 1)[0] + "/" + name,
                "PostgreSQL",
                [int(s) for s in args.postgres_sizes.split(",")],
                args.repeat,
                not args.no_explain,
            )
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()
    else:
        print("\nPostgreSQL: skipped (set EVENTMGMT_BENCH_POSTGRES_URL to include it)")
    print(f"\ntotal run time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
