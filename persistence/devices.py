"""Repositories of the device registry (devices, tenant apps) and of device reports: stored
with the database-enforced duplicate rule, or saved as pending and processed later."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import peewee

from persistence.queries import Params, subtree_sql
from persistence.rows import event_row
from service.domain.access import Principal
from service.domain.device_events import duplicate
from service.domain.events import Event, Payload
from service.domain.registry import App, Device

if TYPE_CHECKING:
    from persistence.store import Store

_DEVICE_COLUMNS = "tenant_id, id, domain, entity_type, enabled, create_time, update_time"
_APP_COLUMNS = "tenant_id, id, name, licence_active, create_time, update_time"


def _device(row: Sequence[Any]) -> Device:
    return Device(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])


def _app(row: Sequence[Any]) -> App:
    return App(row[0], row[1], row[2], bool(row[3]), row[4], row[5])


class RegistryStore:
    """Devices and apps, always within the principal's tenant."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def tenant_exists(self, principal: Principal, tenant_id: str) -> bool:
        # Whether another tenant exists is what tells a 403 from a 404 on the device path
        # (docs/device-api.md#responses);
        # nothing else of that tenant is read.
        def work(db: peewee.Database) -> bool:
            row = db.execute_sql(f"SELECT 1 FROM tenants WHERE id = {db.param}", (tenant_id,))
            return row.fetchone() is not None

        return await self._store.read(work)

    async def _insert(self, table: str, columns: str, values: tuple[Any, ...]) -> bool:
        def insert(cursor: Any) -> bool:
            placeholders = ", ".join([self._store.database.param] * len(values))
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING",
                values,
            )
            return bool(cursor.rowcount == 1)

        inserted: bool = await self._store.writer.submit(insert)
        return inserted

    async def _update(self, sql: str, values: tuple[Any, ...]) -> None:
        def update(cursor: Any) -> None:
            cursor.execute(sql, values)

        await self._store.writer.submit(update)

    async def insert_device(self, principal: Principal, device: Device) -> bool:
        values = dataclasses.astuple(dataclasses.replace(device, tenant_id=principal.tenant_id))
        return await self._insert("devices", _DEVICE_COLUMNS, values)

    async def get_device(self, principal: Principal, device_id: str) -> Device | None:
        def work(db: peewee.Database) -> Device | None:
            p = db.param
            row = db.execute_sql(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE tenant_id = {p} AND id = {p}",
                (principal.tenant_id, device_id),
            ).fetchone()
            return None if row is None else _device(row)

        return await self._store.read(work)

    async def list_devices(self, principal: Principal, after_id: str, limit: int) -> list[Device]:
        def work(db: peewee.Database) -> list[Device]:
            sql = Params(db.param)
            where = f"tenant_id = {sql.bind(principal.tenant_id)} AND id > {sql.bind(after_id)}"
            subtree = subtree_sql("domain", principal.domain, sql.bind)
            where += f" AND {subtree}" if subtree else ""
            rows = db.execute_sql(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {where} "
                f"ORDER BY id LIMIT {sql.bind(limit)}",
                sql.args,
            )
            return [_device(row) for row in rows]

        return await self._store.read(work)

    async def set_device_enabled(
        self, principal: Principal, device_id: str, enabled: bool, now: int
    ) -> None:
        p = self._store.database.param
        await self._update(
            f"UPDATE devices SET enabled = {p}, update_time = {p} "
            f"WHERE tenant_id = {p} AND id = {p}",
            (enabled, now, principal.tenant_id, device_id),
        )

    async def insert_app(self, principal: Principal, app: App) -> bool:
        values = dataclasses.astuple(dataclasses.replace(app, tenant_id=principal.tenant_id))
        return await self._insert("tenant_apps", _APP_COLUMNS, values)

    async def get_app(self, principal: Principal, app_id: str) -> App | None:
        def work(db: peewee.Database) -> App | None:
            p = db.param
            row = db.execute_sql(
                f"SELECT {_APP_COLUMNS} FROM tenant_apps WHERE tenant_id = {p} AND id = {p}",
                (principal.tenant_id, app_id),
            ).fetchone()
            return None if row is None else _app(row)

        return await self._store.read(work)

    async def list_apps(self, principal: Principal, after_id: str, limit: int) -> list[App]:
        def work(db: peewee.Database) -> list[App]:
            p = db.param
            rows = db.execute_sql(
                f"SELECT {_APP_COLUMNS} FROM tenant_apps WHERE tenant_id = {p} AND id > {p} "
                f"ORDER BY id LIMIT {p}",
                (principal.tenant_id, after_id, limit),
            )
            return [_app(row) for row in rows]

        return await self._store.read(work)

    async def set_app_licence(
        self, principal: Principal, app_id: str, active: bool, now: int
    ) -> None:
        p = self._store.database.param
        await self._update(
            f"UPDATE tenant_apps SET licence_active = {p}, update_time = {p} "
            f"WHERE tenant_id = {p} AND id = {p}",
            (active, now, principal.tenant_id, app_id),
        )


def _event_json(event: Event) -> str:
    document = dataclasses.asdict(event)
    assert event.payload is not None  # a report's data is its JSON payload
    document["payload"] = {
        "content_type": event.payload.content_type,
        "data": event.payload.data.decode(),
    }
    return json.dumps(document, ensure_ascii=False)


def _event_from_json(text: str) -> Event:
    document = json.loads(text)
    payload = document.pop("payload")
    return Event(**document, payload=Payload(payload["content_type"], payload["data"].encode()))


class DeviceEventStore:
    """Device reports: events with a report hash under a unique index, and pending reports."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def insert_unique(self, event: Event, fingerprint: str) -> None:
        row = event_row(event)

        def insert(cursor: Any) -> None:
            self._store.writes.insert_row(cursor, row, {"report_hash": fingerprint})

        try:
            await self._store.writer.submit(insert)
        except peewee.IntegrityError:
            existing = await self._existing(event, fingerprint)
            if existing is None:  # some other constraint: not a duplicate
                raise
            raise duplicate(existing) from None

    async def find_duplicate(
        self, principal: Principal, event: Event, fingerprint: str
    ) -> str | None:
        scoped = dataclasses.replace(event, tenant_id=principal.tenant_id)
        return await self._existing(scoped, fingerprint)

    async def _existing(self, event: Event, fingerprint: str) -> str | None:
        def work(db: peewee.Database) -> str | None:
            p = db.param
            row = db.execute_sql(
                f"SELECT id FROM events WHERE tenant_id = {p} AND entity_id = {p} "
                f"AND type_id = {p} AND ts = {p} AND report_hash = {p}",
                (event.tenant_id, event.entity_id, event.type_id, event.timestamp, fingerprint),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._store.read(work)

    async def insert_pending(self, event: Event, fingerprint: str) -> None:
        p = self._store.database.param
        values = (
            event.id,
            event.tenant_id,
            event.entity_id,
            event.type_id,
            event.timestamp,
            fingerprint,
            event.create_time,
            _event_json(event),
        )

        def insert(cursor: Any) -> bool:
            cursor.execute(
                "INSERT INTO pending_device_events (id, tenant_id, entity_id, type_id, ts, "
                f"report_hash, accept_time, event) VALUES ({', '.join([p] * len(values))}) "
                "ON CONFLICT DO NOTHING",
                values,
            )
            return bool(cursor.rowcount == 1)

        if not await self._store.writer.submit(insert):

            def pending_id(db: peewee.Database) -> str:
                row = db.execute_sql(
                    f"SELECT id FROM pending_device_events WHERE tenant_id = {p} "
                    f"AND entity_id = {p} AND type_id = {p} AND ts = {p} AND report_hash = {p}",
                    (values[1], values[2], values[3], values[4], fingerprint),
                ).fetchone()
                return "" if row is None else str(row[0])

            raise duplicate(await self._store.read(pending_id))

    async def process_pending(self, limit: int) -> tuple[int, int]:
        # The platform's own work over every tenant, not a caller's query. On PostgreSQL,
        # SKIP LOCKED lets several replicas share the backlog without taking a report twice.
        lock = " FOR UPDATE SKIP LOCKED" if self._store.postgres else ""
        p = self._store.database.param

        def process(cursor: Any) -> tuple[int, int]:
            cursor.execute(
                f"SELECT id, report_hash, event FROM pending_device_events "
                f"ORDER BY accept_time LIMIT {p}{lock}",
                (limit,),
            )
            stored = dropped = 0
            for report_id, fingerprint, text in cursor.fetchall():
                row = event_row(_event_from_json(text))
                if self._store.writes.insert_row(
                    cursor, row, {"report_hash": fingerprint}, skip_conflicts=True
                ):
                    stored += 1
                else:
                    dropped += 1
                cursor.execute(f"DELETE FROM pending_device_events WHERE id = {p}", (report_id,))
            return stored, dropped

        result: tuple[int, int] = await self._store.writer.submit(process)
        return result
