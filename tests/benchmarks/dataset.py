"""The benchmarks' events at millions: generated once by bulk SQL (not the API), then reused.

SQLite: a file `build/bench/events-<size>-v<schema>.db`. PostgreSQL (when
EVENTMGMT_BENCH_POSTGRES_URL names a server): a database `eventmgmt_bench_<size>_v<schema>` kept
on that server. Either is made again when the schema (the newest migration) or the data's
shape changed, or when it is older than MAX_AGE_DAYS: its timestamps are relative to when it
was made, and the list's default window is the last 7 days.

The data: one tenant (`bench`), timestamps spread over the 30 days before it was made, 20
types (`Type0`..), 3 domains (`/root/sub0`..), 1,000 entities, severities 0-5, every tenth
event in a correlation group of two versions (the newer one flagged latest), custom fields
`plant` (50 values, `P0`..) and `temperature`. Size: EVENTMGMT_BENCH_EVENTS (1,000,000;
10,000,000 is the opt-in large run).
"""

from __future__ import annotations

import io
import json
import os
import random
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from persistence.migrations import MIGRATIONS
from persistence.rows import EVENT_COLUMNS
from persistence.store import Store
from persistence.upkeep import day_sql

TENANT = "bench"
DAY_US = 86_400 * 1_000_000
SPAN_US = 30 * DAY_US
ENTITIES, TYPES, PLANTS, DOMAINS = 1000, 20, 50, 3
MAX_AGE_DAYS = 2
SHAPE = 2  # bump when the generated data changes
BUILD = Path(__file__).resolve().parents[2] / "build" / "bench"
COLUMNS = (*EVENT_COLUMNS, "latest", "seq")


def size() -> int:
    return int(os.environ.get("EVENTMGMT_BENCH_EVENTS", "1000000"))


def _version() -> str:
    return f"{max(v for v, _, _ in MIGRATIONS)}s{SHAPE}"


def _rows(start: int, count: int, made: int) -> list[tuple[Any, ...]]:
    rng = random.Random(start)
    rows = []
    index = {c: i for i, c in enumerate(COLUMNS)}
    for n in range(start, start + count):
        # Pairs n, n+1 (n % 20 == 0) share a correlation; the second is the newer.
        correlated = n % 20 < 2
        ts = made - rng.randrange(SPAN_US) if not (correlated and n % 2) else rows[-1][7] + 1000
        entity = f"entity-{(n // 2 if correlated else n) % ENTITIES}"
        row: list[Any] = [None] * len(COLUMNS)
        row[index["id"]] = str(uuid.UUID(int=rng.getrandbits(128)))
        row[index["tenant_id"]] = TENANT
        first = n - n % 2 if correlated else n  # a group's versions share type and domain
        row[index["type_id"]] = f"Type{first % TYPES}"
        row[index["correlation_id"]] = f"corr-{n // 2}" if correlated else ""
        row[index["entity_type"]] = "Device"
        row[index["entity_id"]] = entity
        row[index["domain"]] = f"/root/sub{first % DOMAINS}"
        row[index["ts"]] = row[index["create_time"]] = row[index["update_time"]] = ts
        row[index["etag"]] = 1
        row[index["severity"]] = n % 6
        row[index["code"]] = str(10000 + n % 100)
        row[index["description"]] = "Error happened in the engine"
        row[index["classification"]] = "ALARM"
        row[index["category"]] = ""
        row[index["ack_required"]] = row[index["acknowledged"]] = row[index["internal"]] = False
        row[index["acknowledged_by"]] = row[index["app_id"]] = ""
        # Alarms start ACTIVE (service/domain/alarm_status.py); nobody cleared them.
        row[index["status"]] = "ACTIVE"
        row[index["cleared_by"]] = ""
        row[index["custom"]] = json.dumps(
            {"plant": f"P{n % PLANTS}", "temperature": round(rng.random() * 100, 2)}
        )
        row[index["latest"]] = not correlated or n % 2 == 1
        row[index["seq"]] = n + 1
        rows.append(tuple(row))
    return rows


def _chunks(total: int, made: int, chunk: int = 100_000) -> Any:
    for start in range(0, total, chunk):
        yield _rows(start, min(chunk, total - start), made)


def _finish_sql(postgres: bool) -> list[str]:
    day = day_sql("ts", postgres)
    return [
        "DELETE FROM event_rollups",
        f"INSERT INTO event_rollups SELECT tenant_id, domain, type_id, {day}, COUNT(*) "
        f"FROM events GROUP BY tenant_id, domain, type_id, {day}",
        "UPDATE feed_state SET last_seq = (SELECT COALESCE(MAX(seq), 0) FROM events)",
        "CREATE TABLE bench_meta (made BIGINT NOT NULL, events BIGINT NOT NULL)",
    ]


def sqlite_dataset(total: int | None = None) -> tuple[str, int]:
    """The SQLite file's URL and when its data was made (epoch microseconds)."""
    total = total or size()
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / f"events-{total}-v{_version()}.db"
    if path.exists():
        with sqlite3.connect(path) as connection:
            made = connection.execute("SELECT made FROM bench_meta").fetchone()[0]
        if time.time_ns() // 1000 - made < MAX_AGE_DAYS * DAY_US:
            return f"sqlite:///{path}", made
        path.unlink()
    for stale in BUILD.glob(f"events-{total}-*.db*"):
        stale.unlink()
    began = time.perf_counter()
    partial = path.with_suffix(".partial")
    for leftover in BUILD.glob(partial.name + "*"):
        leftover.unlink()
    store = Store(f"sqlite:///{partial}")
    store.migrate()
    store.close()
    made = time.time_ns() // 1000
    connection = sqlite3.connect(partial)
    connection.execute("PRAGMA journal_mode = wal")
    connection.execute("PRAGMA cache_size = -524288")
    indexes = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
        "AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:  # built once after the load: a sort beats random inserts
        connection.execute(f"DROP INDEX {name}")
    insert = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    with connection:
        for rows in _chunks(total, made):
            connection.executemany(insert, rows)
    with connection:
        for _, definition in indexes:
            connection.execute(definition)
        for statement in _finish_sql(False):
            connection.execute(statement)
        connection.execute("INSERT INTO bench_meta VALUES (?, ?)", (made, total))
    connection.execute("ANALYZE")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    for suffix in ("-wal", "-shm", "-writers"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    partial.rename(path)
    print(f"  (made {total:,} SQLite events in {time.perf_counter() - began:.0f} s: {path})")
    return f"sqlite:///{path}", made


def postgres_dataset(server_url: str, total: int | None = None) -> tuple[str, int]:
    """The PostgreSQL database's URL and when its data was made."""
    import psycopg2

    total = total or size()
    name = f"eventmgmt_bench_{total}_v{_version()}"
    base = server_url.rsplit("/", 1)[0]
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                with psycopg2.connect(f"{base}/{name}") as existing, existing.cursor() as c:
                    c.execute("SELECT made FROM bench_meta")
                    made = int(c.fetchone()[0])
                existing.close()
                if time.time_ns() // 1000 - made < MAX_AGE_DAYS * DAY_US:
                    return f"{base}/{name}", made
            cursor.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (f"eventmgmt_bench_{total}_%",),
            )
            for (stale,) in cursor.fetchall():
                cursor.execute(f"DROP DATABASE {stale} WITH (FORCE)")
            began = time.perf_counter()
            partial = f"{name}_partial"
            cursor.execute(f"CREATE DATABASE {partial}")
        store = Store(f"{base}/{partial}")
        store.migrate()
        store.close()
        made = time.time_ns() // 1000
        with psycopg2.connect(f"{base}/{partial}") as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' "
                "AND indexname <> 'events_pkey'"
            )
            # A partitioned table's index reads "ON ONLY events": built again without ONLY,
            # it is built on every partition too.
            indexes = [(n, d.replace(" ON ONLY ", " ON ", 1)) for n, d in cursor.fetchall()]
            for index, _ in indexes:
                cursor.execute(f"DROP INDEX {index}")
            for rows in _chunks(total, made):
                buffer = io.StringIO()
                for row in rows:
                    buffer.write("\t".join(_copy_text(v) for v in row) + "\n")
                buffer.seek(0)
                cursor.copy_expert(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN", buffer)
            for _, definition in indexes:
                cursor.execute(definition)
            for statement in _finish_sql(True):
                cursor.execute(statement)
            cursor.execute("INSERT INTO bench_meta VALUES (%s, %s)", (made, total))
        connection.close()
        vacuum = psycopg2.connect(f"{base}/{partial}")
        vacuum.autocommit = True
        with vacuum.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        vacuum.close()
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {partial} RENAME TO {name}")
        print(f"  (made {total:,} PostgreSQL events in {time.perf_counter() - began:.0f} s)")
        return f"{base}/{name}", made
    finally:
        admin.close()


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
