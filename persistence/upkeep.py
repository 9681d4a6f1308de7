"""What every insert and delete of events keeps right beside the rows, in the same
transaction: the daily rollup counts (event_rollups), the idempotency keys
(event_idempotency_keys), the latest flag of correlated events (see queries.refresh_latest),
the open alarms of de-duplication keys (open_alarms, persistence/alarms.py) and the alarms'
transitions (event_transitions, persistence/transitions.py).

event_rollups holds, per tenant, domain, type and UTC day of the timestamp, how many events
are stored: find answers terms on the type and date histograms from it (persistence/rollups.py)
without reading the events. Counts are exact: every statement that inserts or deletes events
goes through count_inserted or forget_deleted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from persistence.queries import refresh_latest

DAY_US = 86_400 * 1_000_000
# What a DELETE FROM events returns for forget_deleted, in this order.
DELETED_RETURNING = (
    "RETURNING tenant_id, correlation_id, entity_id, type_id, domain, ts, idempotency_key, "
    "id, classification"
)

RollupKey = tuple[str, str, str, int]  # tenant id, domain, type id, first microsecond of the day


def day_of(ts_us: int) -> int:
    return ts_us - ts_us % DAY_US  # Python's % floors: right before 1970 too


def day_sql(column: str, postgres: bool) -> str:
    """The first microsecond of the column's UTC day, in SQL (floor division, like day_of)."""
    if postgres:
        return f"({column} - mod(mod({column}, {DAY_US}) + {DAY_US}, {DAY_US}))"
    return f"({column} - (({column} % {DAY_US}) + {DAY_US}) % {DAY_US})"


def add_counts(cursor: Any, counts: Counter[RollupKey], postgres: bool) -> None:
    """Adds (or with negative counts, takes away) events to their days' rollups; rows that
    reach zero go. Keys in sorted order: two writers lock rollup rows in one global order."""
    changes = sorted((key, n) for key, n in counts.items() if n)
    if not changes:
        return
    p = "%s" if postgres else "?"
    rows = [(*key, n) for key, n in changes]
    upsert = (
        "INSERT INTO event_rollups (tenant_id, domain, type_id, day_us, event_count) "
        "VALUES {values} ON CONFLICT (tenant_id, domain, type_id, day_us) "
        "DO UPDATE SET event_count = event_rollups.event_count + excluded.event_count"
    )
    if postgres:
        from psycopg2.extras import execute_values

        execute_values(cursor, upsert.format(values="%s"), rows, page_size=1000)
    else:
        cursor.executemany(upsert.format(values=f"({', '.join([p] * 5)})"), rows)
    if any(n < 0 for _, n in changes):
        key = f"tenant_id = {p} AND domain = {p} AND type_id = {p} AND day_us = {p}"
        cursor.executemany(
            f"DELETE FROM event_rollups WHERE {key} AND event_count <= 0",
            [key_ for key_, n in changes if n < 0],
        )


def count_inserted(cursor: Any, keys: Iterable[RollupKey], postgres: bool) -> None:
    """Counts inserted events, given as (tenant id, domain, type id, timestamp)."""
    counts: Counter[RollupKey] = Counter(
        (tenant, domain, type_id, day_of(ts)) for tenant, domain, type_id, ts in keys
    )
    add_counts(cursor, counts, postgres)


def remember_keys(cursor: Any, keyed: Sequence[tuple[str, str, str, int]], postgres: bool) -> None:
    """Stores (tenant id, idempotency key, event id, timestamp) of inserted events; a key
    stored twice for one tenant breaks the primary key, on every replica."""
    if not keyed:
        return
    p = "%s" if postgres else "?"
    cursor.executemany(
        "INSERT INTO event_idempotency_keys (tenant_id, idempotency_key, event_id, ts) "
        f"VALUES ({p}, {p}, {p}, {p})",
        keyed,
    )


def forget_deleted(cursor: Any, gone: Sequence[Sequence[Any]], postgres: bool) -> None:
    """Keeps the side tables right after a DELETE ... DELETED_RETURNING: the correlations that
    lost an event get their newest remaining one flagged, the rollups lose the events, their
    idempotency keys are free again (an alarm's: those of every create counted into it too),
    and deleted alarms leave neither an open de-duplication window nor transitions behind."""
    refresh_latest(cursor, ((g[0], g[1], g[2], g[3]) for g in gone if g[1]), postgres)
    counts: Counter[RollupKey] = Counter()
    for g in gone:
        counts[(g[0], g[4], g[3], day_of(int(g[5])))] -= 1
    add_counts(cursor, counts, postgres)
    alarms = [g for g in gone if g[8] == "ALARM"]
    close_alarms(cursor, [str(g[7]) for g in alarms], postgres)
    if alarms:
        p = "%s" if postgres else "?"
        where = f"WHERE event_id = {p} AND {{ts}} = {p} AND tenant_id = {p}"
        alarm_rows = [(str(g[7]), int(g[5]), g[0]) for g in alarms]
        cursor.executemany(
            f"DELETE FROM event_transitions {where.format(ts='event_ts')}", alarm_rows
        )
        # The keys of the creates counted into it (remembered with the alarm's id and time).
        cursor.executemany(
            f"DELETE FROM event_idempotency_keys {where.format(ts='ts')}", alarm_rows
        )
    keys = sorted({(g[0], g[6]) for g in gone if g[6] is not None})
    if keys:
        p = "%s" if postgres else "?"
        cursor.executemany(
            f"DELETE FROM event_idempotency_keys WHERE tenant_id = {p} AND idempotency_key = {p}",
            keys,
        )


def close_alarms(cursor: Any, event_ids: Sequence[str], postgres: bool) -> None:
    """Closes the de-duplication window of these alarms (cleared or deleted; see
    persistence/alarms.py): the next occurrence of their keys is a new alarm."""
    if event_ids:
        p = "%s" if postgres else "?"
        cursor.executemany(
            f"DELETE FROM open_alarms WHERE event_id = {p}", [(i,) for i in event_ids]
        )
