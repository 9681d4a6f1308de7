"""Bulk jobs in the database: their requests, leases, progress and per-event results.

Every change to a running job goes through the group-commit writer and checks that this
process still holds the job's lease, in the same transaction as the events it stores or
deletes; so a job is never run twice at once, and its progress is exactly what is stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import peewee

from persistence.queries import SqlBuilder
from persistence.rows import SELECT_EVENT, event_from_row, event_row
from persistence.store import Store
from persistence.upkeep import DELETED_RETURNING, forget_deleted
from persistence.writes import Folded
from service.domain.access import Principal, Role
from service.domain.alarm_status import Transition
from service.domain.conditions import Condition
from service.domain.events import Event, now_us
from service.domain.jobs import (
    RESULT_DEDUPLICATED,
    Job,
    JobKind,
    JobResult,
    JobState,
    LeaseLost,
)

_JOB_COLUMNS = (
    "id",
    "tenant_id",
    "kind",
    "state",
    "owner_key_id",
    "owner_name",
    "owner_role",
    "owner_domain",
    "request",
    "total",
    "done",
    "failed",
    "lease_owner",
    "lease_until",
    "create_time",
    "update_time",
    "expire_time",
)
_SELECT_JOB = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
_RUNNABLE = (JobState.ACCEPTED.value, JobState.IN_PROGRESS.value)


def _job_from_row(row: Any) -> Job:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    owner = Principal(
        tenant_id=values["tenant_id"],
        key_id=values["owner_key_id"],
        name=values["owner_name"],
        role=Role(values["owner_role"]),
        domain=values["owner_domain"],
    )
    return Job(
        id=values["id"],
        tenant_id=values["tenant_id"],
        kind=JobKind(values["kind"]),
        state=JobState(values["state"]),
        owner=owner,
        request=json.loads(values["request"]),
        total=values["total"],
        done=values["done"],
        failed=values["failed"],
        create_time=values["create_time"],
        update_time=values["update_time"],
        expire_time=values["expire_time"],
    )


T = TypeVar("T")


class JobRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def _p(self) -> str:
        return str(self._store.database.param)

    async def insert(self, job: Job) -> None:
        p = self._p
        row = (
            job.id,
            job.tenant_id,
            job.kind.value,
            job.state.value,
            job.owner.key_id,
            job.owner.name,
            int(job.owner.role),
            job.owner.domain,
            json.dumps(job.request, ensure_ascii=False),
            job.total,
            0,
            0,
            None,
            0,
            job.create_time,
            job.update_time,
            None,
        )

        def write(cursor: Any) -> None:
            cursor.execute(f"INSERT INTO jobs VALUES ({', '.join([p] * len(row))})", row)

        await self._store.writer.submit(write)

    async def unfinished(self) -> list[tuple[str, str, int, int, int]]:
        """Every tenant's unfinished jobs by kind and state: (kind, state, jobs, events
        done, events in total); for the operators' metrics, never shown to a tenant."""

        def read(db: peewee.Database) -> list[tuple[str, str, int, int, int]]:
            p = db.param
            rows = db.execute_sql(
                f"SELECT kind, state, COUNT(*), COALESCE(SUM(done), 0), COALESCE(SUM(total), 0) "
                f"FROM jobs WHERE state IN ({p}, {p}) GROUP BY kind, state",
                _RUNNABLE,
            ).fetchall()
            return [(str(k), str(s), int(n), int(d), int(t)) for k, s, n, d, t in rows]

        return await self._store.read(read)

    async def get(self, principal: Principal, kind: JobKind, job_id: str) -> Job | None:
        def read(db: peewee.Database) -> Job | None:
            p = db.param
            row = db.execute_sql(
                f"{_SELECT_JOB} WHERE id = {p} AND tenant_id = {p} AND kind = {p}",
                (job_id, principal.tenant_id, kind.value),
            ).fetchone()
            if row is None:
                return None
            job = _job_from_row(row)
            job.results = [
                JobResult(*r)
                for r in db.execute_sql(
                    f"SELECT item, result_code, event_id, error_message FROM job_results "
                    f"WHERE job_id = {p} ORDER BY item",
                    (job_id,),
                )
            ]
            return job

        return await self._store.read(read)

    async def claim(self, owner: str, lease_us: int) -> Job | None:
        """Takes the oldest runnable job whose lease is free or ran out."""
        p, postgres = self._p, self._store.postgres
        # On PostgreSQL, SKIP LOCKED lets replicas claim different jobs at once; SQLite has
        # one writer at a time, which serialises claims by itself.
        lock = " FOR UPDATE SKIP LOCKED" if postgres else ""

        def write(cursor: Any) -> Job | None:
            now = now_us()
            cursor.execute(
                f"UPDATE jobs SET lease_owner = {p}, lease_until = {p}, state = {p}, "
                f"update_time = {p} WHERE id = (SELECT id FROM jobs WHERE state IN ({p}, {p}) "
                f"AND lease_until < {p} ORDER BY create_time LIMIT 1{lock}) "
                f"RETURNING {', '.join(_JOB_COLUMNS)}",
                (owner, now + lease_us, JobState.IN_PROGRESS.value, now, *_RUNNABLE, now),
            )
            row = cursor.fetchone()
            return None if row is None else _job_from_row(row)

        claimed: Job | None = await self._store.writer.submit(write)
        return claimed

    def _renew(
        self, cursor: Any, job: Job, owner: str, lease_us: int, done: int, failed: int
    ) -> None:
        p, now = self._p, now_us()
        cursor.execute(
            f"UPDATE jobs SET done = {p}, failed = {p}, total = {p}, lease_until = {p}, "
            f"update_time = {p} WHERE id = {p} AND lease_owner = {p} AND state = {p}",
            (
                done,
                failed,
                job.total,
                now + lease_us,
                now,
                job.id,
                owner,
                JobState.IN_PROGRESS.value,
            ),
        )
        if cursor.rowcount != 1:
            raise LeaseLost(f"job {job.id} is no longer leased to {owner}")

    async def commit_chunk(
        self,
        job: Job,
        owner: str,
        lease_us: int,
        events: list[tuple[Event, str | None]],
        results: list[JobResult],
    ) -> None:
        """Stores a chunk's events (each with its de-duplication key, service/domain/alarms.py),
        its results and the new progress in one transaction. The result of an event counted
        into an open alarm becomes RESULT_DEDUPLICATED with the alarm's id."""
        p = self._p
        failed = job.failed + sum(1 for r in results if not r.ok)
        by_event = {r.event_id: r for r in results if r.event_id is not None}

        def write(cursor: Any) -> None:
            self._renew(cursor, job, owner, lease_us, job.done + len(results), failed)
            outcomes = self._store.writes.insert_events(cursor, events)
            for (event, _), outcome in zip(events, outcomes, strict=True):
                if isinstance(outcome, Folded):
                    result = by_event[event.id]
                    result.result_code, result.event_id = RESULT_DEDUPLICATED, outcome.alarm.id
            cursor.executemany(
                f"INSERT INTO job_results VALUES ({p}, {p}, {p}, {p}, {p})",
                [(job.id, r.item, r.result_code, r.event_id, r.error_message) for r in results],
            )

        await self._store.writer.submit(write)

    async def delete_batch(
        self, job: Job, owner: str, lease_us: int, condition: Condition | None, limit: int
    ) -> int:
        """Deletes up to `limit` matching events of the job's scope with the progress update."""
        p = self._p
        clause, args = _matching(job.owner, condition, self._store.postgres, p, self._columns())

        def write(cursor: Any) -> int:
            # RETURNING names what the side tables must forget (see forget_deleted).
            cursor.execute(
                f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE {clause} LIMIT {p}) "
                f"{DELETED_RETURNING}",
                (*args, limit),
            )
            gone = cursor.fetchall()
            deleted = len(gone)
            forget_deleted(cursor, gone, self._store.postgres)
            self._renew(cursor, job, owner, lease_us, job.done + deleted, 0)
            return deleted

        deleted: int = await self._submit(write)
        return deleted

    async def change_status_batch(
        self,
        job: Job,
        owner: str,
        lease_us: int,
        condition: Condition | None,
        change: Callable[[Event], tuple[Event, Transition]],
        limit: int,
    ) -> tuple[int, int]:
        """Changes up to `limit` matching events of the job's scope as `change` says, records
        their transitions and the job's progress, in one transaction; (events read, events
        changed). An event changed concurrently since it was read keeps that change and is
        read again by the next batch if it still matches."""
        clause, args = _matching(
            job.owner, condition, self._store.postgres, self._p, self._columns()
        )
        writes = self._store.writes

        def write(cursor: Any) -> tuple[int, int]:
            # The feed counter's lock first, as every transaction that records transitions.
            writes.lock_feed(cursor)
            cursor.execute(
                f"{SELECT_EVENT} WHERE {clause} ORDER BY ts, id LIMIT {self._p}", (*args, limit)
            )
            found = [event_from_row(row) for row in cursor.fetchall()]
            transitions = []
            for stored in found:
                updated, transition = change(stored)
                if writes.replace_row(cursor, event_row(updated), stored.etag):
                    transitions.append(transition)
            writes.record_transitions(cursor, transitions)
            self._renew(cursor, job, owner, lease_us, job.done + len(transitions), 0)
            return len(found), len(transitions)

        outcome: tuple[int, int] = await self._submit(write)
        return outcome

    def _columns(self) -> dict[str, str]:
        """The ready custom field columns as last read (count_matching reads them again)."""
        return self._store.custom_indexes.known_columns()

    async def _submit(self, write: Callable[[Any], T]) -> T:
        try:
            return await self._store.writer.submit(write)
        except peewee.ProgrammingError:
            # Perhaps a column dropped since it was read: the runner's retry reads the JSON.
            self._store.custom_indexes.forget_columns()
            raise

    async def count_matching(self, principal: Principal, condition: Condition | None) -> int:
        indexes = self._store.custom_indexes

        def read(db: peewee.Database) -> int:
            columns = indexes.columns(db)
            clause, args = _matching(principal, condition, self._store.postgres, db.param, columns)
            try:
                return int(
                    db.execute_sql(f"SELECT COUNT(*) FROM events WHERE {clause}", args).fetchone()[
                        0
                    ]
                )
            except peewee.ProgrammingError:
                indexes.forget_columns()
                raise

        return await self._store.read(read)

    async def finish(
        self, job: Job, owner: str, state: JobState, audit: Event, kept_us: int
    ) -> None:
        """Ends the job and records its audit event, together; the status is purged after
        `kept_us` (Siemens keeps it for 2 hours, we keep it for a day by default)."""
        p = self._p

        def write(cursor: Any) -> None:
            now = now_us()
            cursor.execute(
                f"UPDATE jobs SET state = {p}, done = {p}, failed = {p}, total = {p}, "
                f"lease_owner = NULL, update_time = {p}, expire_time = {p} "
                f"WHERE id = {p} AND lease_owner = {p}",
                (
                    state.value,
                    job.done,
                    job.failed,
                    job.total,
                    now,
                    now + kept_us,
                    job.id,
                    owner,
                ),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"job {job.id} is no longer leased to {owner}")
            self._store.writes.insert_rows(cursor, [event_row(audit)])

        await self._store.writer.submit(write)

    async def purge_expired(self, now: int) -> int:
        p = self._p

        def write(cursor: Any) -> int:
            cursor.execute(
                f"DELETE FROM job_results WHERE job_id IN "
                f"(SELECT id FROM jobs WHERE expire_time < {p})",
                (now,),
            )
            cursor.execute(f"DELETE FROM jobs WHERE expire_time < {p}", (now,))
            return int(cursor.rowcount)

        purged: int = await self._store.writer.submit(write)
        return purged


def _matching(
    principal: Principal,
    condition: Condition | None,
    postgres: bool,
    p: str,
    columns: Mapping[str, str],
) -> tuple[str, list[Any]]:
    """The events of the principal's scope that match, of any time and version; `columns`:
    the ready custom field columns (SqlBuilder)."""
    sql = SqlBuilder(postgres, p, columns)
    clause = sql.scope(principal)
    if condition is not None:
        clause += f" AND {sql.condition(condition)}"
    return clause, sql.args
