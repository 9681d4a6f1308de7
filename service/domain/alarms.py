"""Alarm de-duplication: which alarms fold into one, and what a folded occurrence changes.

An ALARM is open until it is cleared. While one is open, another ALARM of the same tenant,
domain, entity (type and id), event type and code is a repeated occurrence of it, not a new
alarm: the open alarm's `count` goes up and its `last_occurrence_time` moves forward (never
back), its `first_occurrence_time` stays. The domain is part of the key because access is by
domain subtree: an occurrence reported in /root/a must never fold into (and answer with) an
alarm that a key of /root/b owns. The store folds atomically (persistence/writes.py), so N
concurrent identical creates on any number of replicas leave one alarm with count N.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.domain.alarm_status import ALARM

if TYPE_CHECKING:  # events.py builds on this module
    from service.domain.events import Event


@dataclass(frozen=True, slots=True)
class Created:
    """What one create did: stored `event` as new, or (`deduplicated`) counted it as an
    occurrence of the open alarm `event`, which is answered in its new state."""

    event: Event
    deduplicated: bool = False


def is_alarm(event: Event) -> bool:
    return event.classification == ALARM


def occurrence_fields(event: Event) -> Event:
    """A new alarm counts its first occurrence: count 1, first and last at its timestamp.
    Other events carry no occurrence fields."""
    if not is_alarm(event):
        return event
    return dataclasses.replace(
        event,
        count=1,
        first_occurrence_time=event.timestamp,
        last_occurrence_time=event.timestamp,
    )


def dedup_key(event: Event) -> str:
    """The open-alarm key of an alarm within its tenant (a hash, so that long domains and ids
    fit one index entry on every backend)."""
    parts = [event.domain, event.entity_type, event.entity_id, event.type_id, event.code]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def fold(alarm: Event, occurrence_time: int, now: int) -> Event:
    """The open alarm after one more occurrence at `occurrence_time` (what the store's UPDATE
    does, for alarms folded before they reach the table)."""
    last = alarm.last_occurrence_time or alarm.timestamp
    return dataclasses.replace(
        alarm,
        count=(alarm.count or 1) + 1,
        last_occurrence_time=max(last, occurrence_time),
        etag=alarm.etag + 1,
        update_time=now,
    )
