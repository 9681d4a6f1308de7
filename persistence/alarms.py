"""The open_alarms side table: the store's half of alarm de-duplication
(service/domain/alarms.py), applied inside the writing transaction.

A create of an alarm claims its key with one upsert: the primary key (tenant, key) decides,
on every replica, whether the alarm is new or an occurrence of the open alarm the key names;
that alarm's row then counts the occurrence with one UPDATE. No read decides and then writes,
so N concurrent identical creates leave one alarm with count N."""

from __future__ import annotations

from typing import Any

from persistence.rows import EVENT_COLUMNS

_RETURNING = f"RETURNING {', '.join(EVENT_COLUMNS)}, seq"


def claim(cursor: Any, p: str, tenant_id: str, key: str, event_id: str, ts: int) -> tuple[str, int]:
    """Names `event_id` the open alarm of `key` unless one is open; returns the open alarm's
    id and timestamp (`event_id` and `ts` when the claim won)."""
    cursor.execute(
        "INSERT INTO open_alarms (tenant_id, alarm_key, event_id, ts) "
        f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (tenant_id, alarm_key) "
        "DO UPDATE SET event_id = open_alarms.event_id RETURNING event_id, ts",
        (tenant_id, key, event_id, ts),
    )
    found, found_ts = cursor.fetchone()
    return str(found), int(found_ts)


def open_alarm(cursor: Any, p: str, tenant_id: str, key: str) -> tuple[str, int] | None:
    """The id and timestamp of the open alarm of `key`, or None (for counting only, never
    to decide whether to store: that is what claim is for)."""
    cursor.execute(
        f"SELECT event_id, ts FROM open_alarms WHERE tenant_id = {p} AND alarm_key = {p}",
        (tenant_id, key),
    )
    row = cursor.fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def take_over(cursor: Any, p: str, tenant_id: str, key: str, event_id: str, ts: int) -> None:
    """Names `event_id` the open alarm of `key` in place of one that is gone (deleted, or
    changed by an update so that it no longer has this key)."""
    cursor.execute(
        f"UPDATE open_alarms SET event_id = {p}, ts = {p} "
        f"WHERE tenant_id = {p} AND alarm_key = {p}",
        (event_id, ts, tenant_id, key),
    )


def count_occurrence(
    cursor: Any,
    p: str,
    alarm_id: str,
    alarm_ts: int,
    code: str,
    occurrence_ts: int,
    now: int,
) -> tuple[Any, ...] | None:
    """Counts one more occurrence into the stored alarm; its row afterwards (EVENT_COLUMNS
    and seq), or None when the alarm is no longer there as an open alarm of this code (its
    clearing forgot the key in its own transaction; this is the belt to those braces)."""
    cursor.execute(
        "UPDATE events SET occurrence_count = COALESCE(occurrence_count, 1) + 1, "
        f"last_occurrence = CASE WHEN COALESCE(last_occurrence, ts) < {p} THEN {p} "
        "ELSE COALESCE(last_occurrence, ts) END, "
        f"etag = etag + 1, update_time = {p} "
        f"WHERE id = {p} AND ts = {p} AND classification = 'ALARM' AND code = {p} "
        f"AND status <> 'CLEARED' {_RETURNING}",
        (occurrence_ts, occurrence_ts, now, alarm_id, alarm_ts, code),
    )
    rows = cursor.fetchall()
    return tuple(rows[0]) if rows else None
