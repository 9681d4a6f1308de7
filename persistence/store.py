"""The store: repositories over one database, with reads on a thread pool and writes grouped
into shared transactions. Repositories take and return domain objects; every event query is
scoped by the calling principal, so no query runs unscoped."""

from __future__ import annotations

import asyncio
import builtins
import functools
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee

from persistence.database import is_postgres, open_database
from persistence.find import FindSql, decode_group_value, install_sqlite_functions
from persistence.migrations import migrate
from persistence.notify import FEED_CHANNEL, FeedListener
from persistence.queries import SqlBuilder, refresh_latest
from persistence.writer import GroupCommitWriter
from service.domain import find as q
from service.domain.access import ROOT_DOMAIN, Principal, Role
from service.domain.custom_fields import Instant
from service.domain.events import Event, EventQuery, Payload
from service.domain.live import EventFilter

T = TypeVar("T")

EVENT_COLUMNS = (
    "id",
    "tenant_id",
    "type_id",
    "correlation_id",
    "entity_type",
    "entity_id",
    "domain",
    "ts",
    "create_time",
    "update_time",
    "etag",
    "severity",
    "code",
    "description",
    "source",
    "classification",
    "category",
    "ack_required",
    "acknowledged",
    "acknowledged_at",
    "acknowledged_by",
    "app_id",
    "internal",
    "payload_type",
    "payload_data",
    "custom",
)
# Reads return the feed position too (NULL for events stored before the feed existed).
_SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)}, seq FROM events"
# An insert names its columns; seq and idempotency_key follow the event's own.
_INSERT_COLUMNS = (*EVENT_COLUMNS, "seq", "idempotency_key")

_SORT_COLUMNS = {
    "timestamp": "ts",
    "severity": "severity",
    "code": "code",
    "type_id": "type_id",
    "entity_id": "entity_id",
    "create_time": "create_time",
    "update_time": "update_time",
}


def insert_events(cursor: Any, rows: Sequence[tuple[Any, ...]], postgres: bool) -> None:
    """Inserts event rows (in EVENT_COLUMNS order, no feed position) and keeps the newest-of-
    correlation flag right, in the caller's transaction: the list benchmark's bulk load."""
    columns = ", ".join(EVENT_COLUMNS)
    if postgres:
        from psycopg2.extras import execute_values

        execute_values(cursor, f"INSERT INTO events ({columns}) VALUES %s", rows, page_size=1000)
    else:
        placeholders = ", ".join(["?"] * len(EVENT_COLUMNS))
        cursor.executemany(f"INSERT INTO events ({columns}) VALUES ({placeholders})", rows)
    # Columns 1, 3, 5, 2: tenant, correlation id, entity id, type id.
    refresh_latest(cursor, ((r[1], r[3], r[5], r[2]) for r in rows if r[3]), postgres)


# Custom TIMESTAMP values are stored as {"$timestamp": microseconds}: numbers that compare
# as numbers, yet told apart from INTEGER values when read back. Field names start with a
# letter, so no field is ever called "$timestamp".
_TIMESTAMP_KEY = "$timestamp"


def _encode_custom(value: Any) -> Any:
    if isinstance(value, Instant):
        return {_TIMESTAMP_KEY: value.micros}
    raise TypeError(f"cannot store a custom field value of type {type(value).__name__}")


def _decode_custom(document: dict[str, Any]) -> Any:
    if len(document) == 1 and _TIMESTAMP_KEY in document:
        return Instant(document[_TIMESTAMP_KEY])
    return document


def event_row(e: Event) -> tuple[Any, ...]:
    source = None if e.source is None else json.dumps(e.source, ensure_ascii=False)
    custom = (
        json.dumps(e.custom_fields, ensure_ascii=False, default=_encode_custom)
        if e.custom_fields
        else None
    )
    payload_type = e.payload.content_type if e.payload else None
    payload_data = e.payload.data if e.payload else None
    return (
        e.id,
        e.tenant_id,
        e.type_id,
        e.correlation_id,
        e.entity_type,
        e.entity_id,
        e.domain,
        e.timestamp,
        e.create_time,
        e.update_time,
        e.etag,
        e.severity,
        e.code,
        e.description,
        source,
        e.classification,
        e.category,
        e.acknowledgement_required,
        e.acknowledged,
        e.acknowledged_at,
        e.acknowledged_by,
        e.app_id,
        e.internal,
        payload_type,
        payload_data,
        custom,
    )


def _event_from_row(r: Sequence[Any]) -> Event:
    payload = None if r[23] is None else Payload(r[23], bytes(r[24] or b""))
    return Event(
        id=r[0],
        tenant_id=r[1],
        type_id=r[2],
        correlation_id=r[3],
        entity_type=r[4],
        entity_id=r[5],
        domain=r[6],
        timestamp=r[7],
        create_time=r[8],
        update_time=r[9],
        etag=r[10],
        severity=r[11],
        code=r[12],
        description=r[13],
        source=None if r[14] is None else json.loads(r[14]),
        classification=r[15],
        category=r[16],
        acknowledgement_required=bool(r[17]),
        acknowledged=bool(r[18]),
        acknowledged_at=r[19],
        acknowledged_by=r[20],
        app_id=r[21],
        internal=bool(r[22]),
        payload=payload,
        custom_fields=json.loads(r[25], object_hook=_decode_custom) if r[25] else {},
        # Reads through _SELECT_EVENT carry the feed position (NULL before migration 7).
        seq=(r[26] or 0) if len(r) > 26 else 0,
    )


@dataclass(frozen=True, slots=True)
class _Insert:
    event: Event
    row: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _InsertBatch:
    """Events of one tenant, each with an optional idempotency key. Its result lists, per
    event, its new feed position (int) or the id already stored under its key (str)."""

    tenant_id: str
    events: Sequence[Event]
    rows: list[tuple[Any, ...]]
    keys: list[str | None]


@dataclass(frozen=True, slots=True)
class _Replace:
    row: tuple[Any, ...]
    expected_etag: int


class Store:
    """Owns the database, its reader threads and its writer; hands out repositories."""

    def __init__(self, url: str, readers: int = 4) -> None:
        self.url = url
        self.database = open_database(url)
        self.postgres = is_postgres(self.database)
        install_sqlite_functions(self.database)
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="db-reader")
        self.writer = GroupCommitWriter(
            self.database, self._apply_writes, on_commit=self._after_commit
        )
        self.events = EventRepository(self)
        self.keys = KeyRepository(self)
        # Called on the event loop with the events each commit created, in feed order.
        self.commit_listeners: list[Callable[[list[Event]], None]] = []
        self._feed_listeners: list[FeedListener] = []
        # Events inserted by callable writes, by the operation's id, until their commit.
        self._created_by: dict[int, list[Event]] = {}
        self._recording: list[Event] | None = None
        # Imported here: those repositories build on this module's row helpers.
        from persistence.devices import DeviceEventStore, RegistryStore

        self.registry = RegistryStore(self)
        self.device_events = DeviceEventStore(self)

    def migrate(self) -> list[int]:
        return migrate(self.database)

    def listen_for_commits(self, on_commit: Callable[[int], None]) -> None:
        """On PostgreSQL, calls `on_commit(newest seq)` from a thread whenever any replica
        commits new events (and once when listening starts); elsewhere nothing to do: one
        process owns an SQLite file, and its own commits reach its commit listeners."""
        if self.postgres:
            listener = FeedListener(self.url, on_commit)
            listener.start()
            self._feed_listeners.append(listener)

    async def read(self, work: Callable[[peewee.Database], T]) -> T:
        """Runs blocking database work on a reader thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run, work)

    def _run(self, work: Callable[[peewee.Database], T]) -> T:
        self.database.connect(reuse_if_open=True)
        return work(self.database)

    def run_sync(self, work: Callable[[peewee.Database], T]) -> T:
        """For commands and start-up, where no event loop runs."""
        with self.database.connection_context(), self.database.atomic():
            return work(self.database)

    def _apply_writes(self, cursor: Any, operations: Sequence[Any]) -> list[Any]:
        p = self.database.param
        results: list[Any] = [None] * len(operations)
        rows: list[tuple[Any, ...]] = []
        if any(isinstance(op, _Insert | _InsertBatch) for op in operations):
            # Taken before anything else: the feed_state row lock orders the transactions.
            cursor.execute("UPDATE feed_state SET last_seq = last_seq WHERE id = 1")
            cursor.execute("SELECT last_seq FROM feed_state WHERE id = 1")
            next_seq = int(cursor.fetchone()[0]) + 1
            for index, op in enumerate(operations):
                if isinstance(op, _Insert):
                    rows.append((*op.row, next_seq, None))
                    results[index] = next_seq
                    next_seq += 1
                elif isinstance(op, _InsertBatch):
                    existing = self._stored_keys(cursor, op.tenant_id, op.keys)
                    outcome: list[int | str] = []
                    for row, key, event in zip(op.rows, op.keys, op.events, strict=True):
                        if key is not None and key in existing:
                            outcome.append(existing[key])
                            continue
                        if key is not None:
                            existing[key] = event.id
                        rows.append((*row, next_seq, key))
                        outcome.append(next_seq)
                        next_seq += 1
                    results[index] = outcome
            if rows:
                self._insert_rows(cursor, rows)
                cursor.execute(
                    f"UPDATE feed_state SET last_seq = {p} WHERE id = 1", (next_seq - 1,)
                )
                if self.postgres:  # delivered at commit, to every replica that listens
                    cursor.execute("SELECT pg_notify(%s, %s)", (FEED_CHANNEL, str(next_seq - 1)))
        assignments = ", ".join(f"{c} = {p}" for c in EVENT_COLUMNS[1:])
        for index, op in enumerate(operations):
            if isinstance(op, _Replace):
                cursor.execute(
                    f"UPDATE events SET {assignments} WHERE id = {p} AND etag = {p}",
                    (*op.row[1:], op.row[0], op.expected_etag),
                )
                results[index] = cursor.rowcount == 1
            elif callable(op):
                # What the callable inserts through insert_event_rows is told to the commit
                # listeners once this attempt commits (see _after_commit).
                self._recording = self._created_by[id(op)] = []
                try:
                    results[index] = op(cursor)
                finally:
                    self._recording = None
        return results

    def insert_event_rows(self, cursor: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Inserts event rows (of `event_row`) for work submitted to the writer as a callable,
        such as a bulk job's chunk: they get the next feed positions in this transaction, and
        subscribers and the commit listeners learn of them once it commits."""
        if not rows:
            return
        first = self._claim_seqs(cursor, len(rows))
        numbered = [(*row, first + n, None) for n, row in enumerate(rows)]
        self._insert_rows(cursor, numbered)
        if self._recording is not None:
            self._recording.extend(_event_from_row(row) for row in numbered)

    def insert_event_row(
        self,
        cursor: Any,
        row: tuple[Any, ...],
        extra: dict[str, Any] | None = None,
        *,
        skip_conflicts: bool = False,
    ) -> bool:
        """Inserts one event row with more columns (`extra`), for writes that need their own
        statement, such as device reports with their report hash; with `skip_conflicts` a
        row that breaks a unique index is left out. True when the row was inserted. Like
        insert_event_rows, it gets the next feed position and reaches the commit listeners."""
        seq = self._claim_seqs(cursor, 1)
        extra = extra or {}
        columns = (*_INSERT_COLUMNS, *extra)
        placeholders = ", ".join([self.database.param] * len(columns))
        conflict = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
        cursor.execute(
            f"INSERT INTO events ({', '.join(columns)}) VALUES ({placeholders}){conflict}",
            (*row, seq, None, *extra.values()),
        )
        inserted = bool(cursor.rowcount == 1)
        if inserted and row[3]:  # a correlated event may be its correlation's new newest
            refresh_latest(cursor, [(row[1], row[3], row[5], row[2])], self.postgres)
        if inserted and self._recording is not None:
            self._recording.append(_event_from_row((*row, seq)))
        return inserted

    def _claim_seqs(self, cursor: Any, count: int) -> int:
        """Hands out `count` feed positions in this transaction; returns the first."""
        p = self.database.param
        cursor.execute(f"UPDATE feed_state SET last_seq = last_seq + {p} WHERE id = 1", (count,))
        cursor.execute("SELECT last_seq FROM feed_state WHERE id = 1")
        last = int(cursor.fetchone()[0])
        if self.postgres:
            cursor.execute("SELECT pg_notify(%s, %s)", (FEED_CHANNEL, str(last)))
        return last - count + 1

    def _insert_rows(self, cursor: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        columns = ", ".join(_INSERT_COLUMNS)
        if self.postgres:
            from psycopg2.extras import execute_values

            execute_values(
                cursor, f"INSERT INTO events ({columns}) VALUES %s", rows, page_size=1000
            )
        else:
            placeholders = ", ".join(["?"] * len(_INSERT_COLUMNS))
            cursor.executemany(f"INSERT INTO events ({columns}) VALUES ({placeholders})", rows)
        # Columns 1, 3, 5, 2: tenant, correlation id, entity id, type id.
        refresh_latest(cursor, ((r[1], r[3], r[5], r[2]) for r in rows if r[3]), self.postgres)

    def _stored_keys(self, cursor: Any, tenant_id: str, keys: list[str | None]) -> dict[str, str]:
        """Idempotency key -> id of the tenant's events already stored under those keys."""
        wanted = sorted({k for k in keys if k is not None})
        found: dict[str, str] = {}
        p = self.database.param
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            cursor.execute(
                f"SELECT idempotency_key, id FROM events WHERE tenant_id = {p} "
                f"AND idempotency_key IN ({', '.join([p] * len(chunk))})",
                (tenant_id, *chunk),
            )
            found.update(cursor.fetchall())
        return found

    def _after_commit(self, operations: Sequence[Any], results: Sequence[Any]) -> None:
        """Gives each committed event its feed position and tells the listeners."""
        committed: list[Event] = []
        for op, result in zip(operations, results, strict=True):
            if isinstance(op, _Insert) and isinstance(result, int):
                op.event.seq = result
                committed.append(op.event)
            elif isinstance(op, _InsertBatch) and isinstance(result, list):
                for event, outcome in zip(op.events, result, strict=True):
                    if isinstance(outcome, int):
                        event.seq = outcome
                        committed.append(event)
            elif callable(op):
                created = self._created_by.pop(id(op), [])
                if not isinstance(result, BaseException):
                    committed.extend(created)
        if committed:
            committed.sort(key=lambda e: e.seq)
            for listener in self.commit_listeners:
                listener(committed)

    def close(self) -> None:
        for listener in self._feed_listeners:
            listener.stop()
        self.writer.close()
        self._readers.shutdown(wait=True)
        self.database.close()


def scope_clause(
    principal: Principal, param: str, *, whole_tenant: bool = False, include_shared: bool = False
) -> tuple[str, list[Any]]:
    """The WHERE clause that keeps a query inside the principal's tenant and domain subtree,
    and, when asked, adds the events of entities other tenants share with it."""
    clause = f"tenant_id = {param}"
    args: list[Any] = [principal.tenant_id]
    if not whole_tenant and principal.domain != ROOT_DOMAIN:
        # A prefix compared by equality, not LIKE ('_' in a domain name is no wildcard) nor a
        # range: under a natural-language collation (ICU, en_US) a range lets /root/Sub1/x
        # into /root/sub1, while equality stays exact under every deterministic collation.
        subtree = principal.domain + "/"
        clause += f" AND (domain = {param} OR substr(domain, 1, {param}) = {param})"
        args += [principal.domain, len(subtree), subtree]
    if include_shared:
        clause = (
            f"(({clause}) OR EXISTS (SELECT 1 FROM entity_shares s "
            f"WHERE s.receiver_tenant_id = {param} AND s.owner_tenant_id = events.tenant_id "
            f"AND s.entity_id = events.entity_id))"
        )
        args.append(principal.tenant_id)
    return clause, args


def _filter_clauses(event_filter: EventFilter, p: str) -> tuple[str, list[Any]]:
    """SQL for EventFilter.matches, appended to a scoped WHERE clause."""
    sql, args = "", []
    if event_filter.domain != ROOT_DOMAIN:
        subtree = event_filter.domain + "/"
        sql += f" AND (domain = {p} OR substr(domain, 1, {p}) = {p})"
        args += [event_filter.domain, len(subtree), subtree]
    for column, values in (
        ("type_id", event_filter.type_ids),
        ("severity", event_filter.severities),
        ("classification", event_filter.classifications),
    ):
        if values:
            sql += f" AND {column} IN ({', '.join([p] * len(values))})"
            args += sorted(values)
    for column, value in (
        ("entity_type", event_filter.entity_type),
        ("entity_id", event_filter.entity_id),
    ):
        if value:
            sql += f" AND {column} = {p}"
            args.append(value)
    return sql, args


class EventRepository:
    """Events, always read and written within a principal's scope."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def insert(self, event: Event) -> None:
        await self._store.writer.submit(_Insert(event, event_row(event)))

    async def insert_batch(
        self, principal: Principal, events: Sequence[tuple[Event, str | None]]
    ) -> builtins.list[str | None]:
        batch = _InsertBatch(
            principal.tenant_id,
            [event for event, _ in events],
            [event_row(event) for event, _ in events],
            [key for _, key in events],
        )
        if any(event.tenant_id != principal.tenant_id for event in batch.events):
            raise ValueError("a batch holds the events of the calling tenant only")
        outcome: list[int | str] = await self._store.writer.submit(batch)
        return [None if isinstance(o, int) else o for o in outcome]

    async def latest_seq(self) -> int:
        return await self._store.read(
            lambda db: int(
                db.execute_sql("SELECT last_seq FROM feed_state WHERE id = 1").fetchone()[0]
            )
        )

    async def committed_after(self, after: int, limit: int) -> builtins.list[Event]:
        def work(db: peewee.Database) -> builtins.list[Event]:
            p = db.param
            rows = db.execute_sql(
                f"{_SELECT_EVENT} WHERE seq > {p} ORDER BY seq LIMIT {p}", (after, limit)
            ).fetchall()
            return [_event_from_row(r) for r in rows]

        return await self._store.read(work)

    async def feed_page(
        self, principal: Principal, event_filter: EventFilter, after: int, upto: int, limit: int
    ) -> builtins.list[Event]:
        def work(db: peewee.Database) -> builtins.list[Event]:
            p = db.param
            where, args = scope_clause(principal, p)
            clauses, more = _filter_clauses(event_filter, p)
            rows = db.execute_sql(
                f"{_SELECT_EVENT} WHERE {where} AND seq > {p} AND seq <= {p}{clauses} "
                f"ORDER BY seq LIMIT {p}",
                (*args, after, upto, *more, limit),
            ).fetchall()
            return [_event_from_row(r) for r in rows]

        return await self._store.read(work)

    async def replace(self, event: Event, expected_etag: int) -> bool:
        replaced: bool = await self._store.writer.submit(_Replace(event_row(event), expected_etag))
        return replaced

    async def get(
        self,
        principal: Principal,
        event_id: str,
        *,
        whole_tenant: bool = False,
        include_shared: bool = False,
    ) -> Event | None:
        return await self._store.read(
            functools.partial(self._get, principal, event_id, whole_tenant, include_shared)
        )

    def _get(
        self,
        principal: Principal,
        event_id: str,
        whole_tenant: bool,
        include_shared: bool,
        db: peewee.Database,
    ) -> Event | None:
        where, args = scope_clause(
            principal, db.param, whole_tenant=whole_tenant, include_shared=include_shared
        )
        row = db.execute_sql(
            f"{_SELECT_EVENT} WHERE id = {db.param} AND {where}", (event_id, *args)
        ).fetchone()
        return None if row is None else _event_from_row(row)

    async def list(self, principal: Principal, query: EventQuery) -> tuple[list[Event], int]:
        return await self._store.read(functools.partial(self._list, principal, query))

    def _list(
        self, principal: Principal, query: EventQuery, db: peewee.Database
    ) -> tuple[builtins.list[Event], int]:
        where, sql, args = list_sql(principal, query, self._store.postgres, db.param)
        rows = db.execute_sql(sql, args).fetchall()
        count_where, count_args = where
        total = db.execute_sql(f"SELECT COUNT(*) FROM events WHERE {count_where}", count_args)
        return [_event_from_row(r) for r in rows], total.fetchone()[0]

    async def find(self, principal: Principal, request: q.FindRequest) -> q.FindResult:
        """Runs a find request inside the principal's scope, which is ANDed around whatever
        the query says; `_scope` is the one place that decides what a principal may read,
        including the events of entities shared with its tenant when the request asks."""
        return await self._store.read(functools.partial(self._find, principal, request))

    def _find(
        self, principal: Principal, request: q.FindRequest, db: peewee.Database
    ) -> q.FindResult:
        postgres = self._store.postgres

        def statement() -> tuple[FindSql, str]:
            sql = FindSql(postgres, db.param)
            scope, args = scope_clause(principal, db.param, include_shared=request.include_shared)
            sql.args.extend(args)
            return sql, f"({scope}) AND ({sql.where(request.query)})"

        sql, where = statement()
        total = db.execute_sql(f"SELECT COUNT(*) FROM events WHERE {where}", sql.args).fetchone()[0]
        events: builtins.list[Event] = []
        if request.size and total > request.offset:
            order = sql.order_by(request.sort)
            page = f"LIMIT {int(request.size)} OFFSET {int(request.offset)}"
            rows = db.execute_sql(
                f"{_SELECT_EVENT} WHERE {where} ORDER BY {order} {page}", sql.args
            ).fetchall()
            events = [_event_from_row(r) for r in rows]
        aggregations = {}
        for aggregation in request.aggregations:
            sql, where = statement()
            aggregations[aggregation.name] = _aggregate(db, sql, where, aggregation, total)
        return q.FindResult(total, events, aggregations)


# Fields every event has, so that the events holding one are all the matching events.
_ALWAYS_PRESENT = frozenset(
    {"id", "type_id", "domain", "timestamp", "create_time", "update_time", "severity", "etag"}
    | {"acknowledgement_required", "acknowledged", "internal"}
)


def _aggregate(
    db: peewee.Database, sql: FindSql, where: str, aggregation: q.Aggregation, total: int
) -> q.AggregationResult:
    """One aggregation as one GROUP BY statement (two for terms: its top buckets and the
    count of the rest); `sql` already holds the parameters of `where`."""
    if isinstance(aggregation, q.Metric):
        value = db.execute_sql(
            f"SELECT {sql.metric(aggregation)} FROM events WHERE {where}", sql.args
        ).fetchone()[0]
        return q.AggregationResult(value=value)
    if isinstance(aggregation, q.RangeAgg):
        number = sql.number(aggregation.field)
        columns = []
        for bucket in aggregation.ranges:
            condition = " AND ".join(
                [f"{number} IS NOT NULL"]
                + ([f"{number} >= {bucket.start!r}"] if bucket.start is not None else [])
                + ([f"{number} < {bucket.end!r}"] if bucket.end is not None else [])
            )
            columns.append(f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)")
            columns += [sql.metric(m, condition) for m in aggregation.metrics]
        row = db.execute_sql(
            f"SELECT {', '.join(columns)} FROM events WHERE {where}", sql.args
        ).fetchone()
        width = 1 + len(aggregation.metrics)
        buckets = []
        for index in range(len(aggregation.ranges)):
            values = row[index * width : (index + 1) * width]
            metrics = {m.name: v for m, v in zip(aggregation.metrics, values[1:], strict=True)}
            buckets.append(q.Bucket(index, int(values[0] or 0), metrics))
        return q.AggregationResult(buckets=buckets)
    if isinstance(aggregation, q.TermsAgg):
        key = sql.group_value(aggregation.field)
    else:
        key = sql.bucket_index(aggregation)
    metric_columns = "".join(f", {sql.metric(m)}" for m in aggregation.metrics)
    grouped = (
        f"SELECT {key} AS bucket_key, COUNT(*) AS doc_count{metric_columns} FROM events "
        f"WHERE {where} AND {sql.present(aggregation.field, key)} GROUP BY {key}"
    )
    if isinstance(aggregation, q.TermsAgg):
        direction = "DESC" if aggregation.descending else "ASC"
        by_key = sql.key_order(
            aggregation.field, "bucket_key", direction if aggregation.by_key else "ASC"
        )
        order = by_key if aggregation.by_key else [f"doc_count {direction}", *by_key]
        rows = db.execute_sql(
            f"SELECT * FROM ({grouped}) AS g WHERE doc_count >= {int(aggregation.min_doc_count)} "
            f"ORDER BY {', '.join(order)} LIMIT {int(aggregation.size)}",
            sql.args,
        ).fetchall()
    else:
        rows = db.execute_sql(grouped, sql.args).fetchall()
    names = [m.name for m in aggregation.metrics]
    json_keys = isinstance(aggregation, q.TermsAgg) and aggregation.field.kind is q.Kind.JSON
    buckets = [
        q.Bucket(
            decode_group_value(sql.postgres, r[0]) if json_keys else r[0],
            int(r[1]),
            dict(zip(names, r[2:], strict=True)),
        )
        for r in rows
    ]
    other = 0
    if isinstance(aggregation, q.TermsAgg):
        counted = total
        if aggregation.field.attribute not in _ALWAYS_PRESENT:
            counted = db.execute_sql(
                f"SELECT COUNT(*) FROM events WHERE {where} "
                f"AND {sql.present(aggregation.field, key)}",
                sql.args,
            ).fetchone()[0]
        other = int(counted) - sum(b.doc_count for b in buckets)
    for child in aggregation.children:
        _child_buckets(db, sql, where, aggregation, key, child, buckets)
    return q.AggregationResult(buckets=buckets, other_count=other)


def _bucket_identity(parent: q.TermsAgg | q.HistogramAgg, postgres: bool, raw: Any) -> Any:
    """A parent bucket's key as a dict key (True and 1 kept apart)."""
    if isinstance(parent, q.HistogramAgg):
        try:
            return ("index", int(raw))
        except (OverflowError, ValueError):
            return ("index", raw)
    if parent.field.kind is q.Kind.JSON:
        raw = decode_group_value(postgres, raw)
    return (type(raw).__name__, raw)


def _child_buckets(
    db: peewee.Database,
    sql: FindSql,
    where: str,
    parent: q.TermsAgg | q.HistogramAgg,
    parent_key: str,
    child: q.TermsAgg | q.HistogramAgg,
    buckets: list[q.Bucket],
) -> None:
    """Fills one bucket sub-aggregation of every parent bucket with one GROUP BY over both
    keys; a terms child keeps its top buckets per parent with ROW_NUMBER()."""
    by_identity = {_bucket_identity(parent, sql.postgres, b.key): b for b in buckets}
    terms = isinstance(child, q.TermsAgg)
    key = sql.group_value(child.field) if terms else sql.bucket_index(child)  # type: ignore[arg-type]
    present = f"{sql.present(parent.field, parent_key)} AND {sql.present(child.field, key)}"
    grouped = f"FROM events WHERE {where} AND {present}"
    json_keys = isinstance(child, q.TermsAgg) and child.field.kind is q.Kind.JSON
    results: dict[Any, q.AggregationResult] = {}
    if isinstance(child, q.TermsAgg):
        direction = "DESC" if child.descending else "ASC"
        by_key = sql.key_order(child.field, key, direction if child.by_key else "ASC")
        order = by_key if child.by_key else [f"COUNT(*) {direction}", *by_key]
        rows = db.execute_sql(
            f"SELECT * FROM (SELECT {parent_key} AS parent_key, {key} AS bucket_key, "
            f"COUNT(*) AS doc_count, ROW_NUMBER() OVER (PARTITION BY {parent_key} "
            f"ORDER BY {', '.join(order)}) AS bucket_rank {grouped} "
            f"GROUP BY {parent_key}, {key} HAVING COUNT(*) >= {int(child.min_doc_count)}) AS g "
            f"WHERE bucket_rank <= {int(child.size)} ORDER BY parent_key, bucket_rank",
            sql.args,
        ).fetchall()
        counted = dict(
            db.execute_sql(
                f"SELECT {parent_key}, COUNT(*) {grouped} GROUP BY {parent_key}", sql.args
            ).fetchall()
        )
    else:
        rows = db.execute_sql(
            f"SELECT {parent_key}, {key}, COUNT(*) {grouped} GROUP BY {parent_key}, {key}",
            sql.args,
        ).fetchall()
        counted = {}
    for row in rows:
        identity = _bucket_identity(parent, sql.postgres, row[0])
        result = results.setdefault(identity, q.AggregationResult())
        value = decode_group_value(sql.postgres, row[1]) if json_keys else row[1]
        result.buckets.append(q.Bucket(value, int(row[2])))
    for raw, count in counted.items():
        identity = _bucket_identity(parent, sql.postgres, raw)
        result = results.setdefault(identity, q.AggregationResult())
        result.other_count = int(count) - sum(b.doc_count for b in result.buckets)
    for identity, bucket in by_identity.items():
        bucket.children[child.name] = results.get(identity, q.AggregationResult())


def list_sql(
    principal: Principal, query: EventQuery, postgres: bool, param: str
) -> tuple[tuple[str, list[Any]], str, list[Any]]:
    """The WHERE clause (and its arguments) that counts a list, and the page's own SELECT."""
    where, args = scope_clause(principal, param, include_shared=query.include_shared)
    builder = SqlBuilder(postgres, param)
    clauses = [where]
    if not query.history:
        clauses.append("latest = TRUE")
    if query.condition is not None:
        clauses.append(builder.condition(query.condition))
    count_where = " AND ".join(clauses)
    count_args = [*args, *builder.args]
    if query.after is not None:
        clauses.append(builder.after(query.sort, query.after))
    sql = (
        f"{_SELECT_EVENT} WHERE {' AND '.join(clauses)} ORDER BY {builder.order_by(query.sort)} "
        f"LIMIT {builder.bind(query.limit)} OFFSET {builder.bind(query.offset)}"
    )
    return (count_where, count_args), sql, [*args, *builder.args]


API_KEY_PREFIX = "emk"


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is as strong as a slow hash here, and
    # it lets a key be found by its hash with one indexed lookup.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: `secret` is shown once and never stored."""

    key_id: str
    tenant_id: str
    name: str
    role: Role
    domain: str
    secret: str


class KeyRepository:
    """Tenants and their API keys (stored hashed)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def create_tenant(self, tenant_id: str, name: str) -> bool:
        """Creates the tenant; False when it already exists."""

        def work(db: peewee.Database) -> bool:
            p = db.param
            if db.execute_sql(f"SELECT 1 FROM tenants WHERE id = {p}", (tenant_id,)).fetchone():
                return False
            db.execute_sql(
                f"INSERT INTO tenants VALUES ({p}, {p}, {p})",
                (tenant_id, name, time.time_ns() // 1000),
            )
            return True

        return self._store.run_sync(work)

    def tenant_exists(self, tenant_id: str) -> bool:
        return self._store.run_sync(
            lambda db: (
                db.execute_sql(
                    f"SELECT 1 FROM tenants WHERE id = {db.param}", (tenant_id,)
                ).fetchone()
                is not None
            )
        )

    def create_key(self, tenant_id: str, name: str, role: Role, domain: str) -> IssuedKey:
        key_id = secrets.token_hex(8)
        secret = f"{API_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"

        def work(db: peewee.Database) -> None:
            p = db.param
            db.execute_sql(
                f"INSERT INTO api_keys VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, NULL)",
                (
                    key_id,
                    tenant_id,
                    name,
                    hash_api_key(secret),
                    int(role),
                    domain,
                    time.time_ns() // 1000,
                ),
            )

        self._store.run_sync(work)
        return IssuedKey(key_id, tenant_id, name, role, domain, secret)

    def revoke_key(self, key_id: str) -> bool:
        def work(db: peewee.Database) -> bool:
            cursor = db.execute_sql(
                f"UPDATE api_keys SET revoke_time = {db.param} "
                f"WHERE id = {db.param} AND revoke_time IS NULL",
                (time.time_ns() // 1000, key_id),
            )
            return bool(cursor.rowcount == 1)

        return self._store.run_sync(work)

    def list_keys(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        def work(db: peewee.Database) -> list[dict[str, Any]]:
            sql = "SELECT id, tenant_id, name, role, domain, create_time, revoke_time FROM api_keys"
            args: tuple[Any, ...] = ()
            if tenant_id:
                sql, args = sql + f" WHERE tenant_id = {db.param}", (tenant_id,)
            names = ("id", "tenant_id", "name", "role", "domain", "create_time", "revoke_time")
            return [
                dict(zip(names, row, strict=True))
                for row in db.execute_sql(sql + " ORDER BY create_time", args)
            ]

        return self._store.run_sync(work)

    async def principal_for(self, secret: str) -> Principal | None:
        """The principal of an active key, or None."""
        key_hash = hash_api_key(secret)

        def work(db: peewee.Database) -> Principal | None:
            row = db.execute_sql(
                f"SELECT id, tenant_id, name, role, domain FROM api_keys "
                f"WHERE key_hash = {db.param} AND revoke_time IS NULL",
                (key_hash,),
            ).fetchone()
            if row is None:
                return None
            return Principal(
                tenant_id=row[1], key_id=row[0], name=row[2], role=Role(row[3]), domain=row[4]
            )

        return await self._store.read(work)
