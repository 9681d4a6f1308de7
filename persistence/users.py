"""Users (their passwords stored as Argon2 hashes), signed-out tokens and failed logins. Every
change that can void a credential bumps the credential version in its transaction
(persistence.auth), so that every replica refuses it from its next call on; each change is
recorded by its audit event in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import peewee

from persistence.auth import record_auth_change
from persistence.rows import event_row
from service.domain.access import Role, domain_covers, format_privileges, privileges_from_text
from service.domain.events import Event, now_us
from service.domain.tokens import TokenClaims
from service.domain.users import LoginState, LoginThrottle, User

if TYPE_CHECKING:
    from persistence.store import Store

_COLUMNS = (
    "id, tenant_id, username, role, privileges, domain, create_time, update_time, revoke_time"
)


def _user(row: Sequence[Any]) -> User:
    role = Role(row[3])
    return User(
        id=row[0],
        tenant_id=row[1],
        username=row[2],
        role=role,
        granted=None if row[4] is None else privileges_from_text(row[4], role),
        domain=row[5],
        create_time=row[6],
        update_time=row[7],
        revoke_time=row[8],
    )


def _stored_privileges(user: User) -> str | None:
    return None if user.granted is None else format_privileges(user.granted)


class UserStore:
    """The store side of users and sessions (service.domain.users.UserRepository)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def _p(self) -> str:
        return str(self._store.database.param)

    def _audit(self, cursor: Any, event: Event | None) -> None:
        if event is not None:
            self._store.writes.insert_rows(cursor, [event_row(event)])

    async def insert_user(self, user: User, password_hash: str, audit: Event) -> bool:
        p = self._p

        def write(cursor: Any) -> bool:
            cursor.execute(
                "INSERT INTO users (id, tenant_id, username, password_hash, role, privileges, "
                "domain, tokens_after, create_time, update_time) "
                f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) "
                "ON CONFLICT DO NOTHING",
                (
                    user.id,
                    user.tenant_id,
                    user.username,
                    password_hash,
                    int(user.role),
                    _stored_privileges(user),
                    user.domain,
                    user.create_time,
                    user.create_time,
                    user.update_time,
                ),
            )
            if cursor.rowcount != 1:
                return False
            self._audit(cursor, audit)
            return True

        inserted: bool = await self._store.writer.submit(write)
        return inserted

    async def get_user(self, tenant_id: str, user_id: str) -> User | None:
        p = self._p

        def work(db: peewee.Database) -> User | None:
            row = db.execute_sql(
                f"SELECT {_COLUMNS} FROM users WHERE tenant_id = {p} AND id = {p}",
                (tenant_id, user_id),
            ).fetchone()
            return None if row is None else _user(row)

        return await self._store.read(work)

    async def list_users(
        self, tenant_id: str, domain: str, after_username: str, limit: int
    ) -> list[User]:
        p = self._p

        def work(db: peewee.Database) -> list[User]:
            # Users outside the domain subtree are skipped in Python: pages stay ordered by
            # username, and a tenant has few users.
            found: list[User] = []
            after = after_username
            while len(found) < limit:
                rows = db.execute_sql(
                    f"SELECT {_COLUMNS} FROM users WHERE tenant_id = {p} AND username > {p} "
                    f"ORDER BY username LIMIT {p}",
                    (tenant_id, after, limit),
                ).fetchall()
                found += [u for u in map(_user, rows) if domain_covers(domain, u.domain)]
                if len(rows) < limit:
                    break
                after = rows[-1][2]
            return found[:limit]

        return await self._store.read(work)

    async def replace_user(
        self, user: User, password_hash: str | None, void_tokens: bool, audit: Event
    ) -> bool:
        p = self._p
        database = self._store.database

        def write(cursor: Any) -> bool:
            assignments = [
                f"role = {p}",
                f"privileges = {p}",
                f"domain = {p}",
                f"update_time = {p}",
                f"revoke_time = {p}",
            ]
            values: list[Any] = [
                int(user.role),
                _stored_privileges(user),
                user.domain,
                user.update_time,
                user.revoke_time,
            ]
            if password_hash is not None:
                assignments.append(f"password_hash = {p}")
                values.append(password_hash)
            if void_tokens:
                assignments.append(f"tokens_after = {p}")
                values.append(user.update_time)
            cursor.execute(
                f"UPDATE users SET {', '.join(assignments)} "
                f"WHERE id = {p} AND tenant_id = {p} AND revoke_time IS NULL",
                (*values, user.id, user.tenant_id),
            )
            if cursor.rowcount != 1:
                return False
            record_auth_change(database)
            self._audit(cursor, audit)
            return True

        replaced: bool = await self._store.writer.submit(write)
        if replaced:
            self._store.credentials_changed()
        return replaced

    async def login_record(self, username: str) -> tuple[User, str] | None:
        p = self._p

        def work(db: peewee.Database) -> tuple[User, str] | None:
            row = db.execute_sql(
                f"SELECT {_COLUMNS}, password_hash FROM users WHERE username = {p}", (username,)
            ).fetchone()
            return None if row is None else (_user(row), row[9])

        return await self._store.read(work)

    async def token_user(self, claims: TokenClaims) -> User | None:
        p = self._p

        def work(db: peewee.Database) -> User | None:
            row = db.execute_sql(
                f"SELECT {_COLUMNS} FROM users WHERE id = {p} AND tenant_id = {p} "
                f"AND revoke_time IS NULL AND tokens_after <= {p} "
                f"AND NOT EXISTS (SELECT 1 FROM revoked_tokens WHERE id = {p})",
                (claims.user_id, claims.tenant_id, claims.issued_us, claims.token_id),
            ).fetchone()
            return None if row is None else _user(row)

        return await self._store.read(work)

    async def revoke_token(self, claims: TokenClaims, audit: Event) -> bool:
        p = self._p
        database = self._store.database

        def write(cursor: Any) -> bool:
            cursor.execute(
                f"INSERT INTO revoked_tokens (id, user_id, expire_time) VALUES ({p}, {p}, {p}) "
                "ON CONFLICT DO NOTHING",
                (claims.token_id, claims.user_id, claims.expires_us),
            )
            if cursor.rowcount != 1:
                return False
            # Expired tokens are refused by their signature's time: their entries can go.
            cursor.execute(f"DELETE FROM revoked_tokens WHERE expire_time < {p}", (now_us(),))
            record_auth_change(database)
            self._audit(cursor, audit)
            return True

        revoked: bool = await self._store.writer.submit(write)
        if revoked:
            self._store.credentials_changed()
        return revoked

    async def count_login_attempt(
        self, subjects: list[tuple[str, int]], throttle: LoginThrottle
    ) -> dict[str, LoginState]:
        p = self._p

        def write(cursor: Any) -> dict[str, LoginState]:
            now = now_us()
            forgotten = now - int(throttle.window_seconds * 1_000_000)
            for subject, lock_after in subjects:
                # One statement, so that attempts counted at once, by this replica or
                # another, add up; a locked subject's count waits for its lock to pass.
                cursor.execute(
                    "INSERT INTO login_failures (subject, failures, last_time, locked_until) "
                    f"VALUES ({p}, 1, {p}, 0) ON CONFLICT (subject) DO UPDATE SET "
                    f"failures = CASE WHEN login_failures.locked_until > {p} "
                    "THEN login_failures.failures "
                    f"WHEN login_failures.last_time < {p} THEN 1 "
                    "ELSE login_failures.failures + 1 END, "
                    f"last_time = {p}",
                    (subject, now, now, forgotten, now),
                )
                cursor.execute(
                    f"UPDATE login_failures SET locked_until = {p}, failures = 0 "
                    f"WHERE subject = {p} AND failures >= {p}",
                    (now + int(throttle.lock_seconds * 1_000_000), subject, lock_after),
                )
            # What no longer counts goes, so that guessed usernames do not pile up.
            cursor.execute(
                f"DELETE FROM login_failures WHERE last_time < {p} AND locked_until < {p}",
                (forgotten, now),
            )
            names = [subject for subject, _ in subjects]
            cursor.execute(
                "SELECT subject, failures, locked_until FROM login_failures "
                f"WHERE subject IN ({', '.join([p] * len(names))})",
                tuple(names),
            )
            return {r[0]: LoginState(r[1], r[2]) for r in cursor.fetchall()}

        states: dict[str, LoginState] = await self._store.writer.submit(write)
        return states

    async def record_login_failure(self, audit: Event) -> None:
        await self._store.writer.submit(lambda cursor: self._audit(cursor, audit))

    async def record_login_success(
        self, user_subject: str, address_subject: str, audit: Event
    ) -> None:
        p = self._p

        def write(cursor: Any) -> None:
            cursor.execute(f"DELETE FROM login_failures WHERE subject = {p}", (user_subject,))
            # The attempt was counted before it succeeded; an address's other failures stay.
            cursor.execute(
                f"UPDATE login_failures SET failures = failures - 1 "
                f"WHERE subject = {p} AND failures > 0",
                (address_subject,),
            )
            self._audit(cursor, audit)

        await self._store.writer.submit(write)
