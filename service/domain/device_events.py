"""Device event reports (docs/device-api.md): who may report for which tenant and device, what a
report must contain, and the duplicate rule. A report becomes an ordinary event."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.domain.access import Principal
from service.domain.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidInput,
    NotFound,
    PermissionDenied,
    invalid,
)
from service.domain.events import (
    MAX_PAYLOAD_BYTES,
    MAX_TIMESTAMP_US,
    Event,
    Payload,
    new_event_id,
    now_us,
)
from service.domain.registry import MAX_APP_ID, Device, RegistryRepository, check_registry_id
from service.domain.storms import StormControl

MAX_TYPE_ID = 24
MAX_DESCRIPTION = 255
MIN_SEVERITY, MAX_SEVERITY = 1, 5
PENDING_BATCH = 500
_TYPE_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")
# The REST JSON names, in the order of docs/device-api.md#request.
REPORT_FIELDS = ("typeId", "description", "appId", "severity", "data", "timestamp")


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """A checked report; `timestamp` in microseconds since the epoch."""

    type_id: str
    description: str
    app_id: str
    severity: int
    data: dict[str, Any]
    timestamp: int

    def fingerprint(self) -> str:
        """What makes two reports of one device, type and time the same event: a hash of the
        other fields, with the data's keys sorted and its JSON types kept (1 is not 1.0)."""
        canonical = json.dumps(
            [self.description, self.app_id, self.severity, self.data],
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def check_report(
    fields: Mapping[str, Any], syntax_violations: Sequence[FieldViolation] = ()
) -> DeviceReport:
    """Checks a report whose values are already typed (the REST codec or the gRPC converter
    did the syntax). Keys are the REST JSON names; a missing or None value is missing.
    `syntax_violations` (wrong JSON types, unknown fields) are reported together with these
    rules' violations, once per field."""
    violations = list(syntax_violations)
    already = {v.field for v in syntax_violations}

    def broken(name: str, rule: str) -> None:
        if name not in already:
            violations.append(FieldViolation(name, rule))

    type_id = fields.get("typeId") or ""
    if not type_id or len(type_id) > MAX_TYPE_ID or not _TYPE_ID.match(type_id):
        broken("typeId", f"required: a machine name of 1 to {MAX_TYPE_ID} letters, digits or ._:-")
    description = fields.get("description") or ""
    if not description or len(description) > MAX_DESCRIPTION:
        broken("description", f"required: 1 to {MAX_DESCRIPTION} characters")
    elif "\x00" in description:
        broken("description", "must not contain NUL characters")
    app_id = fields.get("appId") or ""
    try:
        check_registry_id(app_id, "appId", MAX_APP_ID)
    except InvalidInput as error:
        for violation in error.violations:
            broken(violation.field, violation.rule)
    severity = fields.get("severity")
    if severity is None or not MIN_SEVERITY <= severity <= MAX_SEVERITY:
        broken("severity", f"required: an integer from {MIN_SEVERITY} to {MAX_SEVERITY}")
    data = fields.get("data")
    if not isinstance(data, dict):
        broken("data", "required: a JSON object")
    elif len(json.dumps(data, ensure_ascii=False).encode()) > MAX_PAYLOAD_BYTES:
        broken("data", f"at most {MAX_PAYLOAD_BYTES} bytes of JSON")
    timestamp = fields.get("timestamp")
    if timestamp is None:
        broken("timestamp", "required: epoch milliseconds")
    elif not 0 <= timestamp <= MAX_TIMESTAMP_US:
        broken("timestamp", "must lie between 1970 and 9999")
    if violations:
        raise InvalidInput(violations)
    assert isinstance(data, dict) and severity is not None and timestamp is not None
    return DeviceReport(type_id, description, app_id, severity, data, timestamp)


class DeviceEventRepository(Protocol):
    """How reports are stored; the duplicate rule is enforced by the database."""

    async def insert_unique(self, event: Event, fingerprint: str) -> None:
        """Stores the event; raises AlreadyExists (with the existing id) for a duplicate."""
        ...

    async def find_duplicate(
        self, principal: Principal, event: Event, fingerprint: str
    ) -> str | None: ...

    async def insert_pending(self, event: Event, fingerprint: str) -> None:
        """Saves the event for later; raises AlreadyExists when the same is already pending."""
        ...

    async def process_pending(self, limit: int) -> tuple[int, int]:
        """Turns up to `limit` pending reports into events; returns (stored, duplicates)."""
        ...


def _outside(message: str, reason: str) -> PermissionDenied:
    return PermissionDenied(message, reason=reason)


class DeviceEventReporter:
    """Checks access, the report and the app's licence, then stores or queues the event."""

    def __init__(
        self,
        registry: RegistryRepository,
        events: DeviceEventRepository,
        storms: StormControl | None = None,
    ) -> None:
        self._registry = registry
        self._events = events
        # Device reports are never alarms: beyond a storm rate they are refused.
        self._storms = storms

    async def check_access(self, principal: Principal, tenant_id: str, device_id: str) -> Device:
        """The device the principal may report for: 404 before 403, tenant before device."""
        await self._check_tenant(principal, tenant_id)
        device = None
        if device_id and "\x00" not in device_id:
            device = await self._registry.get_device(principal, device_id)
        if device is None:
            raise NotFound(
                f"deviceId: tenant {tenant_id} has no device {device_id!r}",
                reason="DEVICE_NOT_FOUND",
            )
        if not principal.covers(device.domain):
            raise _outside(
                f"deviceId: device {device_id} is outside this key's domain {principal.domain}",
                "NOT_AUTHORIZED_DOMAIN",
            )
        if not device.enabled:
            raise _outside(f"deviceId: device {device_id} is disabled", "DEVICE_DISABLED")
        return device

    async def report(
        self,
        principal: Principal,
        device: Device,
        fields: Mapping[str, Any],
        *,
        respond_async: bool = False,
        syntax_violations: Sequence[FieldViolation] = (),
    ) -> tuple[Event, bool]:
        """Stores the report of a device from check_access; returns the event and whether it
        is pending (saved durably, stored as an event by process_pending)."""
        report = check_report(fields, syntax_violations)
        app = await self._registry.get_app(principal, report.app_id)
        if app is None:
            raise invalid(
                "appId",
                f"invalid licence: {report.app_id} is not an app of tenant {device.tenant_id}",
                reason="APP_NOT_REGISTERED",
            )
        if not app.licence_active:
            raise _outside(
                f"appId: invalid licence: the licence of app {app.id} is not active",
                "LICENCE_INACTIVE",
            )
        now = now_us()
        event = Event(
            id=new_event_id(),
            tenant_id=principal.tenant_id,
            type_id=report.type_id,
            entity_type=device.entity_type,
            entity_id=device.id,
            domain=device.domain,
            timestamp=report.timestamp,
            create_time=now,
            update_time=now,
            etag=1,
            severity=report.severity,
            description=report.description,
            app_id=report.app_id,
            payload=Payload(
                "application/json",
                json.dumps(report.data, ensure_ascii=False, separators=(",", ":")).encode(),
            ),
        )
        storm = await self._storms.check(event) if self._storms is not None else None
        if storm is not None:
            assert self._storms is not None
            self._storms.refused(storm)
            raise storm.refusal()
        fingerprint = report.fingerprint()
        if not respond_async:
            await self._events.insert_unique(event, fingerprint)
            return event, False
        existing = await self._events.find_duplicate(principal, event, fingerprint)
        if existing is not None:
            raise duplicate(existing)
        await self._events.insert_pending(event, fingerprint)
        return event, True

    async def _check_tenant(self, principal: Principal, tenant_id: str) -> None:
        if tenant_id != principal.tenant_id:
            exists = (
                bool(tenant_id)
                and "\x00" not in tenant_id
                and await self._registry.tenant_exists(principal, tenant_id)
            )
            if not exists:
                raise NotFound(
                    f"tenantId: tenant {tenant_id!r} does not exist", reason="TENANT_NOT_FOUND"
                )
            raise _outside(
                f"tenantId: this API key has no access to tenant {tenant_id}",
                "TENANT_ACCESS_DENIED",
            )

    async def process_pending(self, limit: int = PENDING_BATCH) -> tuple[int, int]:
        """Stores pending reports as events, dropping those that duplicate a stored event."""
        return await self._events.process_pending(limit)


def duplicate(existing_id: str) -> AlreadyExists:
    return AlreadyExists(
        "an event with the same tenantId, deviceId, typeId, timestamp, description, appId, "
        f"severity and data exists already: {existing_id}",
        reason="DUPLICATE_EVENT",
        existing_id=existing_id,
    )
