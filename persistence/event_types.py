"""Event types and retention: the repository behind the domain's EventTypeManager, and the
store side of the retention sweeper. Writes go through the store's group-commit writer."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import peewee

from persistence.partitions import drop_partition, ensure_partitions, expired_candidates
from persistence.rows import event_row
from persistence.store import Store
from persistence.upkeep import DELETED_RETURNING, forget_deleted
from service.domain.access import Principal
from service.domain.custom_fields import STANDARD_EVENT, FieldDefinition, FieldType
from service.domain.event_types import DeleteOutcome, EventType, Scope
from service.domain.events import Event

_COLUMNS = (
    "id, tenant_id, name, parent_id, scope, fields, ttl_days, etag, create_time, update_time, "
    "deduplicate_alarms"
)
# Walking parent links stops here even if the table were ever corrupted into a loop.
_MAX_WALK = 64


def _fields_json(fields: Sequence[FieldDefinition]) -> str:
    return json.dumps(
        [
            {
                "name": d.name,
                "type": d.type.value,
                "values": list(d.values),
                "required": d.required,
                "filterable": d.filterable,
                "updatable": d.updatable,
            }
            for d in fields
        ]
    )


def _fields_from_json(text: str) -> tuple[FieldDefinition, ...]:
    return tuple(
        FieldDefinition(
            name=d["name"],
            type=FieldType(d["type"]),
            values=tuple(d["values"]),
            required=d["required"],
            filterable=d["filterable"],
            updatable=d["updatable"],
        )
        for d in json.loads(text)
    )


def _row(t: EventType) -> tuple[Any, ...]:
    return (
        t.id,
        t.tenant_id,
        t.name,
        t.parent_id,
        t.scope.value,
        _fields_json(t.fields),
        t.ttl_days,
        t.etag,
        t.create_time,
        t.update_time,
        t.deduplicate_alarms,
    )


def _from_row(r: Sequence[Any]) -> EventType:
    return EventType(
        id=r[0],
        tenant_id=r[1],
        name=r[2],
        parent_id=r[3],
        scope=Scope(r[4]),
        fields=_fields_from_json(r[5]),
        ttl_days=r[6],
        etag=r[7],
        create_time=r[8],
        update_time=r[9],
        deduplicate_alarms=bool(r[10]),  # SQLite answers 0 and 1
    )


def _visible(p: str) -> str:
    return f"(tenant_id = {p} OR scope = '{Scope.GLOBAL.value}')"


class EventTypeRepository:
    """Event types as the principal sees them: its tenant's, and every GLOBAL one."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, principal: Principal, type_id: str) -> EventType | None:
        return await self._store.read(functools.partial(self._get, principal, type_id))

    @staticmethod
    def _get(principal: Principal, type_id: str, db: peewee.Database) -> EventType | None:
        p = db.param
        row = db.execute_sql(
            f"SELECT {_COLUMNS} FROM event_types WHERE id = {p} AND {_visible(p)}",
            (type_id, principal.tenant_id),
        ).fetchone()
        return None if row is None else _from_row(row)

    async def chain(self, principal: Principal, type_id: str) -> list[EventType]:
        def work(db: peewee.Database) -> list[EventType]:
            found: list[EventType] = []
            current = type_id
            while current != STANDARD_EVENT and len(found) < _MAX_WALK:
                event_type = self._get(principal, current, db)
                if event_type is None:
                    break
                found.append(event_type)
                current = event_type.parent_id
            return found

        return await self._store.read(work)

    async def page(
        self, principal: Principal, offset: int, limit: int
    ) -> tuple[list[EventType], int]:
        def work(db: peewee.Database) -> tuple[list[EventType], int]:
            p = db.param
            rows = db.execute_sql(
                f"SELECT {_COLUMNS} FROM event_types WHERE {_visible(p)} "
                f"ORDER BY id LIMIT {p} OFFSET {p}",
                (principal.tenant_id, limit, offset),
            ).fetchall()
            total = db.execute_sql(
                f"SELECT COUNT(*) FROM event_types WHERE {_visible(p)}", (principal.tenant_id,)
            ).fetchone()[0]
            return [_from_row(r) for r in rows], int(total)

        return await self._store.read(work)

    async def descendants(self, principal: Principal, type_id: str) -> list[EventType]:
        def work(db: peewee.Database) -> list[EventType]:
            p = db.param
            owned = db.execute_sql(
                f"SELECT 1 FROM event_types WHERE id = {p} AND tenant_id = {p}",
                (type_id, principal.tenant_id),
            ).fetchone()
            if owned is None:
                return []
            # Other tenants' children count too: the owner's changes bind their fields.
            found: list[EventType] = []
            level = [type_id]
            for _ in range(_MAX_WALK):
                marks = ", ".join([p] * len(level))
                children = [
                    _from_row(r)
                    for r in db.execute_sql(
                        f"SELECT {_COLUMNS} FROM event_types WHERE parent_id IN ({marks})", level
                    )
                ]
                if not children:
                    break
                found += children
                level = [c.id for c in children]
            return found

        return await self._store.read(work)

    async def visible_fields(self, principal: Principal) -> list[FieldDefinition]:
        def work(db: peewee.Database) -> list[FieldDefinition]:
            rows = db.execute_sql(
                f"SELECT fields FROM event_types WHERE {_visible(db.param)}",
                (principal.tenant_id,),
            )
            return [d for (text,) in rows for d in _fields_from_json(text) if d.filterable]

        return await self._store.read(work)

    async def insert(self, event_type: EventType, audit: Event) -> bool:
        row = _row(event_type)

        def write(cursor: Any) -> bool:
            marks = ", ".join([self._store.database.param] * len(row))
            cursor.execute(
                f"INSERT INTO event_types ({_COLUMNS}) VALUES ({marks}) "
                "ON CONFLICT (id) DO NOTHING",
                row,
            )
            if cursor.rowcount != 1:
                return False
            self._store.writes.insert_rows(cursor, [event_row(audit)])
            return True

        inserted: bool = await self._store.writer.submit(write)
        self._store.custom_indexes.schedule()  # a filterable field may come or go
        return inserted

    async def replace(self, event_type: EventType, expected_etag: int, audit: Event) -> bool:
        row = _row(event_type)

        def write(cursor: Any) -> bool:
            p = self._store.database.param
            columns = [c.strip() for c in _COLUMNS.split(",")][1:]
            cursor.execute(
                f"UPDATE event_types SET {', '.join(f'{c} = {p}' for c in columns)} "
                f"WHERE id = {p} AND etag = {p}",
                (*row[1:], row[0], expected_etag),
            )
            if cursor.rowcount != 1:
                return False
            self._store.writes.insert_rows(cursor, [event_row(audit)])
            return True

        replaced: bool = await self._store.writer.submit(write)
        self._store.custom_indexes.schedule()  # a filterable field may come or go
        return replaced

    async def delete(
        self, principal: Principal, type_id: str, expected_etag: int | None, audit: Event
    ) -> DeleteOutcome:
        def write(cursor: Any) -> DeleteOutcome:
            # One transaction on the one writer: no event or child type of this process can
            # slip in between the checks and the delete.
            p = self._store.database.param
            cursor.execute(
                f"SELECT etag FROM event_types WHERE id = {p} AND tenant_id = {p}",
                (type_id, principal.tenant_id),
            )
            row = cursor.fetchone()
            if row is None:
                return "missing"
            if expected_etag is not None and row[0] != expected_etag:
                return "stale"
            cursor.execute(f"SELECT 1 FROM event_types WHERE parent_id = {p} LIMIT 1", (type_id,))
            if cursor.fetchone() is not None:
                return "has_children"
            # Any tenant's events: a GLOBAL type's events may belong to others.
            cursor.execute(f"SELECT 1 FROM events WHERE type_id = {p} LIMIT 1", (type_id,))
            if cursor.fetchone() is not None:
                return "has_events"
            cursor.execute(f"DELETE FROM event_types WHERE id = {p}", (type_id,))
            self._store.writes.insert_rows(cursor, [event_row(audit)])
            return "deleted"

        outcome: DeleteOutcome = await self._store.writer.submit(write)
        self._store.custom_indexes.schedule()  # a filterable field may come or go
        return outcome


class RetentionRepository:
    """The store side of retention. The one cross-tenant writer: the server's own sweeper
    calls it on a timer; no request reaches it."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def retention_days(self) -> dict[str, int]:
        """Every catalogued type's retention in days, by type id."""

        def work(db: peewee.Database) -> dict[str, int]:
            return {r[0]: int(r[1]) for r in db.execute_sql("SELECT id, ttl_days FROM event_types")}

        return await self._store.read(work)

    async def drop_expired_partitions(self, cutoffs: Mapping[str, int], now_us: int) -> int:
        """On PostgreSQL: creates the coming months' partitions, then drops each past month's
        partition whose every event was stored before its type's cutoff; returns how many
        events went. Each drop is its own short transaction (persistence/partitions.py)."""
        if not self._store.postgres:
            return 0

        def work(db: peewee.Database) -> int:
            with db.atomic():
                ensure_partitions(db.cursor(), now_us)
            dropped = 0
            for name in expired_candidates(db.cursor(), now_us, cutoffs):
                with db.atomic():
                    dropped += drop_partition(db.cursor(), name, cutoffs) or 0
            return dropped

        return await self._store.read(work)

    async def delete_stored_before(self, type_id: str, cutoff_us: int, limit: int) -> int:
        """Deletes up to `limit` events of the type stored before the cutoff; returns how many.
        Small batches keep each writer transaction short, so creates wait little."""

        def write(cursor: Any) -> int:
            p = self._store.database.param
            # RETURNING names what the side tables must forget (see forget_deleted).
            cursor.execute(
                f"DELETE FROM events WHERE id IN (SELECT id FROM events "
                f"WHERE type_id = {p} AND create_time < {p} LIMIT {p}) {DELETED_RETURNING}",
                (type_id, cutoff_us, limit),
            )
            gone = cursor.fetchall()
            forget_deleted(cursor, gone, self._store.postgres)
            return len(gone)

        deleted: int = await self._store.writer.submit(write)
        return deleted
