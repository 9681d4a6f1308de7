"""Alarm transitions in the database (service/domain/alarm_status.py): each acknowledgement
or clearing of an alarm, and each occurrence counted into it, is a row of
`event_transitions`, written in the transaction of the change itself and numbered from the
live feed's counter, so that subscribers receive it in commit order beside creations and
resume it by the same cursor, on any replica."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import peewee

from persistence.queries import SqlBuilder
from persistence.rows import SELECT_EVENT, event_from_row
from persistence.upkeep import close_alarms
from service.domain.access import Principal
from service.domain.alarm_status import Transition, as_left_by
from service.domain.event_fields import COLUMNS
from service.domain.events import Event

TRANSITION_COLUMNS = (
    "seq",
    "tenant_id",
    "event_id",
    "event_ts",
    "kind",
    "from_status",
    "to_status",
    "actor",
    "change_time",
    "alarm_count",
    "alarm_last_occurrence",
)
_SELECT = f"SELECT {', '.join(TRANSITION_COLUMNS)} FROM event_transitions"


def transition_row(transition: Transition, event_ts: int) -> tuple[Any, ...]:
    return (
        transition.seq,
        transition.tenant_id,
        transition.event_id,
        event_ts,
        transition.change,
        transition.from_status,
        transition.to_status,
        transition.by,
        transition.at,
        transition.count,
        transition.last_occurrence_time,
    )


def insert_transitions(
    cursor: Any, postgres: bool, transitions: Sequence[Transition], first_seq: int
) -> None:
    """Stores transitions (of events in the same transaction) at feed positions from
    `first_seq` on, in order; sets each one's `seq`."""
    for offset, transition in enumerate(transitions):
        transition.seq = first_seq + offset
    insert_numbered(cursor, postgres, transitions)


def insert_numbered(cursor: Any, postgres: bool, transitions: Sequence[Transition]) -> None:
    """Stores transitions that have their feed positions already, in one statement (a storm
    counts hundreds of occurrences a second, each a COUNTED transition)."""
    if not transitions:
        return
    columns = ", ".join(TRANSITION_COLUMNS)
    rows = [transition_row(t, t.subject.timestamp) for t in transitions]
    if postgres:  # one statement for all, as events are inserted
        from psycopg2.extras import execute_values

        execute_values(
            cursor, f"INSERT INTO event_transitions ({columns}) VALUES %s", rows, page_size=1000
        )
    else:
        placeholders = ", ".join(["?"] * len(TRANSITION_COLUMNS))
        cursor.executemany(
            f"INSERT INTO event_transitions ({columns}) VALUES ({placeholders})", rows
        )


def alarms_cleared(cursor: Any, events: Sequence[Event], postgres: bool) -> None:
    """Called in the transaction of every clearing, single or by a bulk job, with the alarms
    it cleared: the one place where whatever ends with an alarm's clearing belongs. A cleared
    alarm's de-duplication window closes: the next occurrence of its key is a new alarm."""
    close_alarms(cursor, [event.id for event in events], postgres)


def _transition_from_row(row: Sequence[Any]) -> tuple[Transition, int]:
    values = dict(zip(TRANSITION_COLUMNS, row, strict=True))
    transition = Transition(
        event_id=values["event_id"],
        tenant_id=values["tenant_id"],
        change=values["kind"],
        from_status=values["from_status"],
        to_status=values["to_status"],
        by=values["actor"],
        at=values["change_time"],
        seq=values["seq"],
        count=values["alarm_count"],
        last_occurrence_time=values["alarm_last_occurrence"],
    )
    return transition, values["event_ts"]


def _with_events(db: peewee.Database, rows: Sequence[Sequence[Any]]) -> list[Transition]:
    """The transitions of `rows`, each with its event as the transition left it; a transition
    whose event is gone (deleted since) is left out."""
    found = [_transition_from_row(r) for r in rows]
    if not found:
        return []
    p = db.param
    keys = sorted({(t.event_id, ts) for t, ts in found})
    events: dict[str, Event] = {}
    for start in range(0, len(keys), 400):
        chunk = keys[start : start + 400]
        pairs = " OR ".join([f"(id = {p} AND ts = {p})"] * len(chunk))
        flat = [value for key in chunk for value in key]
        for row in db.execute_sql(f"{SELECT_EVENT} WHERE {pairs}", flat).fetchall():
            event = event_from_row(row)
            events[event.id] = event
    result = []
    for transition, _ in found:
        current = events.get(transition.event_id)
        if current is not None:
            transition.event = as_left_by(current, transition)
            result.append(transition)
    return result


def _as_left_columns(postgres: bool) -> dict[str, str]:
    """The SQL of the fields that as_left_by rebuilds, read inside the EXISTS over the
    event: the transition's status, count and last occurrence (the event's own where the
    transition recorded none), and no acknowledgement or clearing made after it."""
    t = "event_transitions"
    recorded = f"{t}.alarm_count IS NOT NULL"
    false = "FALSE" if postgres else "0"

    def before(at: str, value: str, otherwise: str) -> str:
        return f"(CASE WHEN events.{at} > {t}.change_time THEN {otherwise} ELSE {value} END)"

    return {
        **COLUMNS,
        "status": f"{t}.to_status",
        "count": f"(CASE WHEN {recorded} THEN {t}.alarm_count ELSE events.occurrence_count END)",
        "last_occurrence_time": (
            f"(CASE WHEN {recorded} THEN {t}.alarm_last_occurrence ELSE events.last_occurrence END)"
        ),
        "cleared_at": before("cleared_at", "events.cleared_at", "NULL"),
        "cleared_by": before("cleared_at", "events.cleared_by", "''"),
        "acknowledged": before("acknowledged_at", "events.acknowledged", false),
        "acknowledged_at": before("acknowledged_at", "events.acknowledged_at", "NULL"),
        "acknowledged_by": before("acknowledged_at", "events.acknowledged_by", "''"),
    }


def transitions_after(db: peewee.Database, after: int, limit: int) -> list[Transition]:
    """Process-wide: transitions with a feed position above `after`, in feed order."""
    p = db.param
    rows = db.execute_sql(
        f"{_SELECT} WHERE seq > {p} ORDER BY seq LIMIT {p}", (after, limit)
    ).fetchall()
    return _with_events(db, rows)


def transitions_page(
    db: peewee.Database,
    postgres: bool,
    principal: Principal,
    condition: Any,
    after: int,
    upto: int,
    limit: int,
) -> list[Transition]:
    """The principal's transitions with positions in (after, upto] whose event lies in the
    principal's scope and, as the transition left it (as_left_by), matches `condition`; in
    feed order."""
    # Bound in the order they appear in the text. Unqualified names inside EXISTS are the
    # event's columns (the nearest table that has them), as the builder writes them.
    sql = SqlBuilder(postgres, db.param, fields=_as_left_columns(postgres))
    where = (
        f"event_transitions.tenant_id = {sql.bind(principal.tenant_id)} "
        f"AND event_transitions.seq > {sql.bind(after)} "
        f"AND event_transitions.seq <= {sql.bind(upto)} "
        "AND EXISTS (SELECT 1 FROM events WHERE events.id = event_transitions.event_id "
        f"AND events.ts = event_transitions.event_ts AND {sql.scope(principal)}"
    )
    if condition is not None:
        where += f" AND {sql.condition(condition)}"
    where += ")"
    rows = db.execute_sql(
        f"{_SELECT} WHERE {where} ORDER BY event_transitions.seq LIMIT {sql.bind(limit)}",
        sql.args,
    ).fetchall()
    return _with_events(db, rows)
