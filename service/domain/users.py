"""Users who sign in, their sessions, and the login throttle: the rules; the store keeps
users, revoked tokens and failed logins (persistence.users).

Passwords are hashed with Argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane):
a login costs tens of milliseconds of one core, not the seconds that argon2-cffi's defaults
(64 MiB, 4 lanes) take on a small shared machine. Hashes keep their parameters, so stronger
ones can be chosen later without breaking stored passwords.

A login of an unknown or revoked user verifies a dummy hash, so that it takes as long as one
with a wrong password: the answer and its timing tell nothing about who exists."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import argon2

from service.domain import audit
from service.domain.access import (
    ROLE_PRIVILEGES,
    Principal,
    Privilege,
    Role,
    check_domain_path,
    format_privileges,
    parse_privileges,
)
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    invalid,
)
from service.domain.events import Event, now_us
from service.domain.tokens import TokenClaims, TokenCodec

_USERNAME = re.compile(r"^[A-Za-z0-9._@+\-]{1,128}$")
MAX_USERNAME = 128
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
DEFAULT_USER_PAGE = 100
MAX_USER_PAGE = 1000
UPDATABLE = ("password", "role", "privileges", "domain")


@dataclass(frozen=True, slots=True)
class User:
    """A user of a tenant (never its password). Times are integer microseconds."""

    id: str
    tenant_id: str
    username: str
    role: Role
    domain: str
    # None: everything the role grants.
    granted: frozenset[Privilege] | None = None
    create_time: int = 0
    update_time: int = 0
    revoke_time: int | None = None

    @property
    def privileges(self) -> frozenset[Privilege]:
        return ROLE_PRIVILEGES[self.role] if self.granted is None else self.granted

    def principal(self, claims: TokenClaims | None = None) -> Principal:
        """The principal of a call made with one of this user's tokens."""
        return Principal(
            tenant_id=self.tenant_id,
            key_id="",
            name=self.username,
            role=self.role,
            domain=self.domain,
            granted=self.granted,
            user_id=self.id,
            token_id="" if claims is None else claims.token_id,
            expires_us=0 if claims is None else claims.expires_us,
        )

    def described(self) -> dict[str, object]:
        """What audit events say about the user (no secret)."""
        return {
            "userId": self.id,
            "username": self.username,
            "role": self.role.title,
            "privileges": format_privileges(self.privileges).split(","),
            "domain": self.domain,
        }


@dataclass(frozen=True, slots=True)
class Session:
    """A successful login: the token and what it is for."""

    token: str
    claims: TokenClaims
    user: User


@dataclass(frozen=True, slots=True)
class LoginState:
    """What the store knows of recent failed logins of one subject (a username, an address)."""

    failures: int
    locked_until: int


@dataclass(frozen=True)
class LoginThrottle:
    """Failed logins per username and per client address (shared by every replica): after
    `slow_after` failures each further attempt waits `delay_step` more seconds (up to
    `max_delay`); at `lock_after` failures of a username (`address_lock_after` of an address,
    where many users may share one) further logins are refused for `lock_seconds`, with the
    right password too. Failures older than `window_seconds` are forgotten; a successful
    login forgets the username's."""

    slow_after: int = 3
    delay_step: float = 0.5
    max_delay: float = 4.0
    lock_after: int = 10
    address_lock_after: int = 50
    lock_seconds: float = 300.0
    window_seconds: float = 900.0

    def delay(self, failures: int) -> float:
        beyond = failures - self.slow_after
        return 0.0 if beyond < 0 else min(self.max_delay, (beyond + 1) * self.delay_step)


class UserRepository(Protocol):
    """What users and sessions need from the store."""

    async def insert_user(self, user: User, password_hash: str, audit: Event) -> bool:
        """False when the username is taken (in any tenant)."""
        ...

    async def get_user(self, tenant_id: str, user_id: str) -> User | None: ...

    async def list_users(
        self, tenant_id: str, domain: str, after_username: str, limit: int
    ) -> list[User]: ...

    async def replace_user(
        self, user: User, password_hash: str | None, void_tokens: bool, audit: Event
    ) -> bool:
        """Stores the user's new role, privileges, domain, revoke time and (when given) its
        password hash; `void_tokens` refuses every token issued before now. False when the
        user is gone or was revoked meanwhile."""
        ...

    async def login_record(self, username: str) -> tuple[User, str] | None:
        """The user with this username and its password hash."""
        ...

    async def token_user(self, claims: TokenClaims) -> User | None:
        """The active user of a token that was neither signed out nor voided."""
        ...

    async def revoke_token(self, claims: TokenClaims, audit: Event) -> bool: ...

    async def count_login_attempt(
        self, subjects: list[tuple[str, int]], throttle: LoginThrottle
    ) -> dict[str, LoginState]:
        """Counts an attempt as a failure, before it is verified, for each (subject, count
        that locks it), in one transaction; returns their states. Counted first, attempts made
        at once cannot all pass the check before any failure is recorded."""
        ...

    async def record_login_failure(self, audit: Event) -> None: ...

    async def record_login_success(
        self, user_subject: str, address_subject: str, audit: Event
    ) -> None:
        """Forgets the username's failures and takes back the address's count of this one."""
        ...


_HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@cache
def _dummy_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(32))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


def check_username(username: str, field: str = "username") -> str:
    if not _USERNAME.match(username):
        raise invalid(field, f"required: 1 to {MAX_USERNAME} letters, digits or ._@+- (no spaces)")
    return username


def check_new_password(password: str, field: str = "password") -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise invalid(field, f"required: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _check_login_password(password: str) -> None:
    if not 1 <= len(password) <= MAX_PASSWORD:
        raise invalid("password", f"required: 1 to {MAX_PASSWORD} characters")


def _role(text: str) -> Role:
    if not text:
        raise invalid("user.role", "required: Read, ReadWrite or Admin")
    try:
        return Role.parse(text)
    except InvalidInput:
        raise invalid("user.role", "must be one of Read, ReadWrite, Admin") from None


def check_user_page_size(size: int) -> int:
    if size == 0:
        return DEFAULT_USER_PAGE
    if not 1 <= size <= MAX_USER_PAGE:
        raise invalid("page_size", f"must be between 1 and {MAX_USER_PAGE}")
    return size


def _collect(*checks: Callable[[], object]) -> None:
    """Runs each check and raises every violation at once."""
    violations: list[FieldViolation] = []
    for check in checks:
        try:
            check()
        except InvalidInput as error:
            violations.extend(error.violations)
    if violations:
        raise InvalidInput(violations)


def _user_subject(username: str) -> str:
    return f"user:{username.lower()}"


def _address_subject(address: str) -> str:
    return f"addr:{address}"


class SessionManager:
    """Login (throttled), logout, and the principal of a token."""

    def __init__(
        self,
        repository: UserRepository,
        codec: TokenCodec,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._repository = repository
        self._codec = codec
        self._throttle = throttle or LoginThrottle()

    async def login(self, username: str, password: str, client_address: str) -> Session:
        """A token for the user; LOGIN_FAILED for a wrong username or password alike,
        LOGIN_LOCKED (with the seconds to wait) after too many failures."""
        _collect(lambda: check_username(username), lambda: _check_login_password(password))
        throttle = self._throttle
        user_subject, address_subject = _user_subject(username), _address_subject(client_address)
        states = await self._repository.count_login_attempt(
            # The attempt after `lock_after` failures is the one refused.
            [
                (user_subject, throttle.lock_after + 1),
                (address_subject, throttle.address_lock_after + 1),
            ],
            throttle,
        )
        now = now_us()
        locked_until = max((s.locked_until for s in states.values()), default=0)
        if locked_until > now:
            raise ResourceExhausted(
                "too many failed logins for this username or from this address; "
                f"try again in {-(-(locked_until - now) // 1_000_000)} s",
                reason="LOGIN_LOCKED",
                retry_after=(locked_until - now) / 1_000_000,
            )

        def earlier(subject: str) -> int:  # the failures before this attempt
            state = states.get(subject)
            return max(0, state.failures - 1) if state is not None else 0

        # An address's failures slow in proportion to its higher lock threshold.
        address_scaled = earlier(address_subject) * throttle.lock_after
        delay = throttle.delay(
            max(earlier(user_subject), address_scaled // max(1, throttle.address_lock_after))
        )
        if delay:
            await asyncio.sleep(delay)
        found = await self._repository.login_record(username)
        stored_hash = found[1] if found is not None else _dummy_hash()
        matches = await asyncio.to_thread(_verify, stored_hash, password)
        user = found[0] if found is not None else None
        if user is None or not matches or user.revoke_time is not None:
            if user is not None:
                why = "wrong password" if not matches else "user revoked"
                event = audit.access_event(
                    user.tenant_id,
                    user.domain,
                    audit.CODE_LOGIN_FAILED,
                    "User",
                    user.id,
                    f"failed login of {user.username}: {why}",
                    {"username": user.username, "clientAddress": client_address, "reason": why},
                )
                await self._repository.record_login_failure(event)
            raise Unauthenticated("the username or the password is wrong", reason="LOGIN_FAILED")
        token, claims = self._codec.issue(user.id, user.tenant_id, now_us())
        await self._repository.record_login_success(
            user_subject,
            address_subject,
            audit.access_event(
                user.tenant_id,
                user.domain,
                audit.CODE_LOGIN_SUCCEEDED,
                "User",
                user.id,
                f"{user.username} signed in",
                {"username": user.username, "clientAddress": client_address},
            ),
        )
        return Session(token, claims, user)

    async def logout(self, principal: Principal) -> int:
        """Ends the calling token's session; returns when (µs)."""
        if not principal.token_id:
            raise FailedPrecondition(
                "logout ends a token's session; this call carries no token "
                "(Authorization: Bearer <token from POST /auth/login>)",
                reason="TOKEN_MISSING",
            )
        claims = TokenClaims(
            principal.user_id, principal.tenant_id, principal.token_id, 0, principal.expires_us
        )
        event = audit.access_event(
            principal.tenant_id,
            principal.domain,
            audit.CODE_LOGOUT,
            "User",
            principal.user_id,
            f"{principal.name} signed out",
            {"username": principal.name},
        )
        await self._repository.revoke_token(claims, event)
        return event.create_time

    async def principal_for_token(self, token: str) -> Principal:
        """The principal of a valid token; Unauthenticated with the reason otherwise."""
        claims = self._codec.verify(token)
        user = await self._repository.token_user(claims)
        if user is None:
            raise Unauthenticated(
                "the token was signed out, or its user was revoked or changed its password",
                reason="TOKEN_REVOKED",
            )
        return user.principal(claims)


class UserAdmin:
    """The users of a tenant, managed by its Admins (or the operator at the terminal)."""

    def __init__(self, repository: UserRepository) -> None:
        self._repository = repository

    def _granted(
        self, principal: Principal, role: Role, names: Iterable[str], field: str
    ) -> frozenset[Privilege] | None:
        """The user's own privileges; never more than the calling Admin holds."""
        try:
            granted = parse_privileges(list(names), role)
        except InvalidInput as error:
            raise InvalidInput([FieldViolation(field, v.rule) for v in error.violations]) from None
        beyond = (ROLE_PRIVILEGES[role] if granted is None else granted) - principal.privileges
        if beyond:
            raise PermissionDenied(
                "a user cannot be given privileges its creator lacks: "
                + ", ".join(p.value for p in Privilege if p in beyond),
                reason="PRIVILEGES_BEYOND_CALLER",
            )
        return granted

    def _check_domain(self, principal: Principal, domain: str) -> None:
        if not principal.covers(domain):
            raise PermissionDenied(
                f"domain {domain} is outside the caller's domain {principal.domain}",
                reason="NOT_AUTHORIZED_DOMAIN",
            )

    async def create(
        self,
        principal: Principal,
        username: str,
        password: str,
        role_text: str,
        privileges: Iterable[str] = (),
        domain: str = "",
    ) -> User:
        roles: list[Role] = []
        _collect(
            lambda: check_username(username, "user.username"),
            lambda: check_new_password(password),
            lambda: roles.append(_role(role_text)),
            lambda: check_domain_path(domain or principal.domain, "user.domain"),
        )
        role, domain = roles[0], domain or principal.domain
        self._check_domain(principal, domain)
        granted = self._granted(principal, role, privileges, "user.privileges")
        now = now_us()
        user = User(
            id=secrets.token_hex(8),
            tenant_id=principal.tenant_id,
            username=username,
            role=role,
            domain=domain,
            granted=granted,
            create_time=now,
            update_time=now,
        )
        password_hash = await asyncio.to_thread(hash_password, password)
        event = self._user_event(principal, user, audit.CODE_USER_CREATED, "created")
        if not await self._repository.insert_user(user, password_hash, event):
            raise AlreadyExists(f"the username {username} is taken", reason="USERNAME_TAKEN")
        return user

    async def get(self, principal: Principal, user_id: str) -> User:
        user = await self._repository.get_user(principal.tenant_id, user_id) if user_id else None
        if user is None or not principal.covers(user.domain):
            raise NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")
        return user

    async def list(
        self, principal: Principal, after_username: str = "", limit: int = DEFAULT_USER_PAGE
    ) -> list[User]:
        return await self._repository.list_users(
            principal.tenant_id, principal.domain, after_username, limit
        )

    async def update(
        self,
        principal: Principal,
        user_id: str,
        fields: Iterable[str],
        *,
        password: str = "",
        role_text: str = "",
        privileges: Iterable[str] = (),
        domain: str = "",
    ) -> User:
        wanted = list(fields)
        unknown = [f for f in wanted if f not in UPDATABLE]
        if not user_id or unknown or not wanted:
            violations = []
            if not user_id:
                violations.append(FieldViolation("user_id", "required"))
            if unknown or not wanted:
                violations.append(
                    FieldViolation("update_mask", f"name one or more of {', '.join(UPDATABLE)}")
                )
            raise InvalidInput(violations)
        roles: list[Role] = []
        _collect(
            lambda: check_new_password(password) if "password" in wanted else None,
            lambda: roles.append(_role(role_text)) if "role" in wanted else None,
            lambda: check_domain_path(domain, "user.domain") if "domain" in wanted else None,
        )
        user = await self.get(principal, user_id)
        if user.revoke_time is not None:
            raise NotFound(f"user {user_id} was revoked", reason="USER_REVOKED")
        role = roles[0] if roles else user.role
        granted = user.granted
        if "privileges" in wanted or "role" in wanted:
            names = (
                privileges
                if "privileges" in wanted
                else format_privileges(user.granted or ()).split(",")
            )
            granted = self._granted(principal, role, names, "user.privileges")
        if "domain" in wanted:
            self._check_domain(principal, domain)
        changed = dataclasses.replace(
            user,
            role=role,
            granted=granted,
            domain=domain if "domain" in wanted else user.domain,
            update_time=now_us(),
        )
        password_hash = None
        if "password" in wanted:
            password_hash = await asyncio.to_thread(hash_password, password)
        privileges_changed = (changed.role, changed.privileges) != (user.role, user.privileges)
        code = audit.CODE_USER_PRIVILEGES_CHANGED if privileges_changed else audit.CODE_USER_CHANGED
        event = self._user_event(principal, changed, code, f"changed ({', '.join(sorted(wanted))})")
        event.source["changed"] = sorted(wanted)
        if privileges_changed:
            event.source["previousRole"] = user.role.title
            event.source["previousPrivileges"] = format_privileges(user.privileges).split(",")
        # A new password ends every session of the user.
        void = "password" in wanted
        if not await self._repository.replace_user(changed, password_hash, void, event):
            raise NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")
        return changed

    async def revoke(self, principal: Principal, user_id: str) -> User:
        user = await self.get(principal, user_id)
        if user.revoke_time is not None:
            return user
        now = now_us()
        revoked = dataclasses.replace(user, revoke_time=now, update_time=now)
        event = self._user_event(principal, revoked, audit.CODE_USER_REVOKED, "revoked")
        if not await self._repository.replace_user(revoked, None, True, event):
            return await self.get(principal, user_id)
        return revoked

    @staticmethod
    def _user_event(principal: Principal, user: User, code: str, what: str) -> Event:
        return audit.access_event(
            user.tenant_id,
            user.domain,
            code,
            "User",
            user.id,
            f"user {user.username} {what} by {principal.name}",
            {**user.described(), "requestedBy": principal.name},
        )
