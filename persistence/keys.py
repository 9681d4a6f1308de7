"""Tenants and their API keys; a key's secret is shown once and stored only as its hash."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import peewee

from service.domain.access import Principal, Role

if TYPE_CHECKING:
    from persistence.store import Store

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
