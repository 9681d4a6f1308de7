"""`make bench`, bulk jobs: events per second through a create job of 10,000 events over
REST, against the raw rate of inserting the same rows with executemany, measured in the same
run on the same machine."""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench import Service

from persistence.rows import event_row
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.events import EventManager

EVENTS = 10_000
ROUNDS = 3


def _request(service: Service, method: str, path: str, key: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.rest_port}{path}",
        data=body,
        method=method,
        headers={"x-api-key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return dict(json.loads(answer.read()))


def job_rate(service: Service, key: str) -> float:
    body = json.dumps(
        {
            "events": [
                {"description": f"bulk {n}", "severity": 3, "entityId": f"device-{n % 100}"}
                for n in range(EVENTS)
            ]
        }
    )
    started = time.perf_counter()
    job = _request(service, "POST", "/createEventsJobs", key, body.encode())
    while True:
        status = _request(service, "GET", f"/createEventsJobs/{job['id']}", key)
        if status["state"] in ("FINISHED", "FINISHED_WITH_ERROR"):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    assert status["state"] == "FINISHED", status["state"]
    return EVENTS / elapsed


def raw_rate(work_dir: Path) -> float:
    """The same events, validated and inserted with executemany in one transaction."""
    import asyncio

    store = Store(f"sqlite:///{work_dir / 'raw.db'}")
    store.migrate()
    principal = Principal("t", "k", "bench", Role.READ_WRITE)
    manager = EventManager(store.events)
    events = [
        asyncio.run(manager.prepare(principal, {"description": f"bulk {n}", "severity": 3}))
        for n in range(EVENTS)
    ]
    started = time.perf_counter()
    store.run_sync(lambda db: store.writes.insert_rows(db.cursor(), [event_row(e) for e in events]))
    elapsed = time.perf_counter() - started
    store.close()
    return EVENTS / elapsed


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="eventmgmt-bench-jobs-") as tmp:
        work_dir = Path(tmp)
        service = Service(work_dir)
        service.start()
        try:
            key = service.create_key("bench")
            rates = sorted(job_rate(service, key) for _ in range(ROUNDS))
        finally:
            service.stop()
        raw = raw_rate(work_dir)
    median = rates[len(rates) // 2]
    print(f"\nBulk create job of {EVENTS:,} events over REST (median of {ROUNDS}):")
    print(
        f"  create job                 {median:>9,.0f} events/s  (runs: "
        f"{', '.join(f'{r:,.0f}' for r in rates)})"
    )
    print(f"  raw SQLite executemany     {raw:>9,.0f} rows/s")
    print(f"  job / raw                  {median / raw:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
