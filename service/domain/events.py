"""The canonical event and the rules for creating, reading, updating and acknowledging it.

Field values arrive already typed (the REST codec and the proto converter do the syntax);
this module checks the semantics (lengths, ranges, scope, updatability) and names fields by
their REST JSON names, which are also the proto3 JSON names gRPC clients know.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from service.domain.access import Principal, check_domain_path
from service.domain.alarm_status import (
    ACKNOWLEDGED,
    ALARM,
    CLEARED,
    STATUSES,
    Transition,
    alarm_status,
)
from service.domain.alarms import Created, dedup_key, is_alarm, occurrence_fields
from service.domain.conditions import Condition
from service.domain.conditions import FieldType as FilterFieldType
from service.domain.custom_fields import (
    STANDARD_EVENT,
    FieldDefinition,
    canonical_type_id,
    check_custom_changes,
    check_custom_fields,
)
from service.domain.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StaleEtag,
    invalid,
    stale,
)
from service.domain.event_fields import FIELDS, JSON_NAMES, SORTABLE, UPDATABLE
from service.domain.filters import CustomFieldType, custom_field_names

if TYPE_CHECKING:
    from service.domain.listing import ListRequest
    from service.domain.live import EventFilter
    from service.domain.storms import Storm, StormControl

CLASSIFICATIONS = ("INTERNAL", "ALARM", "WARNING", "NOTIFICATION")
# 0 to 100: v3 REST clients send values such as 20, 30 and 40; 1 to 5 are the named
# criticalities, and the device path keeps 1 to 5 (docs/event.md#severity).
MAX_SEVERITY = 100
# The documented create job answers exactly this for an event without an entity
# (docs/rest-v3.md#create-jobs).
MISSING_ENTITY_ID = "Missing entity id"

_MACHINE_NAME = re.compile(r"^[A-Za-z0-9._:\-]+$")
MAX_SOURCE_BYTES = 16 * 1024
# gRPC clients get the source as a google.protobuf.Struct, which protobuf refuses to read past
# 100 levels of nesting; a much lower cap keeps every stored source readable everywhere.
MAX_SOURCE_DEPTH = 32
MAX_PAYLOAD_BYTES = 256 * 1024
# Timestamps are kept as integer microseconds since the epoch, 1970 to 9999.
MAX_TIMESTAMP_US = 253402300799_999999


def now_us() -> int:
    return time.time_ns() // 1000


_random_pool = bytearray()


def _random_bits(size: int = 10) -> int:
    """`size` bytes from os.urandom, drawn a few kilobytes at a time: a batch of thousands
    of new events costs a handful of system calls instead of one each."""
    if len(_random_pool) < size:
        _random_pool.extend(os.urandom(4096))
    chunk = _random_pool[-size:]
    del _random_pool[-size:]
    return int.from_bytes(chunk, "big")


# UUIDv7's fixed bits (version 7, variant 0b10) and where its 74 random bits go.
_UUID7_FIXED = 0x7 << 76 | 0b10 << 62
_UUID7_RANDOM = 0xFFF << 64 | (1 << 62) - 1
_MILLIS = (1 << 48) - 1


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): the millisecond time first, then random bits. Ids of new events
    sort after older ones, so the primary-key index grows at its end instead of everywhere."""
    millis = time.time_ns() // 1_000_000 & _MILLIS
    value = millis << 80 | _UUID7_FIXED | _random_bits() & _UUID7_RANDOM
    text = value.to_bytes(16, "big").hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(slots=True)
class Payload:
    """Content attached to an event; JSON data is kept as the client's JSON text."""

    content_type: str
    data: bytes

    @property
    def is_json(self) -> bool:
        return self.content_type.split(";")[0].strip().endswith(("/json", "+json"))


@dataclass(slots=True)
class Event:
    """One stored event (docs/event.md). Times are integer microseconds since the epoch."""

    id: str
    tenant_id: str
    type_id: str = STANDARD_EVENT
    correlation_id: str = ""
    entity_type: str = ""
    entity_id: str = ""
    domain: str = "/"
    timestamp: int = 0
    create_time: int = 0
    update_time: int = 0
    etag: int = 1
    severity: int = 0
    code: str = ""
    description: str = ""
    # None, a string, or any JSON value decoded with its exact types.
    source: Any = None
    classification: str = ""
    category: str = ""
    acknowledgement_required: bool = False
    acknowledged: bool = False
    acknowledged_at: int | None = None
    acknowledged_by: str = ""
    # ACTIVE, ACKNOWLEDGED or CLEARED for alarms (classification ALARM), "" for the others.
    status: str = ""
    cleared_at: int | None = None
    cleared_by: str = ""
    app_id: str = ""
    internal: bool = False
    payload: Payload | None = None
    # Alarms only (None on other events): how often the alarm occurred while open, and when
    # it first and last did (service/domain/alarms.py).
    count: int | None = None
    first_occurrence_time: int | None = None
    last_occurrence_time: int | None = None
    # Name -> str, int, float, bool or custom_fields.Instant, as the event's type defines.
    custom_fields: dict[str, Any] = field(default_factory=dict)
    # The event's position in the live feed (commit order); 0 until committed.
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool


DEFAULT_SORT = (SortKey("timestamp", descending=True),)
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class EventQuery:
    """What the store lists: a condition, sort keys (canonical names), and either an offset or
    a keyset position (`after`: the sort key values and id of the last event already seen)."""

    sort: tuple[SortKey, ...] = DEFAULT_SORT
    offset: int = 0
    limit: int = DEFAULT_PAGE_SIZE
    condition: Condition | None = None
    # False: of the events sharing a non-empty correlation id, entity id and type id, only the
    # newest is listed.
    history: bool = True
    include_shared: bool = False
    after: tuple[Any, ...] | None = None
    # Count no further than one past this many matching events (None: count them all).
    count_cap: int | None = None
    # False when the caller knows the total already (a cursor page): nothing is counted and
    # the total answered is 0.
    counted: bool = True


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    total: int
    query: EventQuery
    # The zero-based page number, and a cursor for the next page ("" on the last page).
    number: int = 0
    next_token: str = ""
    # False when `total` is a lower bound: the count stopped at its cap.
    total_exact: bool = True


def parse_sort(keys: list[tuple[str, str]]) -> tuple[SortKey, ...]:
    """Turns (JSON field name, direction) pairs into sort keys; direction is asc, desc or ''."""
    result = []
    for name, direction in keys:
        column = SORTABLE.get(name)
        if column is None:
            raise invalid("sort", f"cannot sort by {name!r}; sortable: {', '.join(SORTABLE)}")
        if direction.lower() not in ("", "asc", "desc"):
            raise invalid("sort", f"direction of {name!r} must be asc or desc, not {direction!r}")
        result.append(SortKey(column, direction.lower() == "desc"))
    return tuple(result) or DEFAULT_SORT


def check_page_size(size: int, field_name: str) -> int:
    if size == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise invalid(field_name, f"must be between 1 and {MAX_PAGE_SIZE}")
    return size


MAX_IDEMPOTENCY_KEY = 128


def check_idempotency_key(key: str) -> str:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise invalid("idempotencyKey", f"1 to {MAX_IDEMPOTENCY_KEY} characters when given")
    if "\x00" in key:
        raise invalid("idempotencyKey", "must not contain NUL characters")
    return key


@dataclass(frozen=True, slots=True)
class Draft:
    """One event of a streamed batch: the caller's fields and its optional idempotency key."""

    fields: Mapping[str, Any]
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What became of one draft: stored as `event`, a resend of `duplicate_of`, or `error`;
    `deduplicated` when `event` is the open alarm the draft was counted into."""

    event: Event | None = None
    duplicate_of: str | None = None
    error: DomainError | None = None
    deduplicated: bool = False


class EventRepository(Protocol):
    """What the domain needs from the store; every call is scoped by the principal."""

    async def insert(
        self, event: Event, dedup_key: str | None = None, *, fold_only: bool = False
    ) -> Event | None:
        """Stores the event, or with a `dedup_key` (an alarm's, service/domain/alarms.py)
        counts it into the open alarm of that key and returns that alarm afterwards. With
        `fold_only` it never stores: None then means no alarm of the key is open."""
        ...

    async def insert_batch(
        self,
        principal: Principal,
        events: Sequence[tuple[Event, str | None]],
        dedup_keys: Sequence[str | None] | None = None,
        fold_only: Sequence[bool] | None = None,
    ) -> list[str | Event | None]:
        """Stores the principal's events in one transaction; for each, None when stored
        (with `fold_only`: when not counted), the id of the event already stored under the
        same idempotency key, or the open alarm it was counted into (as `insert` does)."""
        ...

    async def get(
        self,
        principal: Principal,
        event_id: str,
        *,
        whole_tenant: bool = False,
        include_shared: bool = False,
    ) -> Event | None:
        """Reads within the principal's domain subtree, or its whole tenant when asked, plus
        the events of entities shared with its tenant when asked."""
        ...

    async def query(self, principal: Principal, query: EventQuery) -> tuple[list[Event], int]:
        """The page and the count of matching events: exact, or with `count_cap` no more than
        one past the cap."""
        ...

    async def replace(self, event: Event, expected_etag: int) -> bool: ...

    async def change_status(self, event: Event, expected_etag: int, transition: Transition) -> bool:
        """Replaces the event (checked by etag) and records its transition in the same
        transaction, at the next live feed position; False when the etag moved."""
        ...


class CustomFieldLookup(Protocol):
    async def fields_of(
        self, principal: Principal, type_id: str
    ) -> dict[str, FieldDefinition] | None:
        """Every field of a type the principal sees and of its ancestors; None if unseen."""
        ...

    async def field_type(self, principal: Principal, name: str) -> Any:
        """The FieldType of a filterable custom field the principal sees, or None."""
        ...

    async def deduplicates_alarms(self, principal: Principal, type_id: str) -> bool:
        """Whether alarms of the type fold into an open alarm (the type's setting)."""
        ...


# An id already in the canonical form, as the service writes them: nothing to convert.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_event_id(event_id: str) -> str:
    if _CANONICAL_UUID.fullmatch(event_id):
        return event_id
    try:
        return str(uuid.UUID(event_id))
    except ValueError:
        raise invalid("id", "must be a UUID such as 3f1c0d2e-8b7a-4c55-9d1e-2a6b4f0c9e11") from None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# A rule of one field: the violations of its (non-None) value, on create or on update.
_Rule = Callable[[Any, bool], Sequence[FieldViolation]]
_NONE: tuple[FieldViolation, ...] = ()


def _length_rule(json_name: str, limit: int, machine_name: bool) -> _Rule:
    if machine_name:
        broken = (
            FieldViolation(json_name, f"a machine name of at most {limit} letters, digits or ._:-"),
        )
        return lambda value, _: (
            broken if value and (len(value) > limit or not _MACHINE_NAME.match(value)) else _NONE
        )
    too_long = (FieldViolation(json_name, f"at most {limit} characters"),)
    return lambda value, _: too_long if len(value) > limit else _NONE


def _severity_rule(severity: int, _: bool) -> Sequence[FieldViolation]:
    if 0 <= severity <= MAX_SEVERITY:
        return _NONE
    return (FieldViolation("severity", f"must be between 0 and {MAX_SEVERITY}"),)


def _classification_rule(classification: str, _: bool) -> Sequence[FieldViolation]:
    if not classification or classification in CLASSIFICATIONS:
        return _NONE
    return (FieldViolation("classification", f"must be one of {', '.join(CLASSIFICATIONS)}"),)


def _timestamp_rule(timestamp: int, _: bool) -> Sequence[FieldViolation]:
    if 0 <= timestamp <= MAX_TIMESTAMP_US:
        return _NONE
    return (FieldViolation("timestamp", "must lie between 1970 and 9999"),)


def _source_rule(source: Any, _: bool) -> Sequence[FieldViolation]:
    if isinstance(source, str):
        if len(source) > 1024:
            return (FieldViolation("source", "at most 1024 characters"),)
        return _NONE
    violations = []
    if len(json.dumps(source)) > MAX_SOURCE_BYTES:
        violations.append(FieldViolation("source", f"at most {MAX_SOURCE_BYTES} bytes of JSON"))
    if isinstance(source, dict | list) and _depth(source) > MAX_SOURCE_DEPTH:
        violations.append(
            FieldViolation("source", f"at most {MAX_SOURCE_DEPTH} levels of nested objects")
        )
    return violations


def _payload_rule(payload: Payload, _: bool) -> Sequence[FieldViolation]:
    if len(payload.data) <= MAX_PAYLOAD_BYTES:
        return _NONE
    return (FieldViolation("payload.data", f"at most {MAX_PAYLOAD_BYTES} bytes"),)


def _internal_rule(internal: bool, _: bool) -> Sequence[FieldViolation]:
    if not internal:
        return _NONE
    return (FieldViolation("internal", "only the platform records internal events"),)


def _acknowledged_rule(acknowledged: bool, creating: bool) -> Sequence[FieldViolation]:
    if not (acknowledged and creating):
        return _NONE
    return (FieldViolation("acknowledged", "cannot be set on create; acknowledge the event"),)


def _status_rule(status: str, creating: bool) -> Sequence[FieldViolation]:
    if not status:
        return _NONE
    if creating:
        return (
            FieldViolation(
                "status",
                "set by the server: an alarm is ACTIVE when created; acknowledge or clear it",
            ),
        )
    if status not in STATUSES:
        return (FieldViolation("status", f"must be one of {', '.join(STATUSES)}"),)
    return _NONE


# The rules by attribute, in the order their violations are named: the text fields with a
# length limit in FIELDS order, then the others.
_RULES: tuple[tuple[str, _Rule], ...] = (
    *(
        (f.attribute, _length_rule(f.json, f.limit, f.machine_name))
        for f in FIELDS
        if f.limit is not None
    ),
    ("severity", _severity_rule),
    ("classification", _classification_rule),
    ("timestamp", _timestamp_rule),
    ("source", _source_rule),
    ("payload", _payload_rule),
    ("internal", _internal_rule),
    ("acknowledged", _acknowledged_rule),
    ("status", _status_rule),
)
_RULE_OF = {attribute: (order, rule) for order, (attribute, rule) in enumerate(_RULES)}
assert len(_RULE_OF) == len(_RULES), "one rule per attribute"


def _check_fields(fields: Mapping[str, Any], creating: bool = True) -> list[FieldViolation]:
    """The violations of the fields given (an event sets few of them), in _RULES order."""
    found: list[tuple[int, Sequence[FieldViolation]]] = []
    for attribute, value in fields.items():
        ruled = _RULE_OF.get(attribute)
        if ruled is not None and value is not None:
            broken = ruled[1](value, creating)
            if broken:
                found.append((ruled[0], broken))
    if len(found) > 1:
        found.sort(key=lambda item: item[0])
    return [violation for _, broken in found for violation in broken]


_FILTER_TYPES: dict[str, FilterFieldType] = {
    "STRING": "string",
    "INTEGER": "integer",
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp",
}


def _acknowledgement(principal: Principal) -> dict[str, Any]:
    """What acknowledging sets: who (the key's name) and when."""
    return {"acknowledged": True, "acknowledged_at": now_us(), "acknowledged_by": principal.name}


def _transition(stored: Event, updated: Event, change: str) -> Transition | None:
    """The transition from `stored` to `updated` when the event is an alarm (before or
    after the change): who made it, when, and the statuses."""
    if not stored.status and not updated.status:
        return None
    by = updated.cleared_by if change == CLEARED else updated.acknowledged_by
    return Transition(
        event_id=updated.id,
        tenant_id=updated.tenant_id,
        change=change,
        from_status=stored.status,
        to_status=updated.status,
        by=by,
        at=updated.update_time,
        event=updated,
        count=updated.count,
        last_occurrence_time=updated.last_occurrence_time,
    )


def acknowledged(stored: Event, by: str, now: int) -> tuple[Event, Transition | None]:
    """The event acknowledged by `by` at `now` (an ACTIVE alarm becomes ACKNOWLEDGED), and
    its transition when it is an alarm; for one not acknowledged yet."""
    updated = dataclasses.replace(
        stored,
        acknowledged=True,
        acknowledged_at=now,
        acknowledged_by=by,
        etag=stored.etag + 1,
        update_time=now,
    )
    updated.status = alarm_status(updated.classification, True, updated.cleared_at is not None)
    return updated, _transition(stored, updated, ACKNOWLEDGED)


def cleared(stored: Event, by: str, now: int) -> tuple[Event, Transition]:
    """The alarm cleared by `by` at `now`, and its transition; for an alarm not CLEARED."""
    updated = dataclasses.replace(
        stored, status=CLEARED, cleared_at=now, cleared_by=by, etag=stored.etag + 1, update_time=now
    )
    transition = _transition(stored, updated, CLEARED)
    assert transition is not None, "only alarms are cleared"
    return updated, transition


class EventManager:
    """The event operations, each authorised against the calling principal."""

    def __init__(
        self,
        repository: EventRepository,
        types: CustomFieldLookup | None = None,
        storms: StormControl | None = None,
    ) -> None:
        self._repository = repository
        # Without a type catalogue only StandardEvent exists.
        self._types = types
        # Without storm control no create is ever beyond a storm rate.
        self.storms = storms

    async def _fields_of(
        self, principal: Principal, type_id: str
    ) -> dict[str, FieldDefinition] | None:
        if type_id == STANDARD_EVENT:
            return {}
        if self._types is None:
            return None
        return await self._types.fields_of(principal, type_id)

    async def create(
        self, principal: Principal, fields: Mapping[str, Any], *, entity_required: bool = False
    ) -> Event:
        return (await self.record(principal, fields, entity_required=entity_required)).event

    async def record(
        self, principal: Principal, fields: Mapping[str, Any], *, entity_required: bool = False
    ) -> Created:
        """Creates an event; an ALARM while one of its key is open is counted into that alarm
        instead (service/domain/alarms.py), which the answer then carries."""
        event = await self.prepare(principal, fields, entity_required=entity_required)
        storm = await self.storms.check(event) if self.storms is not None else None
        if storm is not None:
            return await self._in_storm(event, storm)
        folded = await self._repository.insert(event, await self.dedup_key(principal, event))
        if folded is not None:
            return Created(folded, deduplicated=True)
        return Created(event)

    async def _in_storm(self, event: Event, storm: Storm) -> Created:
        """Beyond a storm rate an alarm is only counted into its open alarm (whatever its
        type says about de-duplication), and anything else is refused."""
        assert self.storms is not None
        if is_alarm(event):
            folded = await self._repository.insert(event, dedup_key(event), fold_only=True)
            if folded is not None:
                self.storms.counted(storm)
                return Created(folded, deduplicated=True)
        self.storms.refused(storm)
        raise storm.refusal()

    async def dedup_key(self, principal: Principal, event: Event) -> str | None:
        """The key an alarm de-duplicates under, or None: not an alarm, or its type turns
        de-duplication off."""
        if not is_alarm(event):
            return None
        if (
            self._types is not None
            and event.type_id != STANDARD_EVENT
            and not await self._types.deduplicates_alarms(principal, event.type_id)
        ):
            return None
        return dedup_key(event)

    async def create_many(
        self, principal: Principal, drafts: Sequence[Draft]
    ) -> list[IngestOutcome]:
        """Stores a batch with one write: each draft gets its own outcome, in order. A draft
        that breaks a rule fails alone; one whose idempotency key is already stored (or
        earlier in the batch) stores nothing and answers with the first event's id. Streamed
        events (edge gateways) must name their entity, as REST creates do
        (docs/rest-v3.md#create-event)."""
        outcomes: list[IngestOutcome] = []
        accepted: list[tuple[Event, str | None]] = []
        dedup_keys: list[str | None] = []
        storms: list[Storm | None] = []
        for draft in drafts:
            try:
                if draft.idempotency_key is not None:
                    check_idempotency_key(draft.idempotency_key)
                event = await self.prepare(principal, draft.fields, entity_required=True)
                storm = await self.storms.check(event) if self.storms is not None else None
                if storm is not None and not is_alarm(event):
                    assert self.storms is not None
                    self.storms.refused(storm)
                    raise storm.refusal()
            except DomainError as error:
                outcomes.append(IngestOutcome(error=error))
                continue
            outcomes.append(IngestOutcome(event=event))
            accepted.append((event, draft.idempotency_key))
            storms.append(storm)
            # In a storm an alarm is only counted, whatever its type says (see _in_storm).
            if not is_alarm(event):
                dedup_keys.append(None)
            elif storm is not None:
                dedup_keys.append(dedup_key(event))
            else:
                dedup_keys.append(await self.dedup_key(principal, event))
        if accepted:
            fold_only = [storm is not None for storm in storms]
            stored = iter(
                await self._repository.insert_batch(principal, accepted, dedup_keys, fold_only)
            )
            waves = iter(storms)
            for index, outcome in enumerate(outcomes):
                if outcome.event is not None:
                    existing, storm = next(stored), next(waves)
                    if isinstance(existing, str):
                        outcomes[index] = IngestOutcome(duplicate_of=existing)
                    elif existing is not None:
                        outcomes[index] = IngestOutcome(event=existing, deduplicated=True)
                        if storm is not None and self.storms is not None:
                            self.storms.counted(storm)
                    elif storm is not None and self.storms is not None:
                        self.storms.refused(storm)
                        outcomes[index] = IngestOutcome(error=storm.refusal())
        return outcomes

    async def prepare(
        self, principal: Principal, fields: Mapping[str, Any], *, entity_required: bool = False
    ) -> Event:
        """Checks a new event against every rule and builds it, without storing it.
        `entity_required`: the v3 REST paths refuse an event without `entityId`
        (docs/rest-v3.md#create-event)."""
        violations = _check_fields(fields)
        if entity_required and not fields.get("entity_id"):
            violations.insert(0, FieldViolation("entityId", MISSING_ENTITY_ID))
        given_type = fields.get("type_id")
        type_id = canonical_type_id(given_type) if given_type else STANDARD_EVENT
        given_custom = fields.get("custom_fields") or {}
        custom: dict[str, Any] = {}
        if not any(v.field == "typeId" for v in violations):
            definitions = (
                {} if type_id == STANDARD_EVENT else await self._fields_of(principal, type_id)
            )
            if definitions is None:
                violations.append(FieldViolation("typeId", f"unknown event type {type_id!r}"))
            elif definitions or given_custom:
                custom, custom_violations = check_custom_fields(type_id, definitions, given_custom)
                violations.extend(custom_violations)
        domain = fields.get("domain") or principal.domain
        if domain != principal.domain:  # the principal's own domain is a valid one it covers
            try:
                check_domain_path(domain)
            except InvalidInput as error:
                violations.extend(error.violations)
        if violations:
            # Alone, the missing entity is reported in the documented words
            # (docs/rest-v3.md#create-jobs).
            only_entity = len(violations) == 1 and violations[0].rule == MISSING_ENTITY_ID
            raise InvalidInput(violations, message=MISSING_ENTITY_ID if only_entity else None)
        if not principal.covers(domain):
            raise PermissionDenied(
                f"domain {domain} is outside this key's domain {principal.domain}",
                reason="NOT_AUTHORIZED_DOMAIN",
            )
        now = now_us()
        values = {k: v for k, v in fields.items() if v is not None and k in JSON_NAMES}
        classification = fields.get("classification") or ""
        values.update(
            id=new_event_id(),
            tenant_id=principal.tenant_id,
            type_id=type_id,
            domain=domain,
            timestamp=fields.get("timestamp") or now,
            create_time=now,
            update_time=now,
            etag=1,
            acknowledged=False,
            internal=False,
            custom_fields=custom,
            status=alarm_status(classification, False, False),
        )
        event = Event(**values)  # one mapping: keywords beside ** cost a merge per call
        return occurrence_fields(event) if classification == ALARM else event

    async def get(
        self,
        principal: Principal,
        event_id: str,
        *,
        whole_tenant: bool = False,
        include_shared: bool = False,
    ) -> Event:
        event = await self._repository.get(
            principal,
            check_event_id(event_id),
            whole_tenant=whole_tenant,
            include_shared=include_shared,
        )
        if event is None:
            raise NotFound(f"event {event_id} not found", reason="EVENT_NOT_FOUND")
        return event

    async def list_events(
        self,
        principal: Principal,
        request: ListRequest,
        custom_field_type: CustomFieldType | None = None,
    ) -> EventPage:
        """Lists within the principal's scope; `custom_field_type` resolves the custom fields a
        filter may name (by default the filterable fields of the types the principal sees)."""
        from service.domain.listing import list_events  # listing builds on this module

        if custom_field_type is None:
            custom_field_type = (await self.filterable_fields(principal, request.filter)).get
        return await list_events(self._repository, principal, request, custom_field_type)

    async def live_filter(
        self, principal: Principal, filter_text: str = "", **typed: Any
    ) -> EventFilter:
        """A live subscription's filter (service.domain.live.subscription_filter): the typed
        filters and a JSON filter of the list language, whose custom fields resolve as a
        list's do."""
        from service.domain.live import subscription_filter  # live builds on this module

        custom = await self.filterable_fields(principal, filter_text)
        return subscription_filter(
            principal, filter_text=filter_text, custom_field_type=custom.get, **typed
        )

    async def filterable_fields(
        self, principal: Principal, filter_text: str
    ) -> dict[str, FilterFieldType]:
        """The custom fields a JSON filter names that the principal's event types declare
        filterable, with their filter types."""
        found: dict[str, FilterFieldType] = {}
        if self._types is None:
            return found
        for name in custom_field_names(filter_text):
            kind = await self._types.field_type(principal, name)
            if kind is not None:
                # ENUM values are stored and compared as their string.
                found[name] = _FILTER_TYPES.get(str(kind.value), "string")
        return found

    async def update(
        self,
        principal: Principal,
        event_id: str,
        fields: Mapping[str, Any],
        expected_etag: int | None,
    ) -> tuple[Event, list[str]]:
        """Applies the updatable fields; returns the new event and the fields left unchanged
        because they are not updatable (reported to the caller, never silently dropped).
        `acknowledged: true` acknowledges the event as `acknowledge` does."""
        violations = _check_fields(fields, creating=False)
        if violations:
            raise InvalidInput(violations)
        if fields.get("type_id"):
            fields = {**fields, "type_id": canonical_type_id(fields["type_id"])}
        # Same-tenant events outside the key's subtree answer NOT_AUTHORIZED_DOMAIN
        # (docs/find-api.md#acknowledge)
        # and events shared with the tenant SHARED_EVENT_READ_ONLY, rather than a bare 404.
        stored = await self.get(principal, event_id, whole_tenant=True, include_shared=True)
        self._check_writable(principal, stored)
        if expected_etag is not None and expected_etag != stored.etag:
            raise PreconditionFailed(
                f"etag {expected_etag} is stale; the event is at etag {stored.etag}"
            )
        changes: dict[str, Any] = {k: v for k, v in fields.items() if k in UPDATABLE}
        acknowledged = fields.get("acknowledged")
        if acknowledged is False and stored.acknowledged:
            raise invalid("acknowledged", "an acknowledged event stays acknowledged")
        if acknowledged and not stored.acknowledged:
            changes.update(_acknowledgement(principal))
        status = fields.get("status")
        if status and status != stored.status:
            raise invalid(
                "status",
                f"is {stored.status or 'unset'}: acknowledge or clear an alarm to change it",
            )
        kept = sorted(
            JSON_NAMES[k]
            for k, v in fields.items()
            if k in JSON_NAMES
            and k not in UPDATABLE
            and k not in ("acknowledged", "status")
            and v is not None
            and v != getattr(stored, k)
        )
        custom = fields.get("custom_fields")
        if custom:
            # A type that is no longer visible defines nothing the caller may change.
            definitions = await self._fields_of(principal, stored.type_id) or {}
            custom_changes, custom_kept, violations = check_custom_changes(
                stored.type_id, definitions, stored.custom_fields, custom
            )
            if violations:
                raise InvalidInput(violations)
            if custom_changes:
                changes["custom_fields"] = {**stored.custom_fields, **custom_changes}
            kept = sorted([*kept, *custom_kept])
        updated = dataclasses.replace(stored, **changes, etag=stored.etag + 1, update_time=now_us())
        # The status follows the classification (an update may reclassify an event).
        updated.status = alarm_status(
            updated.classification, updated.acknowledged, updated.cleared_at is not None
        )
        transition = None
        if "acknowledged" in changes:
            transition = _transition(stored, updated, ACKNOWLEDGED)
        if not await self._store_change(stored, updated, transition):
            raise stale(expected_etag, f"event {event_id} changed concurrently; read it again")
        return updated, kept

    async def acknowledge(self, principal: Principal, event_id: str) -> Event:
        """Acknowledges the event (twice keeps the first time and person); an ACTIVE alarm
        becomes ACKNOWLEDGED."""
        stored = await self.get(principal, event_id, whole_tenant=True, include_shared=True)
        self._check_writable(principal, stored)
        if stored.acknowledged:
            return stored
        updated, transition = acknowledged(stored, principal.name, now_us())
        if not await self._store_change(stored, updated, transition):
            raise StaleEtag(f"event {event_id} changed concurrently; try again")
        return updated

    async def clear(self, principal: Principal, event_id: str) -> Event:
        """Clears an alarm: its status becomes CLEARED, with who and when. Clearing twice
        keeps the first time and person; only alarms (classification ALARM) can be cleared."""
        stored = await self.get(principal, event_id, whole_tenant=True, include_shared=True)
        self._check_writable(principal, stored)
        if stored.classification != ALARM:
            raise FailedPrecondition(
                f"event {event_id} is classified {stored.classification or 'without a class'}: "
                "only alarms (classification ALARM) have a status to clear",
                reason="NOT_AN_ALARM",
            )
        if stored.status == CLEARED:
            return stored
        updated, transition = cleared(stored, principal.name, now_us())
        if not await self._store_change(stored, updated, transition):
            raise StaleEtag(f"event {event_id} changed concurrently; try again")
        return updated

    async def _store_change(
        self, stored: Event, updated: Event, transition: Transition | None
    ) -> bool:
        """Replaces `stored` by `updated`, with its alarm transition when there is one."""
        if transition is None:
            return await self._repository.replace(updated, stored.etag)
        return await self._repository.change_status(updated, stored.etag, transition)

    @staticmethod
    def _check_writable(principal: Principal, event: Event) -> None:
        if event.tenant_id != principal.tenant_id:
            raise PermissionDenied(
                "events shared with this tenant are read-only", reason="SHARED_EVENT_READ_ONLY"
            )
        if not principal.covers(event.domain):
            raise PermissionDenied(
                f"event {event.id} is outside this key's domain {principal.domain}",
                reason="NOT_AUTHORIZED_DOMAIN",
            )
