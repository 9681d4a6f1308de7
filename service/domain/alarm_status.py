"""The alarm lifecycle: the status of an event classified ALARM, and the transitions between
statuses that acknowledging and clearing make (README: Alarms).

An alarm is ACTIVE when created, ACKNOWLEDGED once acknowledged, CLEARED once cleared; CLEARED
is final (acknowledging a cleared alarm records who acknowledged it, its status stays CLEARED).
Events of other classifications have no status (""). Each transition is stored with the
change, in the same transaction, and gets a position in the live feed; so is each occurrence
counted into an open alarm (COUNTED, its status unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.domain.events import Event

ALARM = "ALARM"
ACTIVE = "ACTIVE"
ACKNOWLEDGED = "ACKNOWLEDGED"
CLEARED = "CLEARED"
STATUSES = (ACTIVE, ACKNOWLEDGED, CLEARED)
# One more occurrence was counted into the open alarm (README: Alarms, de-duplication).
COUNTED = "COUNTED"
# What a transition did (its `change`).
CHANGES = (ACKNOWLEDGED, CLEARED, COUNTED)


def alarm_status(classification: str, acknowledged: bool, cleared: bool) -> str:
    """The status that an event's classification, acknowledgement and clearing give it."""
    if classification != ALARM:
        return ""
    if cleared:
        return CLEARED
    return ACKNOWLEDGED if acknowledged else ACTIVE


@dataclass(slots=True)
class Transition:
    """One change of an alarm: what happened (`change`: ACKNOWLEDGED, CLEARED or COUNTED),
    the status before and after, who did it (nobody for COUNTED) and when (epoch
    microseconds). `seq` is its live feed position once committed; `event` the alarm as the
    change left it. `count` and `last_occurrence_time` are the alarm's as the change left
    them, as recorded with it (None when not recorded: transitions stored before migration
    39); read back from the store, they rebuild the event (as_left_by)."""

    event_id: str
    tenant_id: str
    change: str
    from_status: str
    to_status: str
    by: str
    at: int
    seq: int = 0
    event: Event | None = None
    count: int | None = None
    last_occurrence_time: int | None = None

    @property
    def subject(self) -> Event:
        assert self.event is not None, "a transition travels with its event"
        return self.event


def as_left_by(current: Event, transition: Transition) -> Event:
    """The alarm as `transition` left it, from the alarm as it is now: its status is the
    transition's, its count and last occurrence those recorded with it, and an
    acknowledgement or clearing made after it is not yet there. A feed read back from the
    store (catch-up, another replica's commits) thus delivers what a subscriber listening at
    the time received (other fields are as they are now)."""
    event = replace(current, status=transition.to_status)
    if transition.count is not None:
        event = replace(
            event, count=transition.count, last_occurrence_time=transition.last_occurrence_time
        )
    if event.cleared_at is not None and event.cleared_at > transition.at:
        event = replace(event, cleared_at=None, cleared_by="")
    if event.acknowledged_at is not None and event.acknowledged_at > transition.at:
        event = replace(event, acknowledged=False, acknowledged_at=None, acknowledged_by="")
    return event


def counted(alarm: Event) -> Transition:
    """The transition of an occurrence counted into `alarm` (the alarm afterwards): its
    status stays, and the change was made when the alarm was last updated."""
    return Transition(
        event_id=alarm.id,
        tenant_id=alarm.tenant_id,
        change=COUNTED,
        from_status=alarm.status,
        to_status=alarm.status,
        by="",
        at=alarm.update_time,
        event=alarm,
        count=alarm.count,
        last_occurrence_time=alarm.last_occurrence_time,
    )
