"""Custom event types (docs/rest-v3.md#event-types): their fields, single inheritance rooted at
StandardEvent, visibility (LOCAL to the owner tenant, GLOBAL to all), retention, and the checks that
custom events must pass. Field names are REST JSON names; errors name the EventType JSON field."""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from service.domain.access import Principal, Privilege
from service.domain.conditions import matches
from service.domain.custom_fields import (
    FieldDefinition,
    FieldType,
    canonical_type_id,
)
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    invalid,
    stale,
)
from service.domain.event_fields import FIELDS
from service.domain.events import STANDARD_EVENT, Event, new_event_id, now_us
from service.domain.filters import StandardFields, compile_filter

# Siemens allows 4 levels; 8 leaves room for a platform type, a vendor type and a few
# refinements while keeping the per-event ancestor walk short.
MAX_DEPTH = 8
DEFAULT_TTL_DAYS = 35
MAX_TTL_DAYS = 36_500
MAX_FIELDS = 100
MAX_ENUM_VALUES = 100
MAX_NAME = 255
# At least 128, as the platform allows: its ids are often reverse domain names.
MAX_ID = 128
DEFAULT_PAGE_SIZE = 100
# Platform event codes (0-9999 are reserved for internal events, docs/event.md#codes),
# recorded in the owner tenant's events in the same transaction as the change.
CODE_EVENT_TYPE_CREATED = "1201"
CODE_EVENT_TYPE_CHANGED = "1202"
CODE_EVENT_TYPE_DELETED = "1203"
MAX_PAGE_SIZE = 1000
_TYPE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# A JSON key that is also safe in filter paths and SQL JSON paths.
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Every name a stored event carries at the top level of its REST JSON: a custom field there
# would be ambiguous.
RESERVED_FIELD_NAMES = frozenset(f.json for f in FIELDS) | {"_links"}


class Scope(StrEnum):
    LOCAL = "LOCAL"
    GLOBAL = "GLOBAL"


@dataclass(frozen=True, slots=True)
class EventType:
    """A stored type. `parent_id` is STANDARD_EVENT for a root type; times in microseconds."""

    id: str
    tenant_id: str
    name: str
    parent_id: str = STANDARD_EVENT
    fields: tuple[FieldDefinition, ...] = ()
    scope: Scope = Scope.LOCAL
    ttl_days: int = DEFAULT_TTL_DAYS
    etag: int = 1
    create_time: int = 0
    update_time: int = 0
    # False: every ALARM of this type is a new alarm (service/domain/alarms.py).
    deduplicate_alarms: bool = True

    def visible_to(self, principal: Principal) -> bool:
        return self.scope == Scope.GLOBAL or self.tenant_id == principal.tenant_id


# The built-in root as `GET /eventTypes/{id}` answers it for either of its ids: GLOBAL, owned by
# the platform itself ("core", no tenant), its fields the standard event fields that the
# platform documents for it. It is no row in the store, so it is never listed, changed or
# deleted (only its owner could).
STANDARD_EVENT_OWNER = "core"
STANDARD_EVENT_TYPE = EventType(
    id=STANDARD_EVENT,
    tenant_id=STANDARD_EVENT_OWNER,
    name=STANDARD_EVENT.rpartition(".")[2],
    parent_id="",
    fields=tuple(
        FieldDefinition(name, kind, required=False, filterable=True, updatable=updatable)
        for name, kind, updatable in (
            ("entityId", FieldType.STRING, False),
            ("correlationId", FieldType.STRING, False),
            ("timestamp", FieldType.TIMESTAMP, False),
            ("severity", FieldType.INTEGER, True),
            ("code", FieldType.STRING, True),
            ("description", FieldType.STRING, True),
            ("source", FieldType.STRING, True),
            ("acknowledged", FieldType.BOOLEAN, True),
        )
    ),
    scope=Scope.GLOBAL,
)


# What a type filter may name: REST JSON name -> (EventType attribute, filter type).
TYPE_FILTER_FIELDS: StandardFields = {
    "id": ("id", "string"),
    "name": ("name", "string"),
    "parentId": ("parent_id", "string"),
    "scope": ("scope", "string"),
    "owner": ("tenant_id", "string"),
    "ttl": ("ttl_days", "integer"),
    "deduplicateAlarms": ("deduplicate_alarms", "boolean"),
    "etag": ("etag", "integer"),
    "createTime": ("create_time", "timestamp"),
    "updateTime": ("update_time", "timestamp"),
}
# The most visible types a type search considers.
MAX_VISIBLE_TYPES = 100_000


@dataclass(frozen=True, slots=True)
class TypeQuery:
    """A search of event types: a JSON filter, sort keys (attribute, descending), a page."""

    filter: str = ""
    sort: tuple[tuple[str, bool], ...] = ()
    page: int = 0
    size: int = 20


@dataclass(frozen=True, slots=True)
class TypePage:
    types: list[EventType]
    total: int
    number: int
    size: int


def parse_type_sort(keys: list[tuple[str, str]]) -> tuple[tuple[str, bool], ...]:
    """(JSON field name, asc/desc/'') pairs as sort keys over TYPE_FILTER_FIELDS."""
    result = []
    for name, direction in keys:
        field = TYPE_FILTER_FIELDS.get(name)
        if field is None:
            raise invalid(
                "sort", f"cannot sort by {name!r}; sortable: {', '.join(TYPE_FILTER_FIELDS)}"
            )
        if direction.lower() not in ("", "asc", "desc"):
            raise invalid("sort", f"direction of {name!r} must be asc or desc, not {direction!r}")
        result.append((field[0], direction.lower() == "desc"))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class EventTypeSpec:
    """What a caller sends to create or change a type. Empty, zero and None mean "not given":
    a default on create, the stored value on update (`parent_id` StandardEvent moves a type
    to the root)."""

    id: str = ""
    name: str = ""
    parent_id: str = ""
    fields: tuple[FieldDefinition, ...] | None = None
    scope: Scope | None = None
    ttl_days: int = 0
    deduplicate_alarms: bool | None = None


DeleteOutcome = Literal["deleted", "stale", "has_children", "has_events", "missing"]


class EventTypeRepository(Protocol):
    """What the domain needs from the store; every call is scoped by the principal."""

    async def get(self, principal: Principal, type_id: str) -> EventType | None:
        """The type when the principal sees it (its tenant's, or GLOBAL)."""
        ...

    async def chain(self, principal: Principal, type_id: str) -> list[EventType]:
        """The type and its ancestors, nearest first, as far as the principal sees them;
        empty when the type itself is not visible."""
        ...

    async def page(
        self, principal: Principal, offset: int, limit: int
    ) -> tuple[list[EventType], int]: ...

    async def descendants(self, principal: Principal, type_id: str) -> list[EventType]:
        """Every type below one the principal's tenant owns, of any tenant: their fields and
        depth depend on it."""
        ...

    async def visible_fields(self, principal: Principal) -> list[FieldDefinition]: ...

    async def insert(self, event_type: EventType, audit: Event) -> bool:
        """Stores the type and its audit event together; False when the id is taken."""
        ...

    async def replace(self, event_type: EventType, expected_etag: int, audit: Event) -> bool: ...

    async def delete(
        self, principal: Principal, type_id: str, expected_etag: int | None, audit: Event
    ) -> DeleteOutcome:
        """Deletes an owned type and records the audit event in one transaction, unless the
        type is in use or the etag stale."""
        ...


def _check_spec(spec: EventTypeSpec, *, creating: bool) -> list[FieldViolation]:
    violations = []
    if creating and spec.id and not _TYPE_ID.match(spec.id):
        violations.append(
            FieldViolation("id", f"a machine name of at most {MAX_ID} letters, digits or ._:-")
        )
    if creating and canonical_type_id(spec.id) == STANDARD_EVENT:
        violations.append(FieldViolation("id", f"{STANDARD_EVENT} is the built-in root type"))
    if not spec.name.strip():
        violations.append(FieldViolation("name", "required"))
    elif len(spec.name) > MAX_NAME:
        violations.append(FieldViolation("name", f"at most {MAX_NAME} characters"))
    if spec.parent_id and not _TYPE_ID.match(spec.parent_id):
        violations.append(FieldViolation("parentId", "must be an event type id"))
    if not 0 <= spec.ttl_days <= MAX_TTL_DAYS:
        violations.append(FieldViolation("ttl", f"days, 1 to {MAX_TTL_DAYS}"))
    fields = spec.fields or ()
    if len(fields) > MAX_FIELDS:
        violations.append(FieldViolation("fields", f"at most {MAX_FIELDS} fields"))
    seen: set[str] = set()
    for index, definition in enumerate(fields):
        where = f"fields[{index}]"
        if not _FIELD_NAME.match(definition.name):
            violations.append(
                FieldViolation(
                    f"{where}.name", "a letter, then letters, digits or _, at most 64 characters"
                )
            )
        elif definition.name in RESERVED_FIELD_NAMES:
            violations.append(
                FieldViolation(f"{where}.name", f"{definition.name} is a standard event field")
            )
        elif definition.name in seen:
            violations.append(FieldViolation(f"{where}.name", f"{definition.name} appears twice"))
        seen.add(definition.name)
        if definition.type == FieldType.ENUM:
            values = definition.values
            if not 1 <= len(values) <= MAX_ENUM_VALUES or len(set(values)) != len(values):
                violations.append(
                    FieldViolation(
                        f"{where}.values",
                        f"an ENUM field needs 1 to {MAX_ENUM_VALUES} distinct values",
                    )
                )
            elif any(not v or len(v) > MAX_NAME for v in values):
                violations.append(
                    FieldViolation(f"{where}.values", f"each value 1 to {MAX_NAME} characters")
                )
        elif definition.values:
            violations.append(FieldViolation(f"{where}.values", "only ENUM fields have values"))
    return violations


def _clashes(
    own: tuple[FieldDefinition, ...], others: list[EventType], relation: str
) -> list[FieldViolation]:
    taken = {d.name: t.id for t in others for d in t.fields}
    return [
        FieldViolation(
            f"fields[{index}].name",
            f"{d.name} is already a field of {relation} event type {taken[d.name]}",
        )
        for index, d in enumerate(own)
        if d.name in taken
    ]


def audit_event(principal: Principal, type_id: str, code: str, what: str) -> Event:
    """The internal event that records a change of an event type (docs/event.md#internal-events)."""
    now = now_us()
    return Event(
        id=new_event_id(),
        tenant_id=principal.tenant_id,
        type_id=STANDARD_EVENT,
        entity_type="EventType",
        entity_id=type_id,
        domain=principal.domain,
        timestamp=now,
        create_time=now,
        update_time=now,
        severity=5,
        code=code,
        description=f"event type {type_id} {what} by {principal.name}",
        source={"eventType": type_id, "requestedBy": principal.name},
        classification="INTERNAL",
        internal=True,
    )


def _height(type_id: str, descendants: list[EventType]) -> int:
    """How many levels of types hang below `type_id`."""
    children: dict[str, list[str]] = {}
    for t in descendants:
        children.setdefault(t.parent_id, []).append(t.id)
    height, level = 0, [type_id]
    while True:
        level = [c for parent in level for c in children.get(parent, [])]
        if not level:
            return height
        height += 1


class EventTypeManager:
    """The event type operations, each authorised against the calling principal."""

    def __init__(self, repository: EventTypeRepository) -> None:
        self._repository = repository

    async def create(self, principal: Principal, spec: EventTypeSpec) -> EventType:
        scope = spec.scope or Scope.LOCAL
        if scope == Scope.GLOBAL:
            principal.require(Privilege.ADMIN)
        spec = dataclasses.replace(spec, fields=spec.fields or ())
        violations = _check_spec(spec, creating=True)
        if violations:
            raise InvalidInput(violations)
        type_id = spec.id or str(uuid.uuid4())
        ancestors = await self._ancestors(principal, spec.parent_id, scope, type_id)
        self._check_depth(ancestors, 0)
        violations = _clashes(spec.fields or (), ancestors, "ancestor")
        if violations:
            raise InvalidInput(violations)
        now = now_us()
        event_type = EventType(
            id=type_id,
            tenant_id=principal.tenant_id,
            name=spec.name,
            parent_id=ancestors[0].id if ancestors else STANDARD_EVENT,
            fields=spec.fields or (),
            scope=scope,
            ttl_days=spec.ttl_days or DEFAULT_TTL_DAYS,
            deduplicate_alarms=spec.deduplicate_alarms is not False,
            etag=1,
            create_time=now,
            update_time=now,
        )
        audit = audit_event(principal, type_id, CODE_EVENT_TYPE_CREATED, "created")
        if not await self._repository.insert(event_type, audit):
            raise AlreadyExists(
                f"an event type with id {type_id} already exists", reason="EVENT_TYPE_EXISTS"
            )
        return event_type

    async def get(self, principal: Principal, type_id: str) -> EventType:
        if canonical_type_id(type_id) == STANDARD_EVENT:
            return STANDARD_EVENT_TYPE
        event_type = await self._repository.get(principal, type_id)
        if event_type is None:
            raise NotFound(f"event type {type_id} not found", reason="EVENT_TYPE_NOT_FOUND")
        return event_type

    async def search_types(self, principal: Principal, query: TypeQuery) -> TypePage:
        """A page of the visible types that match a JSON filter (the list filter language
        over TYPE_FILTER_FIELDS), in the asked order. Types are few per tenant, so they are
        filtered, sorted and paged in memory."""
        if not 1 <= query.size <= MAX_PAGE_SIZE:
            raise invalid("size", f"must be between 1 and {MAX_PAGE_SIZE}")
        if query.page < 0:
            raise invalid("page", "must be 0 or more")
        condition = compile_filter(query.filter, fields=TYPE_FILTER_FIELDS)
        visible, _ = await self._repository.page(principal, 0, MAX_VISIBLE_TYPES)
        found = [t for t in visible if matches(condition, functools.partial(getattr, t))]
        # Stable sorts from the last key to the first give the keys their precedence.
        for name, descending in reversed(query.sort or (("id", False),)):
            found.sort(key=operator.attrgetter(name), reverse=descending)
        start = query.page * query.size
        return TypePage(found[start : start + query.size], len(found), query.page, query.size)

    async def list_types(
        self, principal: Principal, offset: int, page_size: int
    ) -> tuple[list[EventType], int]:
        if page_size == 0:
            page_size = DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise invalid("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        return await self._repository.page(principal, offset, page_size)

    async def update(
        self,
        principal: Principal,
        type_id: str,
        spec: EventTypeSpec,
        expected_etag: int | None,
    ) -> EventType:
        stored = await self._owned(principal, type_id)
        # What the caller leaves out stays as stored, as with event updates.
        spec = dataclasses.replace(
            spec,
            name=spec.name or stored.name,
            parent_id=spec.parent_id or stored.parent_id,
            fields=stored.fields if spec.fields is None else spec.fields,
            scope=spec.scope or stored.scope,
            ttl_days=spec.ttl_days or stored.ttl_days,
            deduplicate_alarms=stored.deduplicate_alarms
            if spec.deduplicate_alarms is None
            else spec.deduplicate_alarms,
        )
        fields = spec.fields or ()
        scope = spec.scope or stored.scope
        if Scope.GLOBAL in (scope, stored.scope):
            principal.require(Privilege.ADMIN)
        if spec.id and spec.id != type_id:
            raise invalid("id", "differs from the id in the path; ids cannot change")
        violations = _check_spec(spec, creating=False)
        if violations:
            raise InvalidInput(violations)
        if expected_etag is not None and expected_etag != stored.etag:
            raise PreconditionFailed(
                f"etag {expected_etag} is stale; the event type is at {stored.etag}"
            )
        ancestors = await self._ancestors(principal, spec.parent_id, scope, type_id)
        descendants = await self._repository.descendants(principal, type_id)
        self._check_depth(ancestors, _height(type_id, descendants))
        violations = _clashes(fields, ancestors, "ancestor")
        violations += _clashes(fields, descendants, "descendant")
        if violations:
            raise InvalidInput(violations)
        if scope == Scope.LOCAL and any(
            t.scope == Scope.GLOBAL or t.tenant_id != principal.tenant_id for t in descendants
        ):
            raise FailedPrecondition(
                f"event type {type_id} has GLOBAL or other tenants' child types; "
                "it must stay GLOBAL",
                reason="EVENT_TYPE_IN_USE",
            )
        updated = dataclasses.replace(
            stored,
            name=spec.name,
            parent_id=ancestors[0].id if ancestors else STANDARD_EVENT,
            fields=fields,
            scope=scope,
            ttl_days=spec.ttl_days,
            deduplicate_alarms=bool(spec.deduplicate_alarms),
            etag=stored.etag + 1,
            update_time=now_us(),
        )
        audit = audit_event(principal, type_id, CODE_EVENT_TYPE_CHANGED, "changed")
        if not await self._repository.replace(updated, stored.etag, audit):
            raise stale(expected_etag, f"event type {type_id} changed concurrently; read it again")
        return updated

    async def delete(self, principal: Principal, type_id: str, expected_etag: int | None) -> None:
        stored = await self._owned(principal, type_id)
        if stored.scope == Scope.GLOBAL:
            principal.require(Privilege.ADMIN)
        audit = audit_event(principal, type_id, CODE_EVENT_TYPE_DELETED, "deleted")
        outcome = await self._repository.delete(principal, type_id, expected_etag, audit)
        if outcome == "stale":
            raise stale(expected_etag, f"etag {expected_etag} is stale; read the event type again")
        if outcome == "missing":
            raise NotFound(f"event type {type_id} not found", reason="EVENT_TYPE_NOT_FOUND")
        if outcome in ("has_children", "has_events"):
            what = "child event types" if outcome == "has_children" else "events"
            raise FailedPrecondition(
                f"event type {type_id} cannot be deleted: it still has {what}",
                reason="EVENT_TYPE_IN_USE",
            )

    async def fields_of(
        self, principal: Principal, type_id: str
    ) -> dict[str, FieldDefinition] | None:
        """Every field of a visible type and its ancestors, or None when it is not visible."""
        chain = await self._repository.chain(principal, type_id)
        if not chain:
            return None
        return {d.name: d for t in reversed(chain) for d in t.fields}

    async def deduplicates_alarms(self, principal: Principal, type_id: str) -> bool:
        """Whether alarms of the type fold into an open alarm of their key
        (service/domain/alarms.py); a type that is not visible defines nothing, so it does."""
        chain = await self._repository.chain(principal, type_id)
        return chain[0].deduplicate_alarms if chain else True

    async def field_type(self, principal: Principal, name: str) -> FieldType | None:
        """The type of a filterable custom field of the types the principal sees, for list
        filters; None when no visible type has it filterable, or types disagree on it."""
        found = {d.type for d in await self._repository.visible_fields(principal) if d.name == name}
        return found.pop() if len(found) == 1 else None

    async def _owned(self, principal: Principal, type_id: str) -> EventType:
        stored = await self.get(principal, type_id)
        if stored.tenant_id != principal.tenant_id:
            raise PermissionDenied(
                f"event type {type_id} belongs to another tenant; only its owner changes it",
                reason="EVENT_TYPE_READ_ONLY",
            )
        return stored

    async def _ancestors(
        self, principal: Principal, parent_id: str, scope: Scope, type_id: str
    ) -> list[EventType]:
        if not parent_id or canonical_type_id(parent_id) == STANDARD_EVENT:
            return []
        if parent_id == type_id:
            raise invalid("parentId", "an event type cannot be its own parent (a cycle)")
        chain = await self._repository.chain(principal, parent_id)
        if not chain:
            raise invalid("parentId", f"no visible event type {parent_id}")
        ids = [t.id for t in chain]
        if type_id in ids:
            # The loop as the caller would create it: this type, its new parent, ..., itself.
            path = " -> ".join([type_id, *ids[: ids.index(type_id) + 1]])
            raise invalid("parentId", f"would make a cycle: {path}")
        if scope == Scope.GLOBAL and chain[0].scope != Scope.GLOBAL:
            raise invalid("parentId", "the parent of a GLOBAL type must be GLOBAL")
        return chain

    @staticmethod
    def _check_depth(ancestors: list[EventType], height: int) -> None:
        depth = len(ancestors) + 1 + height
        if depth > MAX_DEPTH:
            raise invalid(
                "parentId",
                f"inheritance too deep: {depth} levels of custom types below "
                f"{STANDARD_EVENT}; at most {MAX_DEPTH}",
            )
