"""Entity shares between tenants."""

from __future__ import annotations

from typing import Any

import peewee

from persistence.queries import Params, subtree_sql
from persistence.store import Store
from service.domain.access import Principal
from service.domain.sharing import EntityShare


def _within(subtree: str, p: str) -> tuple[str, list[Any]]:
    """SQL that keeps shares whose domain lies inside `subtree`."""
    sql = Params(p)
    clause = subtree_sql("domain", subtree, sql.bind)
    return (f" AND {clause}" if clause else ""), sql.args


class ShareRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def insert(self, share: EntityShare) -> bool:
        """Stores the share; False when it exists already."""
        p = self._store.database.param

        def write(cursor: Any) -> bool:
            # Atomic on both backends, also between replicas: the primary key decides.
            cursor.execute(
                "INSERT INTO entity_shares (owner_tenant_id, entity_id, receiver_tenant_id, "
                f"domain, create_time) VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING",
                (
                    share.owner_tenant_id,
                    share.entity_id,
                    share.tenant_id,
                    share.domain,
                    share.create_time,
                ),
            )
            return bool(cursor.rowcount == 1)

        inserted: bool = await self._store.writer.submit(write)
        return inserted

    async def delete(self, owner: Principal, entity_id: str, tenant_id: str) -> bool:
        """Deletes the owner's shares of the entity with the tenant that lie inside the
        owner's subtree; False when there were none."""
        p = self._store.database.param
        within, args = _within(owner.domain, p)

        def write(cursor: Any) -> bool:
            cursor.execute(
                f"DELETE FROM entity_shares WHERE owner_tenant_id = {p} AND entity_id = {p} "
                f"AND receiver_tenant_id = {p}{within}",
                (owner.tenant_id, entity_id, tenant_id, *args),
            )
            return bool(cursor.rowcount >= 1)

        deleted: bool = await self._store.writer.submit(write)
        return deleted

    async def list_for(self, principal: Principal) -> list[EntityShare]:
        def read(db: peewee.Database) -> list[EntityShare]:
            p = db.param
            within, args = _within(principal.domain, p)
            rows = db.execute_sql(
                "SELECT owner_tenant_id, entity_id, receiver_tenant_id, create_time, domain "
                f"FROM entity_shares WHERE (owner_tenant_id = {p}{within}) "
                f"OR receiver_tenant_id = {p} ORDER BY create_time",
                (principal.tenant_id, *args, principal.tenant_id),
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
