"""Who is calling: the principal resolved once per call from its credentials, and the
privileges that roles grant."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum

from service.domain.errors import PermissionDenied, invalid

ROOT_DOMAIN = "/"
# Every API key begins so (`emk_<key id>_<secret>`): the key store issues it, and a bearer token
# that begins so is taken for a key.
API_KEY_PREFIX = "emk_"
_DOMAIN_PATH = re.compile(r"^(/[A-Za-z0-9_.\-]{1,64}){1,16}$")


class Role(IntEnum):
    """What a key may do; each role includes the ones below it."""

    READ = 1
    READ_WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        """Accepts `Read`, `ReadWrite`, `Admin` in any case, with or without `_`."""
        names = {"read": cls.READ, "readwrite": cls.READ_WRITE, "admin": cls.ADMIN}
        role = names.get(text.replace("_", "").replace("-", "").lower())
        if role is None:
            raise invalid("role", "must be one of Read, ReadWrite, Admin")
        return role

    @property
    def title(self) -> str:
        return {Role.READ: "Read", Role.READ_WRITE: "ReadWrite", Role.ADMIN: "Admin"}[self]


def check_domain_path(path: str, field: str = "domain") -> str:
    """Returns `path` when it is `/` or `/a/b/...` (segments of letters, digits, `_.-`)."""
    if path == ROOT_DOMAIN or _DOMAIN_PATH.match(path):
        return path
    raise invalid(field, "must be / or a path such as /root/sub1 (letters, digits, _ . -)")


def domain_covers(subtree: str, path: str) -> bool:
    """True when `path` is `subtree` or lies below it: /root/sub1 covers /root/sub1/sub11."""
    return subtree == ROOT_DOMAIN or path == subtree or path.startswith(subtree + "/")


class Privilege(Enum):
    """What a call may do, named as the find API names them (docs/access.md#roles-and-privileges);
    each rpc needs one (see
    service.privileges). The reason of a refusal names the missing one."""

    EVENTS_READ = "Events.READ"
    EVENTS_CREATE = "Events.CREATE"
    EVENTS_UPDATE = "Events.UPDATE"
    EVENTS_DELETE = "Events.DELETE"
    EVENT_TYPES_READ = "EventTypes.READ"
    EVENT_TYPES_WRITE = "EventTypes.WRITE"
    JOBS_WRITE = "Jobs.WRITE"
    SHARING_WRITE = "Sharing.WRITE"
    ADMIN = "Admin"

    @property
    def reason(self) -> str:
        return f"MISSING_PRIVILEGE_{self.name}"

    @classmethod
    def parse(cls, text: str, field: str = "privileges") -> Privilege:
        """A privilege by its name (any case) or by the platform model's alias (`read event.tenant`,
        docs/platform-events.md#permissions)."""
        wanted = " ".join(text.split()).lower()
        found = _PRIVILEGE_NAMES.get(wanted)
        if found is None:
            raise invalid(
                field,
                f"unknown privilege {text!r}; use one of {', '.join(p.value for p in cls)}"
                f" (or the aliases {', '.join(repr(a) for a in PERMISSION_ALIASES)})",
            )
        return found


# The platform model names its permissions `<action> event.tenant`
# (docs/platform-events.md#permissions).
PERMISSION_ALIASES = {
    "read event.tenant": Privilege.EVENTS_READ,
    "create event.tenant": Privilege.EVENTS_CREATE,
}
_PRIVILEGE_NAMES = {p.value.lower(): p for p in Privilege} | PERMISSION_ALIASES

_READ = frozenset({Privilege.EVENTS_READ, Privilege.EVENT_TYPES_READ})
_READ_WRITE = _READ | {
    Privilege.EVENTS_CREATE,
    Privilege.EVENTS_UPDATE,
    Privilege.EVENTS_DELETE,
    Privilege.EVENT_TYPES_WRITE,
    Privilege.JOBS_WRITE,
}
# What each role grants; a key or user may be given a narrower set.
ROLE_PRIVILEGES: dict[Role, frozenset[Privilege]] = {
    Role.READ: _READ,
    Role.READ_WRITE: _READ_WRITE,
    Role.ADMIN: frozenset(Privilege),
}


def parse_privileges(names: Iterable[str], role: Role) -> frozenset[Privilege] | None:
    """The privileges named (None when none are: the role's own), each within the role."""
    chosen = frozenset(Privilege.parse(n) for n in names if n.strip())
    if not chosen:
        return None
    beyond = sorted(p.value for p in chosen - ROLE_PRIVILEGES[role])
    if beyond:
        raise invalid("privileges", f"role {role.title} does not grant {', '.join(beyond)}")
    return chosen


def format_privileges(privileges: Iterable[Privilege]) -> str:
    """Privileges in a stable order (the enum's), comma-separated: how they are stored."""
    chosen = set(privileges)
    return ",".join(p.value for p in Privilege if p in chosen)


def privileges_from_text(text: str | None, role: Role) -> frozenset[Privilege]:
    """What a stored key or user may do: its own set, or its role's when it has none."""
    if not text:
        return ROLE_PRIVILEGES[role]
    return frozenset(Privilege(name) for name in text.split(",")) & ROLE_PRIVILEGES[role]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: its tenant, role, privileges and domain subtree, and its credentials' ids
    and name (the key's, or the signed-in user's)."""

    tenant_id: str
    key_id: str
    name: str
    role: Role
    domain: str = ROOT_DOMAIN
    # None: everything the role grants.
    granted: frozenset[Privilege] | None = None
    user_id: str = ""
    token_id: str = ""
    # When the token expires (µs since the epoch); 0 for API keys, which do not.
    expires_us: int = 0

    @property
    def privileges(self) -> frozenset[Privilege]:
        return ROLE_PRIVILEGES[self.role] if self.granted is None else self.granted

    def require(self, privilege: Privilege) -> None:
        if privilege not in self.privileges:
            have = format_privileges(self.privileges).replace(",", ", ") or "none"
            raise PermissionDenied(
                f"this call needs privilege {privilege.value}, which these credentials "
                f"(role {self.role.title}) lack; they have {have}",
                reason=privilege.reason,
                metadata={"privilege": privilege.value},
            )

    def covers(self, path: str) -> bool:
        return domain_covers(self.domain, path)
