"""Entity shares between tenants."""

from __future__ import annotations

from typing import Any

import peewee

from persistence.store import Store
from service.domain.sharing import EntityShare


class ShareRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def insert(self, share: EntityShare) -> bool:
        """Stores the share; False when it exists already."""
        p = self._store.database.param

        def write(cursor: Any) -> bool:
            # Atomic on both backends, also between replicas: the primary key decides.
            cursor.execute(
                f"INSERT INTO entity_shares VALUES ({p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING",
                (share.owner_tenant_id, share.entity_id, share.tenant_id, share.create_time),
            )
            return bool(cursor.rowcount == 1)

        inserted: bool = await self._store.writer.submit(write)
        return inserted

    async def delete(self, owner_tenant_id: str, entity_id: str, tenant_id: str) -> bool:
        p = self._store.database.param

        def write(cursor: Any) -> bool:
            cursor.execute(
                f"DELETE FROM entity_shares WHERE owner_tenant_id = {p} AND entity_id = {p} "
                f"AND receiver_tenant_id = {p}",
                (owner_tenant_id, entity_id, tenant_id),
            )
            return bool(cursor.rowcount == 1)

        deleted: bool = await self._store.writer.submit(write)
        return deleted

    async def list_for(self, tenant_id: str) -> list[EntityShare]:
        def read(db: peewee.Database) -> list[EntityShare]:
            p = db.param
            rows = db.execute_sql(
                f"SELECT owner_tenant_id, entity_id, receiver_tenant_id, create_time "
                f"FROM entity_shares WHERE owner_tenant_id = {p} OR receiver_tenant_id = {p} "
                f"ORDER BY create_time",
                (tenant_id, tenant_id),
            )
            return [EntityShare(*row) for row in rows]

        return await self._store.read(read)

    async def tenant_exists(self, tenant_id: str) -> bool:
        def read(db: peewee.Database) -> bool:
            return (
                db.execute_sql(
                    f"SELECT 1 FROM tenants WHERE id = {db.param}", (tenant_id,)
                ).fetchone()
                is not None
            )

        return await self._store.read(read)
