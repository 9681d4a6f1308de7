"""The events table's row codec: an Event as the row the store writes, and back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from persistence.queries import refresh_latest
from service.domain.custom_fields import Instant
from service.domain.events import Event, Payload

EVENT_COLUMNS = (
    "id",
    "tenant_id",
    "type_id",
    "correlation_id",
    "entity_type",
    "entity_id",
    "domain",
    "ts",
    "create_time",
    "update_time",
    "etag",
    "severity",
    "code",
    "description",
    "source",
    "classification",
    "category",
    "ack_required",
    "acknowledged",
    "acknowledged_at",
    "acknowledged_by",
    "app_id",
    "internal",
    "payload_type",
    "payload_data",
    "custom",
)
# Reads return the feed position too (NULL for events stored before the feed existed).
SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)}, seq FROM events"
# An insert names its columns; seq and idempotency_key follow the event's own.
INSERT_COLUMNS = (*EVENT_COLUMNS, "seq", "idempotency_key")


def insert_events(cursor: Any, rows: Sequence[tuple[Any, ...]], postgres: bool) -> None:
    """Inserts event rows (in EVENT_COLUMNS order, no feed position) and keeps the newest-of-
    correlation flag right, in the caller's transaction: the list benchmark's bulk load."""
    columns = ", ".join(EVENT_COLUMNS)
    if postgres:
        from psycopg2.extras import execute_values

        execute_values(cursor, f"INSERT INTO events ({columns}) VALUES %s", rows, page_size=1000)
    else:
        placeholders = ", ".join(["?"] * len(EVENT_COLUMNS))
        cursor.executemany(f"INSERT INTO events ({columns}) VALUES ({placeholders})", rows)
    # Columns 1, 3, 5, 2: tenant, correlation id, entity id, type id.
    refresh_latest(cursor, ((r[1], r[3], r[5], r[2]) for r in rows if r[3]), postgres)


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


def event_row(e: Event) -> tuple[Any, ...]:
    source = None if e.source is None else json.dumps(e.source, ensure_ascii=False)
    custom = (
        json.dumps(e.custom_fields, ensure_ascii=False, default=_encode_custom)
        if e.custom_fields
        else None
    )
    payload_type = e.payload.content_type if e.payload else None
    payload_data = e.payload.data if e.payload else None
    return (
        e.id,
        e.tenant_id,
        e.type_id,
        e.correlation_id,
        e.entity_type,
        e.entity_id,
        e.domain,
        e.timestamp,
        e.create_time,
        e.update_time,
        e.etag,
        e.severity,
        e.code,
        e.description,
        source,
        e.classification,
        e.category,
        e.acknowledgement_required,
        e.acknowledged,
        e.acknowledged_at,
        e.acknowledged_by,
        e.app_id,
        e.internal,
        payload_type,
        payload_data,
        custom,
    )


def event_from_row(r: Sequence[Any]) -> Event:
    payload = None if r[23] is None else Payload(r[23], bytes(r[24] or b""))
    return Event(
        id=r[0],
        tenant_id=r[1],
        type_id=r[2],
        correlation_id=r[3],
        entity_type=r[4],
        entity_id=r[5],
        domain=r[6],
        timestamp=r[7],
        create_time=r[8],
        update_time=r[9],
        etag=r[10],
        severity=r[11],
        code=r[12],
        description=r[13],
        source=None if r[14] is None else json.loads(r[14]),
        classification=r[15],
        category=r[16],
        acknowledgement_required=bool(r[17]),
        acknowledged=bool(r[18]),
        acknowledged_at=r[19],
        acknowledged_by=r[20],
        app_id=r[21],
        internal=bool(r[22]),
        payload=payload,
        custom_fields=json.loads(r[25], object_hook=_decode_custom) if r[25] else {},
        # Reads through SELECT_EVENT carry the feed position (NULL before migration 7).
        seq=(r[26] or 0) if len(r) > 26 else 0,
    )
