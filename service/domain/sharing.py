"""Sharing (docs/rest-v3.md#sharing): a tenant lets another tenant read the events of one of its
entities.

Shared events are read-only for the receiver and only listed or read when it asks for them
(`includeShared`); any key of the receiving tenant may read them, whatever its domain, since
the owner's domain paths mean nothing in the receiver's tree.

A share reaches only the entity's events inside the sharer's domain subtree, like everything
else that key does: a key limited to /root/sub1 shares, lists and unshares within /root/sub1,
and the receiver never sees the entity's events of /root/sub2 through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.domain.access import ROOT_DOMAIN, Principal
from service.domain.errors import AlreadyExists, FieldViolation, InvalidInput, NotFound
from service.domain.events import now_us

MAX_ENTITY_ID = 128


@dataclass(frozen=True, slots=True)
class EntityShare:
    owner_tenant_id: str
    entity_id: str
    tenant_id: str
    create_time: int
    # The sharer's domain subtree: the entity's events inside it are shared.
    domain: str = ROOT_DOMAIN


class ShareRepository(Protocol):
    async def insert(self, share: EntityShare) -> bool: ...

    async def delete(self, owner: Principal, entity_id: str, tenant_id: str) -> bool: ...

    async def list_for(self, principal: Principal) -> list[EntityShare]: ...

    async def tenant_exists(self, tenant_id: str) -> bool: ...


class SharingManager:
    def __init__(self, repository: ShareRepository) -> None:
        self._repository = repository

    async def share(self, principal: Principal, entity_id: str, tenant_id: str) -> EntityShare:
        violations = []
        if not entity_id or len(entity_id) > MAX_ENTITY_ID:
            violations.append(FieldViolation("entityId", f"1 to {MAX_ENTITY_ID} characters"))
        if not tenant_id:
            violations.append(FieldViolation("tenantId", "is required"))
        elif tenant_id == principal.tenant_id:
            violations.append(FieldViolation("tenantId", "must be another tenant than yours"))
        if violations:
            raise InvalidInput(violations)
        if not await self._repository.tenant_exists(tenant_id):
            raise NotFound(f"tenant {tenant_id} not found", reason="TENANT_NOT_FOUND")
        share = EntityShare(principal.tenant_id, entity_id, tenant_id, now_us(), principal.domain)
        if not await self._repository.insert(share):
            raise AlreadyExists(
                f"entity {entity_id} is already shared with tenant {tenant_id}",
                reason="SHARE_EXISTS",
            )
        return share

    async def unshare(self, principal: Principal, entity_id: str, tenant_id: str) -> None:
        if not await self._repository.delete(principal, entity_id, tenant_id):
            raise NotFound(
                f"entity {entity_id} is not shared with tenant {tenant_id}",
                reason="SHARE_NOT_FOUND",
            )

    async def list_shares(self, principal: Principal) -> list[EntityShare]:
        """The shares the principal's tenant made inside the principal's subtree, and those
        its tenant received."""
        return await self._repository.list_for(principal)
