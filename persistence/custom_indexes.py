"""An index per custom field that some event type declares filterable, so that a list
filtered on it is an index range, not a test of every event's JSON in the time window.

SQLite: an expression index `(tenant_id, <the field's value>, ts, id, latest)`: equality (or
`in`) on the field within a tenant, then the list's order and keyset. The value expression is
`custom_value_sql`, the very expression the list filter compares (persistence/queries.py),
since a database uses an expression index only for the same expression; custom TIMESTAMP
fields compare the number inside `{"$timestamp": ...}` and get an index on that.

PostgreSQL: a column per field, `cf_<hash>_<n>` (jsonb: what `custom_value_sql` reads), with a
plain index `(tenant_id, column, ts, id, latest)`. An expression index never allows an
index-only scan (the planner wants the column the expression reads), so a capped count of
4,700 matches made as many reads of the events; on the column it reads the index alone. A
trigger fills the column in every event inserted or updated with new custom fields, whatever
process writes it; events stored before it existed are backfilled in batches; then the index
is built, partition by partition with CREATE INDEX CONCURRENTLY, attached to an index on the
partitioned table, which becomes valid when every partition has its own. A valid index is
what says the column is ready: the query builder uses only ready columns (`columns_postgres`).
`<n>` is new for every column made, so a name that a process still holds from before a drop
never names a column being filled again.

One index (or column) serves every type and tenant that declares the field filterable (the
name is a hash of the field's name and kind). After each event type write, and at start,
`reconcile` creates what is missing and drops what no type declares any more, in the
background: on SQLite in a write transaction of its own (writes wait while it builds, about
2 s per million events here); on PostgreSQL online, so writes and reads go on meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import threading
import time
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
    """The keys (`index_name`) of the fields whose filters an index serves: on SQLite the
    expression indexes, on PostgreSQL the ready columns."""
    if postgres:
        return set(columns_postgres(cursor))
    cursor.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
        "AND name LIKE ?",
        (PREFIX + "%",),
    )
    return {row[0] for row in cursor.fetchall()}


def _expression_indexes_postgres(cursor: Any) -> list[str]:
    """The expression indexes of earlier versions on PostgreSQL (named as on SQLite)."""
    cursor.execute(
        "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "WHERE x.indrelid = 'events'::regclass AND c.relname LIKE %s ORDER BY 1",
        (PREFIX + "%",),
    )
    return [name for (name,) in cursor.fetchall() if len(name) == len(index_name("", False))]


def reconcile_sqlite(cursor: Any) -> tuple[int, int]:
    """Creates and drops indexes in the caller's (write) transaction."""
    want, have = wanted(cursor), existing(cursor, False)
    for name, (field, timestamp) in sorted(want.items()):
        if name not in have:
            cursor.execute(f"CREATE INDEX {name} ON events ({_columns(field, timestamp, False)})")
    for name in sorted(have - set(want)):
        cursor.execute(f"DROP INDEX {name}")
    return len(set(want) - have), len(have - set(want))


_COLUMNS_LIKE = "cf\\_%"


def _column_prefix(key: str) -> str:
    """The start of the names of the column of the field whose SQLite index is `key`."""
    return "cf_" + key.removeprefix(PREFIX) + "_"


def _quoted_keys(name: str, timestamp: bool) -> str:
    return "".join(f" -> '{k}'" for k in ([name, "$timestamp"] if timestamp else [name]))


def columns_postgres(cursor: Any) -> dict[str, str]:
    """Field key (`index_name`) -> its column, for the columns that are ready: filled in
    every event (their index is valid only after the backfill, see reconcile_postgres)."""
    cursor.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_index x ON x.indrelid = a.attrelid "
        "JOIN pg_class c ON c.oid = x.indexrelid "
        "WHERE a.attrelid = 'events'::regclass AND a.attname LIKE %s "
        "AND NOT a.attisdropped AND x.indisvalid AND c.relname = 'events_' || a.attname",
        (_COLUMNS_LIKE,),
    )
    return {PREFIX + column.split("_")[1]: column for (column,) in cursor.fetchall()}


def _all_columns(cursor: Any) -> list[str]:
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'events'::regclass "
        "AND attname LIKE %s AND NOT attisdropped ORDER BY attname",
        (_COLUMNS_LIKE,),
    )
    return [row[0] for row in cursor.fetchall()]


def _leaves(cursor: Any) -> list[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
    )
    return [row[0] for row in cursor.fetchall()]


def _add_column(cursor: Any, key: str, field: str, timestamp: bool) -> str:
    """A new column for the field, with the trigger that fills it in every event inserted,
    or updated with new custom fields, from now on; in one transaction."""
    column = _column_prefix(key) + secrets.token_hex(4)
    cursor.execute("BEGIN")
    cursor.execute(f"ALTER TABLE events ADD COLUMN {column} jsonb")
    cursor.execute(
        f"CREATE FUNCTION fill_{column}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"NEW.{column} := NEW.custom::jsonb{_quoted_keys(field, timestamp)}; RETURN NEW; END $$"
    )
    cursor.execute(
        f"CREATE TRIGGER fill_{column} BEFORE INSERT OR UPDATE OF custom ON events "
        f"FOR EACH ROW EXECUTE FUNCTION fill_{column}()"
    )
    cursor.execute("COMMIT")
    return column


def _drop_column(cursor: Any, column: str) -> None:
    cursor.execute("BEGIN")
    cursor.execute(f"DROP INDEX IF EXISTS events_{column}")
    cursor.execute(f"DROP TRIGGER IF EXISTS fill_{column} ON events")
    cursor.execute(f"DROP FUNCTION IF EXISTS fill_{column}()")
    cursor.execute(f"ALTER TABLE events DROP COLUMN IF EXISTS {column}")
    cursor.execute("COMMIT")


# Pages per backfill statement: about 9,000 events of the benchmarks' size, a short
# transaction that holds few row locks.
BACKFILL_PAGES = 1000


def _backfill(cursor: Any, fills: dict[str, str]) -> int:
    """Sets each column (of `fills`: column -> its value's SQL) in the events stored before
    its trigger existed, all in one pass: a range of pages per statement (each its own
    transaction), partition by partition, until no partition is left that it has not done
    (upkeep may create one meanwhile). Returns the rows it changed."""
    targets = ", ".join(fills)
    values = ", ".join(fills.values())
    done: set[str] = set()
    changed = 0
    while todo := [leaf for leaf in _leaves(cursor) if leaf not in done]:
        for leaf in todo:
            # Rows moved or inserted past the end meanwhile were filled by the trigger.
            cursor.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                (leaf,),
            )
            pages = int(cursor.fetchone()[0])
            changed_here = 0
            for first in range(0, pages, BACKFILL_PAGES):
                cursor.execute(
                    f"UPDATE {leaf} SET ({targets}) = ROW({values}) WHERE ctid >= %s::tid "
                    f"AND ctid < %s::tid AND ROW({targets}) IS DISTINCT FROM ROW({values})",
                    (f"({first},0)", f"({first + BACKFILL_PAGES},0)"),
                )
                changed_here += cursor.rowcount
            changed += changed_here
            # Index-only scans need the visibility map; the planner, the column's statistics.
            cursor.execute(f"VACUUM (ANALYZE) {leaf}")
            if changed_here:
                # Each rewritten event left its old entries in every index; vacuumed, their
                # pages stayed: the default list's capped count read 1,495 index pages
                # instead of 102. Rebuilt online, they are as compact as before.
                cursor.execute(f"REINDEX TABLE CONCURRENTLY {leaf}")
            done.add(leaf)
    return changed


def _build_index(cursor: Any, column: str) -> None:
    """The column's index, partition by partition (CREATE INDEX CONCURRENTLY), attached to
    an index on the partitioned table, which is valid once every partition has its own."""
    name = f"events_{column}"
    columns = f"tenant_id, {column}, ts, id, latest"
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
        # A crash may leave an invalid one behind: CONCURRENTLY cannot replace it in place.
        cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {child}")
        cursor.execute(f"CREATE INDEX CONCURRENTLY {child} ON {partition} ({columns})")
        cursor.execute(f"ALTER INDEX {name} ATTACH PARTITION {child}")


def reconcile_postgres(url: str) -> tuple[int, int]:
    """Adds, fills, indexes and drops columns online, on an autocommit connection of its own;
    then drops the expression indexes of earlier versions, whose fields now have columns."""
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            want = wanted(cursor)
            have = _all_columns(cursor)
            ready = set(columns_postgres(cursor).values())
            keep: dict[str, str] = {}  # column -> its value's SQL
            for key, (field, timestamp) in sorted(want.items()):
                mine = [c for c in have if c.startswith(_column_prefix(key))]
                # A ready column first; else one whose fill a crash interrupted.
                mine.sort(key=lambda c: c not in ready)
                column = mine[0] if mine else _add_column(cursor, key, field, timestamp)
                keep[column] = f"custom::jsonb{_quoted_keys(field, timestamp)}"
            # Every new column filled in one pass over the events, then indexed.
            fills = {column: value for column, value in keep.items() if column not in ready}
            if fills:
                _backfill(cursor, fills)
            for column in fills:
                _build_index(cursor, column)
            created = len(fills)
            dropped = 0
            for column in have:
                if column not in keep:
                    _drop_column(cursor, column)
                    dropped += 1
            for name in _expression_indexes_postgres(cursor):
                cursor.execute(f"DROP INDEX IF EXISTS {name}")
            cursor.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
            return created, dropped
    finally:
        connection.close()


# A column that another process made ready is used within this many seconds.
COLUMNS_TTL_S = 10.0


class CustomFieldIndexes:
    """Runs `reconcile` on a thread of its own, one pass at a time; a request made while a
    pass runs queues one more pass (requests made before it starts share it). On PostgreSQL
    also keeps the ready columns, as last read from the catalogue, for the query builder."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="custom-indexes")
        self._lock = threading.Lock()
        self._queued = False
        self._last: Future[None] | None = None
        self._columns: dict[str, str] = {}
        self._columns_read = -COLUMNS_TTL_S

    def columns(self, db: Any) -> dict[str, str]:
        """Field key (`index_name`) -> ready column on PostgreSQL ({} on SQLite), read again
        from the catalogue through `db` when older than COLUMNS_TTL_S. A column in it may
        have been dropped since (its query then fails: `refresh_columns` and run it again);
        a column not ready is never in it, since a dropped column's name never returns."""
        if not self._store.postgres:
            return {}
        if time.monotonic() - self._columns_read > COLUMNS_TTL_S:
            return self.refresh_columns(db)
        return self._columns

    def known_columns(self) -> dict[str, str]:
        """The ready columns as last read, without reading them (writes: the writer's
        transaction is no place for a catalogue read); `forget_columns` when one failed."""
        return self._columns

    def forget_columns(self) -> None:
        self._columns = {}
        self._columns_read = -COLUMNS_TTL_S

    def refresh_columns(self, db: Any) -> dict[str, str]:
        if not self._store.postgres:
            return {}
        self._columns = columns_postgres(db.cursor())
        self._columns_read = time.monotonic()
        return self._columns

    def reconcile(self) -> tuple[int, int]:
        if self._store.postgres:
            try:
                return reconcile_postgres(self._store.url)
            finally:
                self._columns_read = -COLUMNS_TTL_S  # this process reads them again
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
