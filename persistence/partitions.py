"""PostgreSQL's events table, partitioned by calendar month (UTC) of the event's timestamp.

A partition is named `events_pYYYYMM` and holds the timestamps of that month; `events_default`
holds every timestamp outside the months that have one (old back-fill, far future). Time-window
queries read only the partitions their window overlaps (plus the default one when the window
reaches past the last month). Upkeep (`ensure_partitions`) keeps the months from one back to
PARTITIONS_AHEAD ahead; a month created later takes its rows out of the default partition.
Retention drops a partition whose every event has expired (`drop_expired_partitions`) instead
of deleting its rows. SQLite has no partitions: there all of this does nothing.

Unique indexes of a partitioned table must contain the partition key. The primary key is
(id, ts): ids are made by the server (service/domain/events.py, time-ordered with random bits),
never by clients; the feed position `seq` comes from the one feed counter; idempotency keys,
which clients choose, are unique in the side table event_idempotency_keys.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from persistence.queries import refresh_latest

PARTITIONS_AHEAD = 3
# At conversion, months older than this many get no partition of their own (default holds them).
PARTITIONS_BEHIND = 36
DEFAULT_PARTITION = "events_default"


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """The month's first microsecond and the next month's, UTC."""
    start = datetime.datetime(year, month, 1, tzinfo=datetime.UTC)
    following = datetime.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=datetime.UTC)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (start - epoch) // datetime.timedelta(microseconds=1), (
        following - epoch
    ) // datetime.timedelta(microseconds=1)


def month_of(ts_us: int) -> tuple[int, int]:
    moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        microseconds=ts_us
    )
    return moment.year, moment.month


def months_between(first: tuple[int, int], last: tuple[int, int]) -> list[tuple[int, int]]:
    """Every month from `first` to `last`, both included."""
    months = []
    year, month = first
    while (year, month) <= last:
        months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def shift(month: tuple[int, int], by: int) -> tuple[int, int]:
    index = month[0] * 12 + month[1] - 1 + by
    return index // 12, index % 12 + 1


def partition_name(year: int, month: int) -> str:
    return f"events_p{year:04d}{month:02d}"


def partitions(cursor: Any) -> dict[str, tuple[int, int]]:
    """The monthly partitions of events and their bounds, by name (the default one aside)."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    )
    found = {}
    for (name,) in cursor.fetchall():
        if name.startswith("events_p") and name[8:].isdigit():
            found[name] = month_bounds(int(name[8:12]), int(name[12:14]))
    return found


def ensure_partitions(cursor: Any, now_us: int, months: Iterable[tuple[int, int]] = ()) -> int:
    """Creates the partitions of last month to PARTITIONS_AHEAD ahead (and of `months`) that
    do not exist, moving the default partition's rows of each such month into it, in the
    caller's transaction. Returns how many it created."""
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = 'events'::regclass")
    if cursor.fetchone()[0] != "p":  # before migration 30
        return 0
    # Self-exclusive, yet writes and reads go on: replicas never create one month twice.
    cursor.execute("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE")
    current = month_of(now_us)
    wanted = set(months_between(shift(current, -1), shift(current, PARTITIONS_AHEAD)))
    wanted.update(months)
    existing = partitions(cursor)
    created = 0
    for year, month in sorted(wanted):
        name = partition_name(year, month)
        if name in existing:
            continue
        low, high = month_bounds(year, month)
        cursor.execute(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS)")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts >= %s AND ts < %s "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            (low, high),
        )
        cursor.execute(
            f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)",
            (low, high),
        )
        created += 1
    return created


def _types_in(cursor: Any, table: str) -> list[str]:
    """The distinct type ids of a partition, one index probe each (a loose index scan)."""
    cursor.execute(
        f"WITH RECURSIVE t(v) AS (SELECT min(type_id) FROM {table} UNION ALL "
        f"SELECT (SELECT min(type_id) FROM {table} WHERE type_id > t.v) FROM t "
        "WHERE t.v IS NOT NULL) SELECT v FROM t WHERE v IS NOT NULL"
    )
    return [row[0] for row in cursor.fetchall()]


def wholly_expired(cursor: Any, table: str, cutoffs: Mapping[str, int]) -> bool:
    """Whether the partition holds events and every one was stored before its type's cutoff.
    A type without a cutoff (outside the catalogue) never expires."""
    types = _types_in(cursor, table)
    if not types:
        return False
    for type_id in types:
        cutoff = cutoffs.get(type_id)
        if cutoff is None:
            return False
        cursor.execute(f"SELECT max(create_time) FROM {table} WHERE type_id = %s", (type_id,))
        if cursor.fetchone()[0] >= cutoff:
            return False
    return True


def expired_candidates(cursor: Any, now_us: int, cutoffs: Mapping[str, int]) -> list[str]:
    """Past months' partitions whose every event has expired (read without locks)."""
    return [
        name
        for name, (_, high) in sorted(partitions(cursor).items())
        if high <= now_us and wholly_expired(cursor, name, cutoffs)
    ]


def drop_partition(cursor: Any, name: str, cutoffs: Mapping[str, int]) -> int | None:
    """Drops one wholly expired partition in the caller's transaction, with what refers to its
    events: their rollup counts and idempotency keys, the latest flag of the correlations
    whose newest event it held, and its alarms' open windows and transitions. None when it no
    longer qualifies (checked under the lock)."""
    # Taken first, before any row lock: writers wait for the drop, and none can deadlock it.
    cursor.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    bounds = partitions(cursor).get(name)
    if bounds is None or not wholly_expired(cursor, name, cutoffs):
        return None
    low, high = bounds
    cursor.execute(
        f"SELECT DISTINCT tenant_id, correlation_id, entity_id, type_id FROM {name} "
        "WHERE latest AND correlation_id <> ''"
    )
    groups = [tuple(row) for row in cursor.fetchall()]
    cursor.execute(
        "SELECT COALESCE(SUM(event_count), 0) FROM event_rollups "
        "WHERE day_us >= %s AND day_us < %s",
        (low, high),
    )
    count = int(cursor.fetchone()[0])
    # A partition holds whole days, so its rollup rows are exactly those of its days.
    cursor.execute("DELETE FROM event_rollups WHERE day_us >= %s AND day_us < %s", (low, high))
    cursor.execute("DELETE FROM event_idempotency_keys WHERE ts >= %s AND ts < %s", (low, high))
    # Its alarms' open de-duplication windows and transitions (upkeep.forget_deleted).
    for table, ts in (("open_alarms", "ts"), ("event_transitions", "event_ts")):
        cursor.execute(
            f"DELETE FROM {table} t USING {name} e WHERE e.classification = 'ALARM' "
            f"AND t.tenant_id = e.tenant_id AND t.event_id = e.id AND t.{ts} = e.ts"
        )
    cursor.execute(f"DROP TABLE {name}")
    refresh_latest(cursor, groups, True)
    return count
