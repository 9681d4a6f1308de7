"""The writes of the events table, applied on the group-commit writer's thread: inserts
under the feed counter (each event gets the next feed position in its own transaction),
idempotent batches (an alarm counted into its open alarm records a COUNTED transition at the
next feed position instead), replacements checked by etag, alarm status changes with their
transitions, and callable work (a job's chunk) that inserts rows of its own; after each
commit the listeners learn which events it created and which transitions it recorded, in
feed order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import peewee

from persistence import alarms
from persistence.notify import FEED_CHANNEL
from persistence.queries import refresh_latest
from persistence.rows import (
    EVENT_COLUMNS,
    INSERT_COLUMNS,
    correlation_groups,
    event_from_row,
    event_row,
    fold_row,
    keyed_rows,
    rollup_keys,
)
from persistence.transitions import alarms_cleared, insert_numbered, insert_transitions
from persistence.upkeep import count_inserted, remember_keys
from service.domain.alarm_status import CLEARED, Transition, counted
from service.domain.events import Event, now_us

# What the live feed carries: created events and alarm transitions, each with its `seq`.
FeedItem = Event | Transition


@dataclass(frozen=True, slots=True)
class Insert:
    """One event; an alarm to de-duplicate carries its key (service/domain/alarms.py). Its
    result is the new feed position (int), or the open alarm it was counted into (Folded)."""

    event: Event
    row: tuple[Any, ...]
    dedup_key: str | None = None
    # Only count it into the open alarm of its key (an alarm storm): stored never; its
    # result is None when no alarm of the key is open.
    fold_only: bool = False


@dataclass(frozen=True, slots=True)
class InsertBatch:
    """Events of one tenant, each with an optional idempotency key and de-duplication key.
    Its result lists, per event, its new feed position (int), the id already stored under its
    idempotency key (str), or the open alarm it was counted into (Folded)."""

    tenant_id: str
    events: Sequence[Event]
    rows: list[tuple[Any, ...]]
    keys: list[str | None]
    dedup_keys: list[str | None] | None = None
    # Per event, as Insert.fold_only; its result is then None when not counted.
    fold_only: list[bool] | None = None


@dataclass(frozen=True, slots=True)
class Folded:
    """A create counted as another occurrence of an open alarm: the alarm afterwards, and
    the COUNTED transition recorded for it (numbered in the feed)."""

    alarm: Event
    transition: Transition


@dataclass(frozen=True, slots=True)
class Replace:
    row: tuple[Any, ...]
    expected_etag: int


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A replacement checked by etag that records the alarm's transition with it."""

    row: tuple[Any, ...]
    expected_etag: int
    transition: Transition


class EventWrites:
    """Applies batches of write operations; tells the commit listeners what they created."""

    def __init__(self, database: peewee.Database, postgres: bool) -> None:
        self._database = database
        self._postgres = postgres
        # Called on the event loop with the events each commit created and the transitions
        # it recorded, in feed order.
        self.commit_listeners: list[Callable[[list[FeedItem]], None]] = []
        # What callable writes inserted, by the operation's id, until their commit.
        self._created_by: dict[int, list[FeedItem]] = {}
        self._recording: list[FeedItem] | None = None

    def apply(self, cursor: Any, operations: Sequence[Any]) -> list[Any]:
        p = self._database.param
        results: list[Any] = [None] * len(operations)
        rows: list[tuple[Any, ...]] = []
        if any(isinstance(op, Insert | InsertBatch | StatusChange) for op in operations):
            # Taken before anything else: the feed_state row lock orders the transactions
            # (and is taken before any event row's lock, so replicas never deadlock).
            cursor.execute("UPDATE feed_state SET last_seq = last_seq WHERE id = 1")
            cursor.execute("SELECT last_seq FROM feed_state WHERE id = 1")
            first_seq = int(cursor.fetchone()[0]) + 1
            placing = _Placing(cursor, p, rows, first_seq)
            for index, op in enumerate(operations):
                if isinstance(op, Insert):
                    results[index] = placing.place(
                        op.event, op.row, op.dedup_key, None, fold_only=op.fold_only
                    )
                elif isinstance(op, InsertBatch):
                    existing = self._stored_keys(cursor, op.tenant_id, op.keys)
                    dedup_keys = op.dedup_keys or [None] * len(op.rows)
                    fold_only = op.fold_only or [False] * len(op.rows)
                    outcome: list[int | str | Folded | None] = []
                    for row, key, event, dedup_key, only in zip(
                        op.rows, op.keys, op.events, dedup_keys, fold_only, strict=True
                    ):
                        if key is not None and key in existing:
                            outcome.append(existing[key])
                            continue
                        placed = placing.place(event, row, dedup_key, key, fold_only=only)
                        if placed is None:
                            outcome.append(None)
                            continue
                        if key is not None:
                            existing[key] = (
                                placed.alarm.id if isinstance(placed, Folded) else event.id
                            )
                        outcome.append(placed)
                    results[index] = outcome
            next_seq = placing.next_seq
            if placing.folded_keys:  # a resend of a folded create must not count it again
                remember_keys(cursor, placing.folded_keys, self._postgres)
            if rows or placing.transitions:
                if rows:
                    self._insert_numbered(cursor, rows)
                insert_numbered(cursor, self._postgres, placing.transitions)
                cursor.execute(
                    f"UPDATE feed_state SET last_seq = {p} WHERE id = 1", (next_seq - 1,)
                )
                if self._postgres:  # delivered at commit, to every replica that listens
                    cursor.execute("SELECT pg_notify(%s, %s)", (FEED_CHANNEL, str(next_seq - 1)))
        for index, op in enumerate(operations):
            if isinstance(op, Replace | StatusChange):
                results[index] = self.replace_row(cursor, op.row, op.expected_etag)
                if isinstance(op, StatusChange) and results[index]:
                    self.record_transitions(cursor, [op.transition])
            elif callable(op):
                # What the callable inserts through insert_rows is told to the commit
                # listeners once this attempt commits (see after_commit).
                self._recording = self._created_by[id(op)] = []
                try:
                    results[index] = op(cursor)
                finally:
                    self._recording = None
        return results

    def replace_row(self, cursor: Any, row: tuple[Any, ...], expected_etag: int) -> bool:
        """Replaces the stored event of the row's id (an `event_row`) if its etag is still
        `expected_etag`; True when it was."""
        p = self._database.param
        assignments = ", ".join(f"{c} = {p}" for c in EVENT_COLUMNS[1:])
        cursor.execute(
            f"UPDATE events SET {assignments} WHERE id = {p} AND etag = {p}",
            (*row[1:], row[0], expected_etag),
        )
        return bool(cursor.rowcount == 1)

    def lock_feed(self, cursor: Any) -> None:
        """Takes the feed counter's row lock now, for work that will change event rows and
        then record transitions: the lock comes first in every transaction."""
        cursor.execute("UPDATE feed_state SET last_seq = last_seq WHERE id = 1")

    def record_transitions(self, cursor: Any, transitions: Sequence[Transition]) -> None:
        """Records alarm transitions of events changed in this transaction at the next feed
        positions; subscribers and the commit listeners learn of them once it commits. Every
        clearing passes through here, so alarms_cleared sees each one."""
        if not transitions:
            return
        first = self._claim_seqs(cursor, len(transitions))
        insert_transitions(cursor, self._postgres, transitions, first)
        cleared = [t.subject for t in transitions if t.to_status == CLEARED != t.from_status]
        if cleared:
            alarms_cleared(cursor, cleared, self._postgres)
        if self._recording is not None:
            self._recording.extend(transitions)

    def insert_rows(self, cursor: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Inserts event rows (of `event_row`) for work submitted to the writer as a callable,
        such as a bulk job's chunk: they get the next feed positions in this transaction, and
        subscribers and the commit listeners learn of them once it commits."""
        if not rows:
            return
        first = self._claim_seqs(cursor, len(rows))
        numbered = [(*row, first + n, None) for n, row in enumerate(rows)]
        self._insert_numbered(cursor, numbered)
        if self._recording is not None:
            self._recording.extend(event_from_row(row) for row in numbered)

    def insert_events(
        self, cursor: Any, events: Sequence[tuple[Event, str | None]]
    ) -> list[int | Folded]:
        """insert_rows for events that may be alarms to de-duplicate (each with its key, as
        Insert takes it): each is stored with the next feed position, or counted into the open
        alarm of its key (Folded, its COUNTED transition at the next position), as single
        creates are."""
        if not events:
            return []
        p = self._database.param
        cursor.execute("UPDATE feed_state SET last_seq = last_seq WHERE id = 1")
        cursor.execute("SELECT last_seq FROM feed_state WHERE id = 1")
        rows: list[tuple[Any, ...]] = []
        placing = _Placing(cursor, p, rows, int(cursor.fetchone()[0]) + 1)
        outcomes: list[int | Folded] = []
        for e, key in events:
            placed = placing.place(e, event_row(e), key, None)
            assert placed is not None  # only fold_only writes place nothing
            outcomes.append(placed)
        if rows or placing.transitions:
            if rows:
                self._insert_numbered(cursor, rows)
            insert_numbered(cursor, self._postgres, placing.transitions)
            cursor.execute(
                f"UPDATE feed_state SET last_seq = {p} WHERE id = 1", (placing.next_seq - 1,)
            )
            if self._postgres:
                cursor.execute(
                    "SELECT pg_notify(%s, %s)", (FEED_CHANNEL, str(placing.next_seq - 1))
                )
            if self._recording is not None:
                self._recording.extend(event_from_row(row) for row in rows)
                self._recording.extend(placing.transitions)
                self._recording.sort(key=lambda item: item.seq)
        return outcomes

    def insert_row(
        self,
        cursor: Any,
        row: tuple[Any, ...],
        extra: dict[str, Any] | None = None,
        *,
        skip_conflicts: bool = False,
    ) -> bool:
        """Inserts one event row with more columns (`extra`), for writes that need their own
        statement, such as device reports with their report hash; with `skip_conflicts` a
        row that breaks a unique index is left out. True when the row was inserted. Like
        insert_rows, it gets the next feed position and reaches the commit listeners."""
        seq = self._claim_seqs(cursor, 1)
        extra = extra or {}
        columns = (*INSERT_COLUMNS, *extra)
        placeholders = ", ".join([self._database.param] * len(columns))
        conflict = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
        cursor.execute(
            f"INSERT INTO events ({', '.join(columns)}) VALUES ({placeholders}){conflict}",
            (*row, seq, None, *extra.values()),
        )
        inserted = bool(cursor.rowcount == 1)
        if inserted:  # a correlated event may be its correlation's new newest
            refresh_latest(cursor, correlation_groups([row]), self._postgres)
            count_inserted(cursor, rollup_keys([row]), self._postgres)
        if inserted and self._recording is not None:
            self._recording.append(event_from_row((*row, seq)))
        return inserted

    def _claim_seqs(self, cursor: Any, count: int) -> int:
        """Hands out `count` feed positions in this transaction; returns the first."""
        p = self._database.param
        cursor.execute(f"UPDATE feed_state SET last_seq = last_seq + {p} WHERE id = 1", (count,))
        cursor.execute("SELECT last_seq FROM feed_state WHERE id = 1")
        last = int(cursor.fetchone()[0])
        if self._postgres:
            cursor.execute("SELECT pg_notify(%s, %s)", (FEED_CHANNEL, str(last)))
        return last - count + 1

    def _insert_numbered(self, cursor: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        columns = ", ".join(INSERT_COLUMNS)
        if self._postgres:
            from psycopg2.extras import execute_values

            execute_values(
                cursor, f"INSERT INTO events ({columns}) VALUES %s", rows, page_size=1000
            )
        else:
            placeholders = ", ".join(["?"] * len(INSERT_COLUMNS))
            cursor.executemany(f"INSERT INTO events ({columns}) VALUES ({placeholders})", rows)
        refresh_latest(cursor, correlation_groups(rows), self._postgres)
        count_inserted(cursor, rollup_keys(rows), self._postgres)
        remember_keys(cursor, keyed_rows(rows), self._postgres)

    def _stored_keys(self, cursor: Any, tenant_id: str, keys: list[str | None]) -> dict[str, str]:
        """Idempotency key -> id of the tenant's events already stored under those keys (read
        under the feed counter's lock, so no other writer stores one meanwhile)."""
        wanted = sorted({k for k in keys if k is not None})
        found: dict[str, str] = {}
        p = self._database.param
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            cursor.execute(
                "SELECT idempotency_key, event_id FROM event_idempotency_keys "
                f"WHERE tenant_id = {p} "
                f"AND idempotency_key IN ({', '.join([p] * len(chunk))})",
                (tenant_id, *chunk),
            )
            found.update(cursor.fetchall())
        return found

    def after_commit(self, operations: Sequence[Any], results: Sequence[Any]) -> None:
        """Gives each committed event its feed position and tells the listeners."""
        committed: list[FeedItem] = []
        for op, result in zip(operations, results, strict=True):
            if isinstance(op, Insert) and isinstance(result, int):
                op.event.seq = result
                committed.append(op.event)
            elif isinstance(op, Insert) and isinstance(result, Folded):
                committed.append(result.transition)
            elif isinstance(op, InsertBatch) and isinstance(result, list):
                for event, outcome in zip(op.events, result, strict=True):
                    if isinstance(outcome, int):
                        event.seq = outcome
                        committed.append(event)
                    elif isinstance(outcome, Folded):
                        committed.append(outcome.transition)
            elif isinstance(op, StatusChange) and result is True:
                committed.append(op.transition)
            elif callable(op):
                created = self._created_by.pop(id(op), [])
                if not isinstance(result, BaseException):
                    committed.extend(created)
        if committed:
            committed.sort(key=lambda e: e.seq)
            for listener in self.commit_listeners:
                listener(committed)


class _Placing:
    """Places one transaction's new events: each gets the next feed position, unless it is an
    alarm whose key names an open alarm (stored, or created earlier in this transaction), into
    which it is counted instead; the next position then goes to its COUNTED transition."""

    def __init__(self, cursor: Any, p: str, rows: list[tuple[Any, ...]], first_seq: int) -> None:
        self._cursor = cursor
        self._p = p
        self.rows = rows
        self.next_seq = first_seq
        # (tenant, key) -> index in rows of an alarm this transaction creates.
        self._created: dict[tuple[str, str], int] = {}
        # (tenant, idempotency key, alarm id, alarm ts) of folded creates that carry a key.
        self.folded_keys: list[tuple[str, str, str, int]] = []
        # The COUNTED transitions of the occurrences counted, numbered in feed order.
        self.transitions: list[Transition] = []

    def place(
        self,
        event: Event,
        row: tuple[Any, ...],
        dedup_key: str | None,
        key: str | None,
        *,
        fold_only: bool = False,
    ) -> int | Folded | None:
        if dedup_key is not None:
            folded = self._fold(event, dedup_key, fold_only)
            if folded is not None:
                if key is not None:
                    self.folded_keys.append((event.tenant_id, key, folded.id, folded.timestamp))
                transition = counted(folded)
                transition.seq = self.next_seq
                self.next_seq += 1
                self.transitions.append(transition)
                return Folded(folded, transition)
            if fold_only:
                return None
            self._created[(event.tenant_id, dedup_key)] = len(self.rows)
        elif fold_only:
            return None
        seq = self.next_seq
        self.rows.append((*row, seq, key))
        self.next_seq += 1
        return seq

    def _fold(self, event: Event, dedup_key: str, fold_only: bool) -> Event | None:
        """Counts the occurrence into the open alarm of its key and returns that alarm, or
        (unless `fold_only`) claims the key for `event` and returns None."""
        now = now_us()
        index = self._created.get((event.tenant_id, dedup_key))
        if index is not None:
            self.rows[index] = fold_row(self.rows[index], event.timestamp, now)
            return event_from_row(self.rows[index])
        if fold_only:
            found = alarms.open_alarm(self._cursor, self._p, event.tenant_id, dedup_key)
            if found is None:
                return None
            stored = alarms.count_occurrence(
                self._cursor, self._p, *found, event.code, event.timestamp, now
            )
            return None if stored is None else event_from_row(stored)
        alarm_id, alarm_ts = alarms.claim(
            self._cursor, self._p, event.tenant_id, dedup_key, event.id, event.timestamp
        )
        if alarm_id == event.id:
            return None
        stored = alarms.count_occurrence(
            self._cursor, self._p, alarm_id, alarm_ts, event.code, event.timestamp, now
        )
        if stored is not None:
            return event_from_row(stored)
        # The alarm the key named is gone: this one opens the key anew.
        alarms.take_over(
            self._cursor, self._p, event.tenant_id, dedup_key, event.id, event.timestamp
        )
        return None
