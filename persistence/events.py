"""The event repository: events read and written within a principal's scope."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import peewee

from persistence import prepared
from persistence.find_run import run_find
from persistence.queries import SqlBuilder
from persistence.rows import SELECT_EVENT, event_from_row, event_row
from persistence.transitions import transitions_after, transitions_page
from persistence.writes import FeedItem, Folded, Insert, InsertBatch, Replace, StatusChange
from service.domain.access import Principal
from service.domain.alarm_status import Transition
from service.domain.events import Event, EventQuery
from service.domain.find_answer import FindResult
from service.domain.find_query import FindRequest
from service.domain.live import EventFilter

if TYPE_CHECKING:
    from persistence.store import Store


class EventRepository:
    """Events, always read and written within a principal's scope."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def insert(
        self, event: Event, dedup_key: str | None = None, *, fold_only: bool = False
    ) -> Event | None:
        result = await self._store.writer.submit(
            Insert(event, event_row(event), dedup_key, fold_only)
        )
        return result.alarm if isinstance(result, Folded) else None

    async def insert_batch(
        self,
        principal: Principal,
        events: Sequence[tuple[Event, str | None]],
        dedup_keys: Sequence[str | None] | None = None,
        fold_only: Sequence[bool] | None = None,
    ) -> list[str | Event | None]:
        batch = InsertBatch(
            principal.tenant_id,
            [event for event, _ in events],
            [event_row(event) for event, _ in events],
            [key for _, key in events],
            list(dedup_keys) if dedup_keys is not None else None,
            list(fold_only) if fold_only is not None else None,
        )
        if any(event.tenant_id != principal.tenant_id for event in batch.events):
            raise ValueError("a batch holds the events of the calling tenant only")
        outcome: list[int | str | Folded | None] = await self._store.writer.submit(batch)
        return [
            o.alarm if isinstance(o, Folded) else None if isinstance(o, int) else o for o in outcome
        ]

    async def latest_seq(self) -> int:
        return await self._store.read(
            lambda db: int(
                db.execute_sql("SELECT last_seq FROM feed_state WHERE id = 1").fetchone()[0]
            )
        )

    async def committed_after(self, after: int, limit: int) -> list[FeedItem]:
        def work(db: peewee.Database) -> list[FeedItem]:
            p = db.param
            rows = db.execute_sql(
                f"{SELECT_EVENT} WHERE seq > {p} ORDER BY seq LIMIT {p}", (after, limit)
            ).fetchall()
            events = [event_from_row(r) for r in rows]
            return _merged(events, transitions_after(db, after, limit))[:limit]

        return await self._store.read(work)

    async def feed_page(
        self, principal: Principal, event_filter: EventFilter, after: int, upto: int, limit: int
    ) -> list[FeedItem]:
        def work(db: peewee.Database) -> list[FeedItem]:
            sql = SqlBuilder(self._store.postgres, db.param)
            where = (
                f"{sql.scope(principal)} AND seq > {sql.bind(after)} AND seq <= {sql.bind(upto)}"
            )
            if event_filter.condition is not None:
                where += f" AND {sql.condition(event_filter.condition)}"
            rows = db.execute_sql(
                f"{SELECT_EVENT} WHERE {where} ORDER BY seq LIMIT {sql.bind(limit)}", sql.args
            ).fetchall()
            transitions = transitions_page(
                db, self._store.postgres, principal, event_filter.condition, after, upto, limit
            )
            return _merged([event_from_row(r) for r in rows], transitions)[:limit]

        return await self._store.read(work)

    async def replace(self, event: Event, expected_etag: int) -> bool:
        replaced: bool = await self._store.writer.submit(Replace(event_row(event), expected_etag))
        return replaced

    async def change_status(self, event: Event, expected_etag: int, transition: Transition) -> bool:
        changed: bool = await self._store.writer.submit(
            StatusChange(event_row(event), expected_etag, transition)
        )
        return changed

    async def get(
        self,
        principal: Principal,
        event_id: str,
        *,
        whole_tenant: bool = False,
        include_shared: bool = False,
    ) -> Event | None:
        return await self._store.read_point(
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
        statement, args = point_sql(
            principal, event_id, self._store.postgres, db.param, whole_tenant, include_shared
        )
        row = db.execute_sql(statement, args).fetchone()
        return None if row is None else event_from_row(row)

    async def query(self, principal: Principal, query: EventQuery) -> tuple[list[Event], int]:
        return await self._store.read(functools.partial(self._query, principal, query))

    def _query(
        self, principal: Principal, query: EventQuery, db: peewee.Database
    ) -> tuple[list[Event], int]:
        indexes = self._store.custom_indexes
        columns = indexes.columns(db)
        try:
            return self._list(principal, query, db, columns)
        except peewee.ProgrammingError:
            # A column dropped since it was read (another process's upkeep): read them again.
            if columns == indexes.refresh_columns(db):
                raise
            return self._list(principal, query, db, indexes.columns(db))

    def _list(
        self,
        principal: Principal,
        query: EventQuery,
        db: peewee.Database,
        columns: Mapping[str, str],
    ) -> tuple[list[Event], int]:
        postgres = self._store.postgres
        run = functools.partial(prepared.execute, db) if postgres else db.execute_sql
        where, sql, args = list_sql(principal, query, postgres, db.param, columns)
        rows = run(sql, args).fetchall()
        if not query.counted:
            return [event_from_row(r) for r in rows], 0
        count_where, count_args = where
        counted = f"SELECT COUNT(*) FROM events WHERE {count_where}"
        if query.count_cap is not None:
            # Reads no more than cap + 1 index entries, however many match.
            counted = (
                f"SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE {count_where} "
                f"LIMIT {int(query.count_cap) + 1}) AS capped"
            )
        total = run(counted, count_args)
        return [event_from_row(r) for r in rows], total.fetchone()[0]

    async def find(self, principal: Principal, request: FindRequest) -> FindResult:
        """Runs a find request inside the principal's scope, which is ANDed around whatever
        the query says; `SqlBuilder.scope` is the one place that decides what a principal may read,
        including the events of entities shared with its tenant when the request asks."""
        return await self._store.read(
            functools.partial(run_find, principal, request, self._store.postgres)
        )


def _merged(events: list[Event], transitions: list[Transition]) -> list[FeedItem]:
    """Creations and transitions in feed order. Each list holds its first `limit` positions
    after a cursor; the merge is complete up to the end of the shorter full one, which is
    where the callers' pages end (`limit` items at most)."""
    items: list[FeedItem] = [*events, *transitions]
    items.sort(key=lambda item: item.seq)
    return items


def point_sql(
    principal: Principal,
    event_id: str,
    postgres: bool,
    param: str,
    whole_tenant: bool = False,
    include_shared: bool = False,
) -> tuple[str, list[Any]]:
    """The SELECT of one event by its id, inside the principal's scope, and its arguments."""
    sql = SqlBuilder(postgres, param)
    by_id = f"id = {sql.bind(event_id)}"
    scope = sql.scope(principal, whole_tenant=whole_tenant, include_shared=include_shared)
    if not postgres:
        return f"{SELECT_EVENT} WHERE {by_id} AND {scope}", sql.args
    # The row is found by its id alone, through each partition's primary key, and the scope is
    # checked on it. Given `tenant_id = ... AND id = ...`, a partition without statistics (new,
    # or never analyzed) may be planned onto a tenant index that holds id as a later column: a
    # walk over all of the tenant's events (4.5 ms at 20,000). Not prepared, unlike the lists:
    # a generic plan made while a partition was nearly empty (a sequential scan) would stay
    # until the partition is analyzed.
    statement = (
        f"WITH events AS MATERIALIZED (SELECT * FROM events WHERE {by_id}) "
        f"{SELECT_EVENT} WHERE {scope}"
    )
    return statement, sql.args


def list_sql(
    principal: Principal,
    query: EventQuery,
    postgres: bool,
    param: str,
    columns: Mapping[str, str] | None = None,
) -> tuple[tuple[str, list[Any]], str, list[Any]]:
    """The WHERE clause (and its arguments) that counts a list, and the page's own SELECT;
    `columns`: the ready columns of filterable custom fields (SqlBuilder)."""
    builder = SqlBuilder(postgres, param, columns)
    clauses = [builder.scope(principal, include_shared=query.include_shared)]
    if not query.history:
        clauses.append("latest = TRUE")
    if query.condition is not None:
        clauses.append(builder.condition(query.condition))
    count_where = " AND ".join(clauses)
    count_args = list(builder.args)
    if query.after is not None:
        clauses.append(builder.after(query.sort, query.after))
    sql = (
        f"{SELECT_EVENT} WHERE {' AND '.join(clauses)} ORDER BY {builder.order_by(query.sort)} "
        # The server's own numbers, written in, so that a prepared statement's generic plan
        # knows how many rows it is for (persistence/prepared.py).
        f"LIMIT {int(query.limit)} OFFSET {int(query.offset)}"
    )
    return (count_where, count_args), sql, builder.args
