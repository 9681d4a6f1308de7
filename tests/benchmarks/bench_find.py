"""`make bench`: find latency over 1,000,000 events on SQLite and PostgreSQL, beside targets.

The events are the benchmarks' cached data set (tests/benchmarks/dataset.py; PostgreSQL when
EVENTMGMT_BENCH_POSTGRES_URL names a server). In process (domain parser + SQL + answer
shaping, no network), each query runs --runs times after one warm-up; p50/p99 are printed:

  1. a filtered query: the documented shape (docs/find-api.md#find), a one-day range and a
     type term, about 1,700 hits;
  2. an aggregation: terms on type with a daily date_histogram beside it, over everything
     (answered from the rollups; the same on the events themselves is shown for comparison).

Flags: --runs N (default 30).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import time
from typing import Any

import dataset
import figures

from persistence.find_run import run_find
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.find import EventFinder
from service.domain.find_answer import answer_document
from service.domain.find_parser import parse_find_request

TENANT = dataset.TENANT
DAY_MS = 86_400_000
TARGET_MS = 200.0


def filtered(made_ms: int) -> dict[str, Any]:
    day = made_ms // DAY_MS * DAY_MS - 10 * DAY_MS
    return {
        "size": 100,
        "query": {
            "bool": {
                "filter": [
                    {"range": {"timestamp": {"gte": day, "lt": day + DAY_MS}}},
                    {"term": {"type": "Type7"}},
                ]
            }
        },
    }


AGGREGATION = {
    "query": {"match_all": {}},
    "size": 0,
    "aggs": {
        "types": {"terms": {"field": "type", "size": 10}},
        "daily": {"date_histogram": {"field": "timestamp", "calendar_interval": "day"}},
    },
}


async def measure(
    store: Store, document: dict[str, Any], runs: int, rollups: bool = True
) -> tuple[list[float], Any]:
    principal = Principal(TENANT, "k", "bench", Role.READ)
    if rollups:
        finder = EventFinder(store.events)
        find = functools.partial(finder.find, principal, document)
    else:
        request = parse_find_request(document)

        async def find() -> Any:
            result = await store.read(
                functools.partial(run_find, principal, request, store.postgres, rollups=False)
            )
            return answer_document(request, result, 0)

    answer = await find()  # warm-up: caches, statistics
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = await find()
        times.append((time.perf_counter() - started) * 1000)
    return times, answer


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def bench(url: str, label: str, made: int, runs: int) -> None:
    store = Store(url)
    store.migrate()
    load = os.getloadavg()[0]
    print(f"find bench, {label}: {dataset.size():,} events, load average {load:.1f}", flush=True)
    try:
        for name, document, rollups, target in (
            ("filtered", filtered(made // 1000), True, None),
            ("terms + date_histogram", AGGREGATION, True, TARGET_MS),
            ("  the same on the events", AGGREGATION, False, None),
        ):
            runs_here = runs if rollups else 1  # seconds each: context only
            times, answer = asyncio.run(measure(store, document, runs_here, rollups))
            p50 = statistics.median(times)
            verdict = (
                ""
                if target is None
                else f"target <= {target:g} ms " + ("ok" if p50 <= target else "MISSED")
            )
            print(
                f"  {name:<26} p50 {p50:8.1f} ms   p99 {percentile(times, 0.99):8.1f} ms   "
                f"({runs_here} runs, {answer['hits']['total']['value']:,} matching) {verdict}",
                flush=True,
            )
            if target is not None:
                figures.record(
                    6,
                    f"{label}: find {name} over {dataset.size():,} events",
                    f"p50 {p50:.1f} ms, p99 {percentile(times, 0.99):.1f} ms "
                    f"({answer['hits']['total']['value']:,} counted exactly)",
                    f"<= {target:g} ms",
                    p50 <= target,
                )
    finally:
        store.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_find.py", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    url, made = dataset.sqlite_dataset()
    bench(url, "SQLite", made, args.runs)
    postgres = os.environ.get("EVENTMGMT_BENCH_POSTGRES_URL")
    if postgres:
        url, made = dataset.postgres_dataset(postgres)
        bench(url, "PostgreSQL", made, args.runs)
    else:
        print("find bench, PostgreSQL: skipped (set EVENTMGMT_BENCH_POSTGRES_URL)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
