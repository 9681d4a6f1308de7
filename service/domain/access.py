"""Who is calling: the principal resolved once per call from an API key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from service.domain.errors import PermissionDenied, invalid

ROOT_DOMAIN = "/"
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


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: its tenant, role and domain subtree, and the key's id and name."""

    tenant_id: str
    key_id: str
    name: str
    role: Role
    domain: str = ROOT_DOMAIN

    def require(self, role: Role) -> None:
        if self.role < role:
            raise PermissionDenied(
                f"this API key has role {self.role.title}; the call needs {role.title}",
                reason="ROLE_TOO_LOW",
            )

    def covers(self, path: str) -> bool:
        return domain_covers(self.domain, path)
