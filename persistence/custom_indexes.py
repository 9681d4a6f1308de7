"""An expression index per custom field that some event type declares filterable, so that a
list filtered on it is an index range, not a test of every event's JSON in the time window.

The index is `(tenant_id, <the field's value>, ts, id, latest)`: equality (or `in`) on the field
within a tenant, then the list's order and keyset. The value expression is `custom_value_sql`, the
very expression the list filter compares (persistence/queries.py), since a database uses an
expression index only for the same expression; custom TIMESTAMP fields compare the number
inside `{"$timestamp": ...}` and get an index on that.

One index serves every type and tenant that declares the field filterable (the name is a hash
of the field's name and kind). After each event type write, and at start, `reconcile` creates
what is missing and drops what no type declares any more, in the background: on SQLite in a
write transaction of its own (writes wait while it builds, about 2 s per million events here);
on PostgreSQL online, partition by partition with CREATE INDEX CONCURRENTLY, attached to an
index on the partitioned table, so writes and reads go on meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from service.domain.custom_fields import FieldType

if TYPE_CHECKING:
    from persistence.store import Store

log = logging.getLogger(__name__)
PREFIX = "events_cf_"
_LOCK_KEY = 7_301_245_030


def custom_value_sql(name: str, timestamp: bool, postgres: bool) -> str:
    """The SQL of a custom field's stored JSON value (its instant's number for timestamps).
    `name` is an identifier (service/domain/event_types.py checks it), so it is written in."""
    keys = [name, "$timestamp"] if timestamp else [name]
    if postgres:
        return "(custom::jsonb" + "".join(f" -> '{k}'" for k in keys) + ")"
    return "json_extract(custom, '$." + ".".join(f'"{k}"' for k in keys) + "')"


# Part of every index name: a change of _columns renames them, so upkeep replaces the old.
_SHAPE = 2


def index_name(name: str, timestamp: bool) -> str:
    kind = "timestamp" if timestamp else "value"
    return PREFIX + hashlib.sha256(f"{name}/{kind}/{_SHAPE}".encode()).hexdigest()[:16]


def _columns(name: str, timestamp: bool, postgres: bool) -> str:
    # `latest` last, as in the other list indexes: a list without history, and its count,
    # skip older versions inside the index.
    return f"tenant_id, ({custom_value_sql(name, timestamp, postgres)}), ts, id, latest"


def wanted(cursor: Any) -> dict[str, tuple[str, bool]]:
    """Index name -> (field name, is a timestamp) for every field a type declares filterable."""
    cursor.execute("SELECT fields FROM event_types")
    found = {}
    for (text,) in cursor.fetchall():
        for field in json.loads(text):
            if field.get("filterable"):
                timestamp = FieldType(field["type"]) is FieldType.TIMESTAMP
                found[index_name(field["name"], timestamp)] = (field["name"], timestamp)
    return found


def existing(cursor: Any, postgres: bool) -> set[str]:
    if postgres:
        cursor.execute(
            "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
            "WHERE x.indrelid = 'events'::regclass AND c.relname LIKE %s",
            (PREFIX + "%",),
        )
    else:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
            "AND name LIKE ?",
            (PREFIX + "%",),
        )
    return {row[0] for row in cursor.fetchall()}


def reconcile_sqlite(cursor: Any) -> tuple[int, int]:
    """Creates and drops indexes in the caller's (write) transaction."""
    want, have = wanted(cursor), existing(cursor, False)
    for name, (field, timestamp) in sorted(want.items()):
        if name not in have:
            cursor.execute(f"CREATE INDEX {name} ON events ({_columns(field, timestamp, False)})")
    for name in sorted(have - set(want)):
        cursor.execute(f"DROP INDEX {name}")
    return len(set(want) - have), len(have - set(want))


def reconcile_postgres(url: str) -> tuple[int, int]:
    """Creates and drops indexes online, on an autocommit connection of its own."""
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            want, have = wanted(cursor), existing(cursor, True)
            created = 0
            for name, (field, timestamp) in sorted(want.items()):
                columns = _columns(field, timestamp, True)
                # Invalid until every partition's index is attached; the planner skips it.
                cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON ONLY events ({columns})")
                cursor.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'events'::regclass AND i.inhrelid NOT IN ("
                    "SELECT x.indrelid FROM pg_inherits j JOIN pg_index x "
                    "ON x.indexrelid = j.inhrelid WHERE j.inhparent = %s::regclass) "
                    "ORDER BY 1",
                    (name,),
                )
                for (partition,) in cursor.fetchall():
                    child = f"{name}_{partition}"[:63]
                    cursor.execute(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {child} "
                        f"ON {partition} ({columns})"
                    )
                    cursor.execute(f"ALTER INDEX {name} ATTACH PARTITION {child}")
                created += name not in have
            dropped = 0
            for name in sorted(have - set(want)):
                cursor.execute(f"DROP INDEX IF EXISTS {name}")
                dropped += 1
            cursor.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
            return created, dropped
    finally:
        connection.close()


class CustomFieldIndexes:
    """Runs `reconcile` on a thread of its own, one pass at a time; a request made while a
    pass runs queues one more pass (requests made before it starts share it)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="custom-indexes")
        self._lock = threading.Lock()
        self._queued = False
        self._last: Future[None] | None = None

    def reconcile(self) -> tuple[int, int]:
        if self._store.postgres:
            return reconcile_postgres(self._store.url)
        return self._store.run_sync(lambda db: reconcile_sqlite(db.cursor()))

    def schedule(self) -> None:
        with self._lock:
            if not self._queued:
                self._queued = True
                self._last = self._executor.submit(self._pass)

    def _pass(self) -> None:
        with self._lock:
            self._queued = False
        try:
            created, dropped = self.reconcile()
            if created or dropped:
                log.info("custom field indexes: %s created, %s dropped", created, dropped)
        except Exception:
            log.exception("custom field index upkeep failed; retried at the next type write")

    async def settled(self) -> None:
        """Waits for the passes scheduled so far (tests; the benchmark before it measures)."""
        if self._last is not None:
            await asyncio.wrap_future(self._last)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
