"""The events table's row codec, derived from the event's field table: an Event as the row
the store writes (a tuple in EVENT_COLUMNS order), and a row read back by column name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter, itemgetter
from typing import Any

from persistence.queries import Group, refresh_latest
from persistence.upkeep import RollupKey, count_inserted
from service.domain.custom_fields import Instant
from service.domain.event_fields import FIELDS, EventField, Kind
from service.domain.events import Event, Payload

# A payload is stored as two columns; custom fields as one JSON document.
_PAYLOAD_COLUMNS = ("payload_type", "payload_data")
EVENT_COLUMNS = (
    *(c for f in FIELDS for c in ((f.column,) if f.column else _PAYLOAD_COLUMNS)),
    "custom",
)
# Reads return the feed position too (NULL for events stored before the feed existed).
SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)}, seq FROM events"
# An insert names its columns; seq and idempotency_key follow the event's own.
INSERT_COLUMNS = (*EVENT_COLUMNS, "seq", "idempotency_key")
_INDEX = {column: index for index, column in enumerate(INSERT_COLUMNS)}
_GROUP = tuple(_INDEX[c] for c in ("tenant_id", "correlation_id", "entity_id", "type_id"))
_ROLLUP = tuple(_INDEX[c] for c in ("tenant_id", "domain", "type_id", "ts"))
_KEYED = tuple(_INDEX[c] for c in ("tenant_id", "idempotency_key", "id", "ts"))
_COUNT, _LAST, _ETAG, _UPDATED, _TS = (
    _INDEX[c] for c in ("occurrence_count", "last_occurrence", "etag", "update_time", "ts")
)


def fold_row(row: tuple[Any, ...], occurrence_ts: int, now: int) -> tuple[Any, ...]:
    """An alarm's INSERT_COLUMNS row, not yet inserted, after one more occurrence (what
    persistence.alarms.count_occurrence does to a stored one)."""
    folded = list(row)
    folded[_COUNT] = (row[_COUNT] or 1) + 1
    folded[_LAST] = max(row[_LAST] or row[_TS], occurrence_ts)
    folded[_ETAG] = row[_ETAG] + 1
    folded[_UPDATED] = now
    return tuple(folded)


def correlation_groups(rows: Iterable[Sequence[Any]]) -> list[Group]:
    """The correlation groups (whose newest event is flagged `latest`) of correlated rows."""
    tenant, correlation, entity, type_id = _GROUP
    return [(r[tenant], r[correlation], r[entity], r[type_id]) for r in rows if r[correlation]]


def rollup_keys(rows: Iterable[Sequence[Any]]) -> list[RollupKey]:
    """(tenant id, domain, type id, timestamp) of each row, as the rollups count events."""
    tenant, domain, type_id, ts = _ROLLUP
    return [(r[tenant], r[domain], r[type_id], r[ts]) for r in rows]


def keyed_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[str, str, str, int]]:
    """(tenant id, idempotency key, event id, timestamp) of the INSERT_COLUMNS rows with a key."""
    tenant, key, event_id, ts = _KEYED
    return [(r[tenant], r[key], r[event_id], r[ts]) for r in rows if r[key] is not None]


def insert_events(cursor: Any, rows: Sequence[tuple[Any, ...]], postgres: bool) -> None:
    """Inserts event rows (in EVENT_COLUMNS order, no feed position) and keeps the newest-of-
    correlation flag and the rollups right, in the caller's transaction: the benchmarks' bulk
    load."""
    columns = ", ".join(EVENT_COLUMNS)
    if postgres:
        from psycopg2.extras import execute_values

        execute_values(cursor, f"INSERT INTO events ({columns}) VALUES %s", rows, page_size=1000)
    else:
        placeholders = ", ".join(["?"] * len(EVENT_COLUMNS))
        cursor.executemany(f"INSERT INTO events ({columns}) VALUES ({placeholders})", rows)
    refresh_latest(cursor, correlation_groups(rows), postgres)
    count_inserted(cursor, rollup_keys(rows), postgres)


# Custom TIMESTAMP values are stored as {"$timestamp": microseconds}: numbers that compare
# as numbers, yet told apart from INTEGER values when read back. Field names start with a
# letter, so no field is ever called "$timestamp".
_TIMESTAMP_KEY = "$timestamp"


def _encode_custom(value: Any) -> Any:
    if isinstance(value, Instant):
        return {_TIMESTAMP_KEY: value.micros}
    raise TypeError(f"cannot store a custom field value of type {type(value).__name__}")


def _decode_custom(document: dict[str, Any]) -> Any:
    if len(document) == 1 and _TIMESTAMP_KEY in document:
        return Instant(document[_TIMESTAMP_KEY])
    return document


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _encoders(field: EventField) -> list[Callable[[Event], Any]]:
    read = attrgetter(field.attribute)
    if field.kind is Kind.SOURCE:
        return [lambda e: _json_text(read(e))]
    if field.kind is Kind.PAYLOAD:
        return [
            lambda e: e.payload.content_type if e.payload else None,
            lambda e: e.payload.data if e.payload else None,
        ]
    return [read]


_ENCODE = (
    *(encode for f in FIELDS for encode in _encoders(f)),
    lambda e: (
        json.dumps(e.custom_fields, ensure_ascii=False, default=_encode_custom)
        if e.custom_fields
        else None
    ),
)


def _attribute_of(column: str) -> str:
    for f in FIELDS:
        if f.column == column:
            return f.attribute
    return next(f.attribute for f in FIELDS if f.kind is Kind.PAYLOAD)


# Every column but `custom` as the event's attribute (the source as it is, the payload twice):
# one C call reads them all, which is each column's encoding when the event has no source and
# no payload (most do not: the hot path of ingest).
_READ_ALL = attrgetter(*(_attribute_of(c) for c in EVENT_COLUMNS[:-1]))
_ENCODE_CUSTOM = _ENCODE[-1]


def event_row(e: Event) -> tuple[Any, ...]:
    if e.source is None and e.payload is None:
        return (*_READ_ALL(e), _ENCODE_CUSTOM(e))
    return tuple(encode(e) for encode in _ENCODE)


def _decoder(field: EventField) -> Callable[[Sequence[Any]], Any]:
    if field.kind is Kind.PAYLOAD:
        kind, data = _INDEX["payload_type"], _INDEX["payload_data"]
        return lambda r: None if r[kind] is None else Payload(r[kind], bytes(r[data] or b""))
    index = _INDEX[field.column or ""]
    if field.kind is Kind.SOURCE:
        return lambda r: None if r[index] is None else json.loads(r[index])
    return lambda r: bool(r[index])  # BOOLEAN: SQLite answers 0 and 1


# Columns read as they are, all at once by position; the others each through their decoder.
_PLAIN = tuple(f for f in FIELDS if f.column and f.kind not in (Kind.SOURCE, Kind.BOOLEAN))
_PLAIN_ATTRIBUTES = tuple(f.attribute for f in _PLAIN)
_plain_values = itemgetter(*(_INDEX[f.column] for f in _PLAIN if f.column))
_DECODE = tuple((f.attribute, _decoder(f)) for f in FIELDS if f not in _PLAIN)
_CUSTOM, _SEQ = _INDEX["custom"], _INDEX["seq"]


def event_from_row(row: Sequence[Any]) -> Event:
    """An event from a row of SELECT_EVENT (or of INSERT_COLUMNS, or of EVENT_COLUMNS alone),
    read by position: the columns come in that order in each."""
    attributes = dict(zip(_PLAIN_ATTRIBUTES, _plain_values(row), strict=True))
    for attribute, decode in _DECODE:
        attributes[attribute] = decode(row)
    custom = row[_CUSTOM]
    return Event(
        **attributes,
        custom_fields=json.loads(custom, object_hook=_decode_custom) if custom else {},
        # NULL for events stored before the feed existed (migration 7), absent in a new row.
        seq=(row[_SEQ] if len(row) > _SEQ else None) or 0,
    )
