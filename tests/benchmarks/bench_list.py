"""`make bench`, second part: list latency at 1,000,000 events on SQLite and PostgreSQL, each
figure beside its target, and the query plans.

The events are the benchmarks' cached data set (tests/benchmarks/dataset.py: made once by bulk
SQL into build/bench/ and an `eventmgmt_bench_*` PostgreSQL database, reused while fresh;
EVENTMGMT_BENCH_EVENTS=10000000 for the large run). PostgreSQL runs when
EVENTMGMT_BENCH_POSTGRES_URL names a server. Then the domain's list call (filter
compilation, the page query and its count; no transport) is timed for each shape:

  default      no filter: the last 7 days, history collapsed, newest first
  entity       entityId = one of 1,000 entities
  type         filter {"typeId": ...}, one of 20 types
  sev+time     severity 1 or 2 within a 3-day startTime/endTime range
  custom       filter {"plant": ...} on a custom field, one of 50 values
  cursor deep  the default list resumed from a cursor 10% into the window
  offset deep  the same position reached by page number, for comparison
  default, count=exact  the default list counting every match (the other shapes count to
               10,000: service/domain/listing.py)

and prints p50 / p99 over --repeat runs (first page 20 events) with the load average, then
EXPLAIN QUERY PLAN (SQLite) and EXPLAIN (PostgreSQL) of each shape's page query: on
PostgreSQL they show which monthly partitions a window reads.
Flags: --repeat 30  --no-explain
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import dataset
import figures

from persistence.event_types import EventTypeRepository
from persistence.events import list_sql
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.custom_fields import FieldDefinition
from service.domain.custom_fields import FieldType as CustomType
from service.domain.errors import AlreadyExists
from service.domain.event_types import EventTypeManager, EventTypeSpec
from service.domain.events import EventManager, EventQuery, now_us
from service.domain.filters import FieldType, all_of
from service.domain.listing import DEFAULT_WINDOW_US, ListRequest

TENANT = dataset.TENANT
PRINCIPAL = Principal(tenant_id=TENANT, key_id="bench", name="bench", role=Role.ADMIN)
DAY = dataset.DAY_US
CUSTOM: dict[str, FieldType] = {"plant": "string", "temperature": "double"}


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


APPLICATION = f"eventmgmt-bench-list-{os.getpid()}"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used so far by this process (all its threads) and by the PostgreSQL
    backends serving its connections, when they run on this machine (found by the
    application_name its connections carry): what a call costs whatever the machine's load."""

    def __init__(self, store: Store) -> None:
        self.backends: list[int] = []
        if store.postgres:
            rows = store.run_sync(
                lambda db: db.execute_sql(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                    "AND pid <> pg_backend_pid()",  # not this connection, closed right after
                    (APPLICATION,),
                ).fetchall()
            )
            # Readable only when PostgreSQL runs on this machine.
            self.backends = [int(pid) for (pid,) in rows if Path(f"/proc/{pid}/stat").exists()]

    def __call__(self) -> tuple[float, float | None]:
        database = 0.0
        for pid in self.backends:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the backend went away: its CPU no longer counts
                continue
            database += (int(stat[11]) + int(stat[12])) / CLK_TCK
        return time.process_time(), database if self.backends else None


Result = tuple[float, float, int, float, float | None]  # p50, p99, total, CPU ms: here, db


async def measure(store: Store, repeat: int, now: int) -> dict[str, Result]:
    manager = EventManager(store.events)
    requests = shapes(now)
    everything = ListRequest(count="exact")
    total = (await manager.list_events(PRINCIPAL, everything, CUSTOM.get)).total
    depth = max(20, total // 10 // 20 * 20)
    requests["cursor deep"] = _with(
        ListRequest(), page_token=await deep_token(manager, ListRequest(), depth)
    )
    requests["offset deep"] = ListRequest(page=depth // 20)
    for request in requests.values():  # one warm-up of every shape: caches, statistics
        await manager.list_events(PRINCIPAL, request, CUSTOM.get)
    # Round robin, so that the machine's load spreads evenly over the shapes; the exact count
    # (which reads a quarter of the index, evicting caches) comes last, on its own.
    samples: dict[str, list[float]] = {name: [] for name in requests}
    samples["default, count=exact"] = []
    samples[ROUND_TRIP] = []
    totals = {ROUND_TRIP: 0}
    cpu = CpuMeter(store)
    used: dict[str, list[float]] = {name: [0.0, 0.0] for name in samples}
    database_cpu = bool(cpu.backends)

    async def timed(name: str, call: Any) -> Any:
        here, there = cpu()
        began = time.perf_counter()
        answer = await call
        samples[name].append((time.perf_counter() - began) * 1000)
        here_after, there_after = cpu()
        used[name][0] += here_after - here
        if there is not None and there_after is not None:
            used[name][1] += there_after - there
        return answer

    rounds = [(requests, repeat), ({"default, count=exact": everything}, max(3, repeat // 5))]
    for shapes_here, times in rounds:
        for _ in range(times):
            for name, request in shapes_here.items():
                page = await timed(name, manager.list_events(PRINCIPAL, request, CUSTOM.get))
                totals[name] = page.total
            if shapes_here is requests:  # the same hop to a reader thread, no work in it
                await timed(
                    ROUND_TRIP, store.read(lambda db: db.execute_sql("SELECT 1").fetchone())
                )
    results = {}
    for name, times in samples.items():
        quantiles = statistics.quantiles(times, n=100, method="inclusive")
        here_ms, there_ms = (1000 * v / len(times) for v in used[name])
        results[name] = (
            statistics.median(times),
            quantiles[98],
            totals[name],
            here_ms,
            there_ms if database_cpu else None,
        )
    return results


def explain(store: Store, now: int) -> tuple[int, int] | None:
    """The page query of each shape, as the store would run it, with the database's plan;
    on PostgreSQL, how many partitions the 3-day window's plan reads of how many there are."""
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
    pruned = None
    with db.connection_context():
        columns = store.custom_indexes.columns(db)
    for name, query in queries.items():
        (count_where, count_args), sql, args = list_sql(
            PRINCIPAL, query, store.postgres, db.param, columns
        )
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
        if name == "cursor deep":
            print("    none: a cursor page answers the count its token carries")
            continue
        for row in count_plan:
            print("    " + str(row[-1] if not store.postgres else row[0]))
        if store.postgres and name == "sev+time":
            text = " ".join(str(row[0]) for row in plan)
            read = set(re.findall(r" on (events_\w+)", text))
            with db.connection_context():
                partitions = db.execute_sql(
                    "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
                ).fetchone()[0]
            pruned = (len(read), int(partitions))
    return pruned


TARGETS_MS = {"default": 5.0, "cursor deep": 5.0, "custom": 10.0}
# A read of `SELECT 1` through the same reader threads, timed in the same rounds: what a list
# costs beyond the hop and the round trip, whatever the machine's load.
ROUND_TRIP = "SELECT 1 (baseline)"
FIGURE_NAMES = {
    "default": "default list (7 days, newest first)",
    "cursor deep": "deep cursor page (10% into the window)",
    "custom": "filter on a filterable custom field",
}


async def declare_custom_fields(store: Store) -> float:
    """A type of the bench tenant declares `plant` and `temperature` filterable, as a user's
    would; their indexes (on PostgreSQL their columns too) are made once: the data set keeps
    them. Returns the seconds."""
    began = time.perf_counter()
    store.keys.create_tenant(TENANT, "Bench")  # False when it exists
    fields = (
        FieldDefinition("plant", CustomType.STRING, filterable=True),
        FieldDefinition("temperature", CustomType.DOUBLE, filterable=True),
    )
    types = EventTypeManager(EventTypeRepository(store))
    with contextlib.suppress(AlreadyExists):
        await types.create(
            PRINCIPAL, EventTypeSpec(id="BenchMachine", name="BenchMachine", fields=fields)
        )
    store.custom_indexes.schedule()
    await store.custom_indexes.settled()
    return time.perf_counter() - began


def bench(url: str, label: str, repeat: int, show_plans: bool) -> None:
    if url.startswith("postgresql"):  # names its connections, for CpuMeter
        url += ("&" if "?" in url else "?") + f"application_name={APPLICATION}"
    store = Store(url)
    store.migrate()
    try:
        seconds = asyncio.run(declare_custom_fields(store))
        print(f"\n{label}: custom field indexes ready in {seconds:.1f} s")
        load = os.getloadavg()[0]
        results = asyncio.run(measure(store, repeat, now_us()))
        print(
            f"\n{label}: {dataset.size():,} events, load average {load:.1f} -> "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(
            f"  {'shape':<20} {'p50 ms':>8} {'p99 ms':>8} {'target':>8}  {'total':>9}  "
            "CPU ms per call: Python, database"
        )
        baseline = results[ROUND_TRIP][0]
        for name, (p50, p99, total, here, there) in results.items():
            target = TARGETS_MS.get(name)
            verdict = "" if target is None else ("ok" if p50 <= target else "MISSED")
            shown = "" if target is None else f"<= {target:g}"
            cost = f"{here:.1f}" + ("" if there is None else f", {there:.1f}")
            print(f"  {name:<20} {p50:8.1f} {p99:8.1f} {shown:>8}  {total:9,} {verdict:6}  {cost}")
            if target is not None:
                database = "" if there is None else f" + {there:.1f} in PostgreSQL"
                figures.record(
                    4,
                    f"{label}: {FIGURE_NAMES[name]}, {dataset.size():,} events",
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({p50 / baseline:.0f}x a SELECT 1 "
                    f"read at {baseline:.2f} ms); CPU per call {here:.1f} ms in Python"
                    f"{database}",
                    f"p50 <= {target:g} ms",
                    p50 <= target,
                )
        if show_plans:
            print(f"\n{label} plans:")
            pruned = explain(store, now_us())
            if store.postgres and pruned:
                read, partitions = pruned
                figures.record(
                    5,
                    f"{label}: a 3-day window (sev+time) reads only its partitions",
                    f"{read} of {partitions} monthly partitions in the plan",
                    "prunes",
                    read < partitions,
                )
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()
    began = time.perf_counter()
    url, _ = dataset.sqlite_dataset()
    bench(url, "SQLite", args.repeat, not args.no_explain)
    postgres = os.environ.get("EVENTMGMT_BENCH_POSTGRES_URL")
    if postgres:
        url, _ = dataset.postgres_dataset(postgres)
        bench(url, "PostgreSQL", args.repeat, not args.no_explain)
    else:
        print("\nPostgreSQL: skipped (set EVENTMGMT_BENCH_POSTGRES_URL to include it)")
    print(f"\ntotal run time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
