"""The tenant registry: devices and tenant apps, managed by a tenant's Admin keys."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Protocol

from service.domain.access import Principal, check_domain_path
from service.domain.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidInput,
    NotFound,
    PermissionDenied,
    invalid,
)
from service.domain.events import now_us

DEVICE_ENTITY_TYPE = "Device"
_REGISTRY_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")
MAX_DEVICE_ID = 128
MAX_APP_ID = 64
MAX_ENTITY_TYPE = 64
MAX_APP_NAME = 255
DEFAULT_REGISTRY_PAGE = 100
MAX_REGISTRY_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Device:
    """A registered device. Times are integer microseconds since the epoch."""

    tenant_id: str
    id: str
    domain: str
    entity_type: str = DEVICE_ENTITY_TYPE
    enabled: bool = True
    create_time: int = 0
    update_time: int = 0


@dataclass(frozen=True, slots=True)
class App:
    """A tenant app; device reports name it by id and need its licence to be active."""

    tenant_id: str
    id: str
    name: str
    licence_active: bool = True
    create_time: int = 0
    update_time: int = 0


class RegistryRepository(Protocol):
    """What the registry needs from the store; every call is scoped by the principal."""

    async def tenant_exists(self, principal: Principal, tenant_id: str) -> bool: ...

    async def insert_device(self, principal: Principal, device: Device) -> bool:
        """Inserts into the principal's tenant; False when the id is taken."""
        ...

    async def get_device(self, principal: Principal, device_id: str) -> Device | None:
        """The device of the principal's tenant, whatever its domain."""
        ...

    async def list_devices(
        self, principal: Principal, after_id: str, limit: int
    ) -> list[Device]: ...

    async def set_device_enabled(
        self, principal: Principal, device_id: str, enabled: bool, now: int
    ) -> None: ...

    async def insert_app(self, principal: Principal, app: App) -> bool: ...

    async def get_app(self, principal: Principal, app_id: str) -> App | None: ...

    async def list_apps(self, principal: Principal, after_id: str, limit: int) -> list[App]: ...

    async def set_app_licence(
        self, principal: Principal, app_id: str, active: bool, now: int
    ) -> None: ...


def check_registry_id(value: str, field: str, limit: int) -> str:
    if not value or len(value) > limit or not _REGISTRY_ID.match(value):
        raise invalid(field, f"required: 1 to {limit} letters, digits or ._:- (no spaces)")
    return value


def check_registry_page_size(size: int) -> int:
    if size == 0:
        return DEFAULT_REGISTRY_PAGE
    if not 1 <= size <= MAX_REGISTRY_PAGE:
        raise invalid("page_size", f"must be between 1 and {MAX_REGISTRY_PAGE}")
    return size


class RegistryManager:
    """Devices and apps of the caller's tenant; every operation needs an Admin key."""

    def __init__(self, repository: RegistryRepository) -> None:
        self._repository = repository

    async def create_device(
        self, principal: Principal, device_id: str, domain: str = "", entity_type: str = ""
    ) -> Device:
        violations: list[FieldViolation] = []
        for check in (
            lambda: check_registry_id(device_id, "device.id", MAX_DEVICE_ID),
            lambda: check_domain_path(domain or principal.domain, "device.domain"),
            lambda: check_registry_id(
                entity_type or DEVICE_ENTITY_TYPE, "device.entity_type", MAX_ENTITY_TYPE
            ),
        ):
            try:
                check()
            except InvalidInput as error:
                violations.extend(error.violations)
        if violations:
            raise InvalidInput(violations)
        domain = domain or principal.domain
        if not principal.covers(domain):
            raise PermissionDenied(
                f"domain {domain} is outside this key's domain {principal.domain}",
                reason="NOT_AUTHORIZED_DOMAIN",
            )
        now = now_us()
        device = Device(
            tenant_id=principal.tenant_id,
            id=device_id,
            domain=domain,
            entity_type=entity_type or DEVICE_ENTITY_TYPE,
            create_time=now,
            update_time=now,
        )
        if not await self._repository.insert_device(principal, device):
            raise AlreadyExists(
                f"tenant {principal.tenant_id} already has a device {device_id}",
                reason="DEVICE_EXISTS",
            )
        return device

    async def list_devices(
        self, principal: Principal, after_id: str = "", limit: int = DEFAULT_REGISTRY_PAGE
    ) -> list[Device]:
        return await self._repository.list_devices(principal, after_id, limit)

    async def disable_device(self, principal: Principal, device_id: str) -> Device:
        device = await self._repository.get_device(principal, device_id)
        if device is None:
            raise NotFound(f"device {device_id} not found", reason="DEVICE_NOT_FOUND")
        if not principal.covers(device.domain):
            raise PermissionDenied(
                f"device {device_id} is outside this key's domain {principal.domain}",
                reason="NOT_AUTHORIZED_DOMAIN",
            )
        if not device.enabled:
            return device
        now = now_us()
        await self._repository.set_device_enabled(principal, device_id, False, now)
        return dataclasses.replace(device, enabled=False, update_time=now)

    async def create_app(self, principal: Principal, app_id: str, name: str = "") -> App:
        check_registry_id(app_id, "app.id", MAX_APP_ID)
        if len(name) > MAX_APP_NAME:
            raise invalid("app.name", f"at most {MAX_APP_NAME} characters")
        now = now_us()
        app = App(principal.tenant_id, app_id, name or app_id, True, now, now)
        if not await self._repository.insert_app(principal, app):
            raise AlreadyExists(
                f"tenant {principal.tenant_id} already has an app {app_id}", reason="APP_EXISTS"
            )
        return app

    async def list_apps(
        self, principal: Principal, after_id: str = "", limit: int = DEFAULT_REGISTRY_PAGE
    ) -> list[App]:
        return await self._repository.list_apps(principal, after_id, limit)

    async def disable_app(self, principal: Principal, app_id: str) -> App:
        app = await self._repository.get_app(principal, app_id)
        if app is None:
            raise NotFound(f"app {app_id} not found", reason="APP_NOT_FOUND")
        if not app.licence_active:
            return app
        now = now_us()
        await self._repository.set_app_licence(principal, app_id, False, now)
        return dataclasses.replace(app, licence_active=False, update_time=now)
