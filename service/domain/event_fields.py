"""The one declaration of the event's standard fields. Each row says what a field is called
where (attribute, REST/proto3 JSON name, proto field, column, find's names), its kind and
limits, and what callers may do with it (send, update, sort, filter). The parsers, the JSON
and proto views, the SQL columns, the row codec, sort keys and filter lookups all derive
from this table, so a new standard field is one row here plus the Event attribute that holds
it (and its column in a migration, its proto field)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """What a field's value is; every layer maps each kind once."""

    TEXT = "text"  # a string; "" when absent
    INTEGER = "integer"
    TIME = "time"  # epoch microseconds
    BOOLEAN = "boolean"
    SOURCE = "source"  # None, a string, or any JSON value with its exact types
    PAYLOAD = "payload"  # a content type and bytes


@dataclass(frozen=True, slots=True)
class EventField:
    attribute: str
    json: str
    kind: Kind
    # The column in the events table; None when the row codec spreads it over several.
    column: str | None
    # Text: at most this many characters; with `machine_name`, of letters, digits or ._:-.
    limit: int | None = None
    machine_name: bool = False
    # A client may set it on create; a `refused` field is parsed from what a client sends
    # only to be refused with its own rule (the server sets it).
    settable: bool = False
    refused: bool = False
    updatable: bool = False
    sortable: bool = False
    filterable: bool = False
    # False for fields every event has a value of (for text: never "").
    optional: bool = True
    # Whether the REST event document shows it (the tenant is the caller's own), and whether
    # it leaves it out when false although every event has it (`optional` ones: when unset).
    shown: bool = True
    sparse: bool = False
    # find's names for it (the first is the one its _source documents carry), and whether
    # find matches its words (`match`) rather than its whole text.
    find: tuple[str, ...] = ()
    words: bool = False
    # Output only, and moved by the server with the event's versions (its update time, an
    # alarm's occurrence fields, which each counted occurrence changes): a document read and
    # sent back (PUT) is not compared on it, the etag guards it.
    versioned: bool = False

    @property
    def accepted(self) -> bool:
        """Whether the REST and gRPC parsers read it from a client."""
        return self.settable or self.refused

    @property
    def proto(self) -> str:
        """The field of service.v1.Event (its JSON name is `json`)."""
        return self.attribute


_T, _I, _M, _B = Kind.TEXT, Kind.INTEGER, Kind.TIME, Kind.BOOLEAN

FIELDS: tuple[EventField, ...] = (
    EventField("id", "id", _T, "id", filterable=True, optional=False, find=("id", "_id")),
    EventField("tenant_id", "tenantId", _T, "tenant_id", optional=False, shown=False),
    # Type ids hold reverse domain names such as the platform's standard type id (68 characters).
    EventField(
        "type_id",
        "typeId",
        _T,
        "type_id",
        limit=128,
        machine_name=True,
        settable=True,
        sortable=True,
        filterable=True,
        optional=False,
        find=("type", "typeId"),
    ),
    EventField(
        "correlation_id",
        "correlationId",
        _T,
        "correlation_id",
        limit=128,
        settable=True,
        filterable=True,
        find=("correlationId",),
    ),
    EventField(
        "entity_type",
        "entityType",
        _T,
        "entity_type",
        limit=64,
        machine_name=True,
        settable=True,
        filterable=True,
        find=("entityType",),
    ),
    EventField(
        "entity_id",
        "entityId",
        _T,
        "entity_id",
        limit=128,
        settable=True,
        sortable=True,
        filterable=True,
        find=("entityId",),
    ),
    EventField(
        "domain",
        "domain",
        _T,
        "domain",
        settable=True,
        filterable=True,
        optional=False,
        find=("domain",),
    ),
    EventField(
        "timestamp",
        "timestamp",
        _M,
        "ts",
        settable=True,
        sortable=True,
        filterable=True,
        optional=False,
        find=("timestamp",),
    ),
    EventField(
        "create_time",
        "createTime",
        _M,
        "create_time",
        sortable=True,
        filterable=True,
        optional=False,
        find=("createTime",),
    ),
    EventField(
        "update_time",
        "updateTime",
        _M,
        "update_time",
        sortable=True,
        filterable=True,
        optional=False,
        find=("updateTime",),
        versioned=True,
    ),
    EventField("etag", "etag", _I, "etag", filterable=True, optional=False, find=("etag",)),
    EventField(
        "severity",
        "severity",
        _I,
        "severity",
        settable=True,
        updatable=True,
        sortable=True,
        filterable=True,
        optional=False,
        find=("severity",),
    ),
    EventField(
        "code",
        "code",
        _T,
        "code",
        limit=32,
        settable=True,
        updatable=True,
        sortable=True,
        filterable=True,
        find=("code",),
    ),
    EventField(
        "description",
        "description",
        _T,
        "description",
        limit=4096,
        settable=True,
        updatable=True,
        filterable=True,
        find=("message", "description"),
        words=True,
    ),
    EventField(
        "source",
        "source",
        Kind.SOURCE,
        "source",
        settable=True,
        updatable=True,
        filterable=True,
        find=("source",),
    ),
    EventField(
        "classification",
        "classification",
        _T,
        "classification",
        settable=True,
        updatable=True,
        filterable=True,
        find=("classification",),
    ),
    EventField(
        "category",
        "category",
        _T,
        "category",
        limit=128,
        settable=True,
        updatable=True,
        filterable=True,
        find=("category",),
    ),
    EventField(
        "acknowledgement_required",
        "acknowledgementRequired",
        _B,
        "ack_required",
        settable=True,
        updatable=True,
        filterable=True,
        optional=False,
        find=("acknowledgementRequired",),
        sparse=True,
    ),
    EventField(
        "acknowledged",
        "acknowledged",
        _B,
        "acknowledged",
        refused=True,
        filterable=True,
        optional=False,
        find=("acknowledged",),
    ),
    EventField(
        "acknowledged_at",
        "acknowledgedAt",
        _M,
        "acknowledged_at",
        filterable=True,
        find=("acknowledgedAt",),
    ),
    EventField(
        "acknowledged_by",
        "acknowledgedBy",
        _T,
        "acknowledged_by",
        filterable=True,
        find=("acknowledgedBy",),
    ),
    # The alarm lifecycle (README: Alarms): ACTIVE, ACKNOWLEDGED or CLEARED for events
    # classified ALARM, "" for the others; changed only by acknowledging and clearing.
    EventField(
        "status",
        "status",
        _T,
        "status",
        refused=True,
        sortable=True,
        filterable=True,
        find=("status",),
    ),
    EventField(
        "cleared_at",
        "clearedAt",
        _M,
        "cleared_at",
        sortable=True,
        filterable=True,
        find=("clearedAt",),
    ),
    EventField(
        "cleared_by",
        "clearedBy",
        _T,
        "cleared_by",
        filterable=True,
        find=("clearedBy",),
    ),
    EventField(
        "app_id", "appId", _T, "app_id", limit=64, settable=True, filterable=True, find=("appId",)
    ),
    EventField(
        "internal",
        "internal",
        _B,
        "internal",
        refused=True,
        filterable=True,
        optional=False,
        find=("internal",),
        sparse=True,
    ),
    EventField("payload", "payload", Kind.PAYLOAD, None, settable=True, updatable=True),
    # Alarms only (service/domain/alarms.py): set by the server, absent on other events.
    EventField(
        "count",
        "count",
        _I,
        "occurrence_count",
        sortable=True,
        filterable=True,
        find=("count",),
        versioned=True,
    ),
    EventField(
        "first_occurrence_time",
        "firstOccurrenceTime",
        _M,
        "first_occurrence",
        sortable=True,
        filterable=True,
        find=("firstOccurrenceTime",),
        versioned=True,
    ),
    EventField(
        "last_occurrence_time",
        "lastOccurrenceTime",
        _M,
        "last_occurrence",
        sortable=True,
        filterable=True,
        find=("lastOccurrenceTime",),
        versioned=True,
    ),
)

BY_ATTRIBUTE = {f.attribute: f for f in FIELDS}
BY_JSON = {f.json: f for f in FIELDS}
# Canonical attribute -> REST/proto3 JSON name, for every field a caller may send.
JSON_NAMES = {f.attribute: f.json for f in FIELDS if f.accepted}
# The fields create takes (proto field names); the rest are output only.
SETTABLE = tuple(f.attribute for f in FIELDS if f.settable)
# What an update may change; the rest identifies the event or is changed by dedicated calls.
UPDATABLE = frozenset(f.attribute for f in FIELDS if f.updatable)
# REST JSON name -> attribute, for the sort keys a list takes.
SORTABLE = {f.json: f.attribute for f in FIELDS if f.sortable}
FILTERABLE = tuple(f for f in FIELDS if f.filterable)
# The fields of an event's document that only the server sets (a client sends none of them on
# create; an update reads `id` and `etag` as its own and the others as read).
OUTPUT_ONLY = tuple(f for f in FIELDS if f.shown and not f.accepted)
# Attribute -> column of every field a filter or sort may name.
COLUMNS = {f.attribute: f.column for f in FIELDS if f.column is not None}
# Lists sort an unset optional number or time (an alarm's count on other events) as this,
# below every value, on both backends (which order NULLs differently); keyset tokens carry it.
SORT_MISSING = -1
SORT_EXPRESSIONS = {
    f.attribute: f"COALESCE({f.column}, {SORT_MISSING})"
    if f.optional and f.kind in (Kind.INTEGER, Kind.TIME)
    else str(f.column)
    for f in FIELDS
    if f.sortable
}
ALWAYS_PRESENT = frozenset(f.attribute for f in FIELDS if not f.optional)
