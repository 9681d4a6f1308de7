"""`make bench`: find latency over 1,000,000 events in a fresh SQLite database.

The database is created by the store's own migrations, then filled directly with prepared
`executemany` in transactions of 50,000 rows (no server: filling is not what is measured).
Events belong to one tenant, spread over 30 days, 5 types, 4 classifications and 100 things.
Then, in process (domain parser + SQL + answer shaping, no network), each query runs
--runs times after one warm-up and p50/p99 latencies are printed:

  1. a filtered query: seed 002's shape, a one-day range and a type term, 100 hits;
  2. an aggregation: terms on type with a daily date_histogram beside it, over everything.

Flags: --events N (default 1,000,000), --runs N (default 30), --keep (keep the database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from persistence.rows import EVENT_COLUMNS
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.find import EventFinder

TENANT = "bench"
DAY_US = 86_400_000_000
START_US = 1_700_000_000_000_000
TYPES = ["RULE", "THING.CREATE", "THING.UPDATE", "THING.DELETE", "StandardEvent"]
CLASSES = ["INTERNAL", "ALARM", "WARNING", "NOTIFICATION"]
BATCH = 50_000


def fill(path: Path, total: int) -> float:
    started = time.monotonic()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=wal")
    connection.execute("PRAGMA synchronous=normal")
    placeholders = ", ".join("?" * len(EVENT_COLUMNS))
    sql = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({placeholders})"
    step = 30 * DAY_US // total
    for first in range(0, total, BATCH):
        rows = []
        for n in range(first, min(first + BATCH, total)):
            ts = START_US + n * step
            thing = f"{n % 100:06d}"
            source = json.dumps({"thingName": thing, "thingType": "1", "rule": "TestRule"})
            rows.append(
                (
                    str(uuid.UUID(int=n + 1)), TENANT, TYPES[n % 5], "", "Device", thing,
                    f"/root/sub{n % 3}", ts, ts, ts, 1, n % 6, str(10000 + n % 50),
                    f"Rule TestRule triggered for {thing}, temp={n % 40}", source,
                    CLASSES[n % 4], "YOUR.CATEGORY", n % 7 == 0, False, None, "", "", False,
                    None, None, None,
                )
            )  # fmt: skip
        with connection:
            connection.executemany(sql, rows)
    connection.execute("ANALYZE")
    connection.close()
    return time.monotonic() - started


FILTERED = {
    "query": {
        "size": 100,
        "query": {
            "bool": {
                "filter": [
                    {
                        "range": {
                            "timestamp": {
                                "gte": (START_US + 10 * DAY_US) // 1000,
                                "lt": (START_US + 11 * DAY_US) // 1000,
                            }
                        }
                    },
                    {"term": {"type": "RULE"}},
                ]
            }
        },
    }
}
AGGREGATION = {
    "query": {"match_all": {}},
    "size": 0,
    "aggs": {
        "types": {"terms": {"field": "type", "size": 10}},
        "daily": {"date_histogram": {"field": "timestamp", "calendar_interval": "day"}},
    },
}


async def measure(store: Store, document: dict[str, Any], runs: int) -> tuple[list[float], Any]:
    finder = EventFinder(store.events)
    principal = Principal(TENANT, "k", "bench", Role.READ)
    answer = await finder.find(principal, document)  # warm-up: caches, statistics
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = await finder.find(principal, document)
        times.append((time.perf_counter() - started) * 1000)
    return times, answer


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_find.py", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="bench-find-"))
    path = directory / "events.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    seconds = fill(path, args.events)
    print(
        f"find bench: {args.events:,} events filled in {seconds:.1f} s "
        f"({args.events / seconds:,.0f} rows/s), {path.stat().st_size / 1e6:,.0f} MB",
        flush=True,
    )
    try:
        for name, document in (("filtered", FILTERED), ("terms + date_histogram", AGGREGATION)):
            times, answer = asyncio.run(measure(store, document, args.runs))
            print(
                f"  {name:<24} p50 {statistics.median(times):8.1f} ms   "
                f"p99 {percentile(times, 0.99):8.1f} ms   "
                f"({args.runs} runs, {answer['hits']['total']['value']:,} matching)",
                flush=True,
            )
    finally:
        store.close()
        if args.keep:
            print(f"  database kept in {path}")
        else:
            shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
