"""Tenants and their API keys; a key's secret is shown once and stored only as its hash."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import peewee

from persistence.auth import record_auth_change
from persistence.rows import event_row
from service.domain import audit
from service.domain.access import (
    API_KEY_PREFIX,
    ROLE_PRIVILEGES,
    Principal,
    Privilege,
    Role,
    format_privileges,
    privileges_from_text,
)
from service.domain.events import Event

if TYPE_CHECKING:
    from persistence.store import Store


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
    # None: everything the role grants.
    privileges: frozenset[Privilege] | None = None


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

    def create_key(
        self,
        tenant_id: str,
        name: str,
        role: Role,
        domain: str,
        privileges: frozenset[Privilege] | None = None,
        requested_by: str = "operator",
    ) -> IssuedKey:
        """A new key; `privileges` narrows what its role grants (None: all of it). Its audit
        event names `requested_by`."""
        key_id = secrets.token_hex(8)
        secret = f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"

        def work(db: peewee.Database) -> None:
            p = db.param
            db.execute_sql(
                "INSERT INTO api_keys (id, tenant_id, name, key_hash, role, domain, "
                f"create_time, privileges) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
                (
                    key_id,
                    tenant_id,
                    name,
                    hash_api_key(secret),
                    int(role),
                    domain,
                    time.time_ns() // 1000,
                    None if privileges is None else format_privileges(privileges),
                ),
            )
            granted = format_privileges(privileges or ROLE_PRIVILEGES[role]).split(",")
            self._audit(
                db,
                audit.access_event(
                    tenant_id,
                    domain,
                    audit.CODE_KEY_CREATED,
                    "ApiKey",
                    key_id,
                    f"API key {key_id} ({name}) created by {requested_by}",
                    {
                        "keyId": key_id,
                        "name": name,
                        "role": role.title,
                        "privileges": granted,
                        "domain": domain,
                        "requestedBy": requested_by,
                    },
                ),
            )

        self._store.run_sync(work)
        return IssuedKey(key_id, tenant_id, name, role, domain, secret, privileges)

    def _audit(self, db: peewee.Database, event: Event) -> None:
        self._store.writes.insert_rows(db.cursor(), [event_row(event)])

    def revoke_key(self, key_id: str, requested_by: str = "operator") -> bool:
        """Revokes an active key; every process refuses it from its next call on."""

        def work(db: peewee.Database) -> bool:
            cursor = db.execute_sql(
                f"UPDATE api_keys SET revoke_time = {db.param} "
                f"WHERE id = {db.param} AND revoke_time IS NULL",
                (time.time_ns() // 1000, key_id),
            )
            if cursor.rowcount != 1:
                return False
            record_auth_change(db)
            tenant_id, domain, name = db.execute_sql(
                f"SELECT tenant_id, domain, name FROM api_keys WHERE id = {db.param}", (key_id,)
            ).fetchone()
            self._audit(
                db,
                audit.access_event(
                    tenant_id,
                    domain,
                    audit.CODE_KEY_REVOKED,
                    "ApiKey",
                    key_id,
                    f"API key {key_id} ({name}) revoked by {requested_by}",
                    {"keyId": key_id, "name": name, "requestedBy": requested_by},
                ),
            )
            return True

        return self._store.run_sync(work)

    def list_keys(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        names = (
            "id",
            "tenant_id",
            "name",
            "role",
            "domain",
            "create_time",
            "revoke_time",
            "privileges",
        )

        def work(db: peewee.Database) -> list[dict[str, Any]]:
            sql = f"SELECT {', '.join(names)} FROM api_keys"
            args: tuple[Any, ...] = ()
            if tenant_id:
                sql, args = sql + f" WHERE tenant_id = {db.param}", (tenant_id,)
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
                f"SELECT id, tenant_id, name, role, domain, privileges FROM api_keys "
                f"WHERE key_hash = {db.param} AND revoke_time IS NULL",
                (key_hash,),
            ).fetchone()
            if row is None:
                return None
            role = Role(row[3])
            return Principal(
                tenant_id=row[1],
                key_id=row[0],
                name=row[2],
                role=role,
                domain=row[4],
                granted=None if row[5] is None else privileges_from_text(row[5], role),
            )

        return await self._store.read(work)
