"""Storm control: a rate of creates per tenant and per entity and type, beyond which alarms
are only counted into their open alarm and other events are refused (README "Alarms").

A rule `tenant=COUNT/WINDOW` counts every create of a tenant; `entity=COUNT/WINDOW` every
create of one entity (type and id) and event type within a tenant. The counts are shared by
every server process through service.domain.rate_limits.WindowCounter. Beyond a rule's rate
a storm is on for its scope:

- an ALARM is counted into the open alarm of its key (service/domain/alarms.py), also when
  its event type turns de-duplication off; with no open alarm of its key it is refused;
- any other event is refused: 429 with Retry-After (gRPC RESOURCE_EXHAUSTED with RetryInfo),
  reason ALARM_STORM, until the scope's window ends.

So every create is stored, counted or refused, never dropped. The first process that sees a
scope's rate exceeded records an internal event (code 1110) in the tenant's log; once a whole
window passes within the rate, one process records the storm's end (code 1111) with how many
alarms it counted and how many events it refused. Storms live in the database
(persistence/storms.py), so replicas agree on when one starts and ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from service.domain.custom_fields import STANDARD_EVENT
from service.domain.errors import ResourceExhausted, invalid
from service.domain.events import Event, new_event_id, now_us
from service.domain.rate_limits import MAX_WINDOW_S, WindowCounter

log = logging.getLogger(__name__)

CODE_STORM_STARTED = "1110"
CODE_STORM_ENDED = "1111"
ALARM_STORM = "ALARM_STORM"
STORMS_FIELD = "alarm-storms"
STORMS_SYNTAX = (
    "a comma-separated list of PER=COUNT/WINDOW, such as entity=600/1m,tenant=20000/1m "
    "(PER: tenant, or entity for one entity and event type; WINDOW: a number of s, m, h or d "
    "up to 1d), or `none`"
)
# `--production` without --alarm-storms: ten creates a second for one entity and type, the
# rate beyond which a device reports a fault faster than anyone can read it. No tenant rule:
# the tenant's create rate limit (README "Rate limits") bounds a tenant already.
PRODUCTION_STORMS = "entity=600/1m"
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}
_RULE = re.compile(r"^(tenant|entity)=(\d{1,9})/(\d{0,5})([a-z]+)$")


class StormPer(StrEnum):
    TENANT = "tenant"
    ENTITY = "entity"  # one entity (type and id) and event type within a tenant


@dataclass(frozen=True, slots=True)
class StormRule:
    per: StormPer
    limit: int
    window_s: int

    def __str__(self) -> str:
        for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
            if self.window_s % size == 0:
                return f"{self.per}={self.limit}/{self.window_s // size}{unit}"
        return f"{self.per}={self.limit}/{self.window_s}s"


def parse_storm_rules(text: str) -> tuple[StormRule, ...]:
    """The rules of `text` (see STORMS_SYNTAX); empty for "" or `none`."""
    text = text.strip()
    if text.lower() in ("", "none", "off"):
        return ()
    rules: dict[tuple[StormPer, int], StormRule] = {}
    for part in text.split(","):
        item = part.strip().lower().replace(" ", "")
        match = _RULE.match(item)
        if match is None or match[4] not in _UNITS:
            raise invalid(STORMS_FIELD, f"{part.strip()!r} is not a rule: use {STORMS_SYNTAX}")
        per, count, number, unit = match.groups()
        window = int(number or 1) * _UNITS[unit]
        if int(count) == 0 or not 0 < window <= MAX_WINDOW_S:
            raise invalid(
                STORMS_FIELD, f"{part.strip()!r}: the count must be above 0, the window 1s to 1d"
            )
        rule = StormRule(StormPer(per), int(count), window)
        rules[(rule.per, rule.window_s)] = rule
    # The entity's rules first: the narrower scope refuses before the tenant's is spent.
    return tuple(sorted(rules.values(), key=lambda r: r.per != StormPer.ENTITY))


@dataclass(frozen=True, slots=True)
class StormRecord:
    """A storm as stored: its scope, what it is about, and what it did so far."""

    scope: str
    per: StormPer
    tenant_id: str
    domain: str
    entity_type: str
    entity_id: str
    type_id: str
    limit: int
    window_s: int
    started_at: int
    last_window: int  # the start (microseconds) of the last window over the rate
    folded: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Storm:
    """A create beyond a rule's rate: the scope's storm, and when its window ends."""

    record: StormRecord
    rule: StormRule
    retry_after: float

    def refusal(self) -> ResourceExhausted:
        seconds = math.ceil(self.retry_after)
        return ResourceExhausted(
            f"alarm storm: {_what(self.record)} made more than {self.rule.limit} creates per "
            f"{str(self.rule).split('/', 1)[1]}; alarms with an open alarm are counted into it, "
            f"other events are refused; retry in {seconds} s",
            reason=ALARM_STORM,
            metadata={"limit": str(self.rule), "retryAfterSeconds": str(seconds)},
            retry_after=self.retry_after,
        )


def _what(record: StormRecord) -> str:
    if record.per is StormPer.TENANT:
        return "this tenant"
    return f"{record.entity_type or 'entity'} {record.entity_id!r} with type {record.type_id}"


# Builds the internal event of a storm's start (ended=False) or end from its record.
StormEventBuilder = Callable[[StormRecord, bool], Event]


class StormRepository(Protocol):
    async def exceeded(self, record: StormRecord, make_event: StormEventBuilder) -> bool:
        """Notes that the scope's window `record.last_window` went over the rate; starts the
        storm (stores it with its start event) unless one is on. True when it started."""
        ...

    async def add_counts(self, counts: dict[str, tuple[int, int]]) -> None:
        """Adds (folded, refused) to the storms of these scopes that are on."""
        ...

    async def end_calm(self, now: int, make_event: StormEventBuilder) -> list[StormRecord]:
        """Ends the storms whose scope stayed within its rate for a whole window since the
        last one over it, with their end events; returns them."""
        ...


def storm_event(record: StormRecord, ended: bool) -> Event:
    """The internal event of a storm's start or end, in the tenant's log: about the entity
    for an entity storm, about the tenant at the root domain for a tenant storm."""
    now = now_us()
    rule = StormRule(record.per, record.limit, record.window_s)
    source: dict[str, object] = {"scope": str(record.per), "limit": str(rule)}
    if record.per is StormPer.ENTITY:
        source["typeId"] = record.type_id
    if ended:
        seconds = max(0, (now - record.started_at) // 1_000_000)
        source.update(folded=record.folded, refused=record.refused, durationSeconds=seconds)
        description = (
            f"alarm storm ended: {_what(record)} stayed within {rule} again after {seconds} s; "
            f"{record.folded} alarms counted into open alarms, {record.refused} events refused"
        )
    else:
        description = f"alarm storm started: {_what(record)} went over {rule}"
    tenant_storm = record.per is StormPer.TENANT
    return Event(
        id=new_event_id(),
        tenant_id=record.tenant_id,
        type_id=STANDARD_EVENT,
        entity_type="Tenant" if tenant_storm else record.entity_type,
        entity_id=record.tenant_id if tenant_storm else record.entity_id,
        domain="/" if tenant_storm else record.domain,
        timestamp=now,
        create_time=now,
        update_time=now,
        severity=3 if not ended else 5,
        code=CODE_STORM_ENDED if ended else CODE_STORM_STARTED,
        description=description,
        source=source,
        classification="INTERNAL",
        category="STORM",
        internal=True,
    )


def _scope(rule: StormRule, event: Event) -> str:
    if rule.per is StormPer.TENANT:
        return f"storm:{event.tenant_id}:{rule.window_s}"
    about = json.dumps([event.entity_type, event.entity_id, event.type_id], ensure_ascii=False)
    digest = hashlib.sha256(about.encode()).hexdigest()[:40]
    return f"storm:{event.tenant_id}:{rule.window_s}:{digest}"


class StormControl:
    """Applies the storm rules to creates (see the module); without rules nothing is a storm."""

    def __init__(
        self,
        rules: Iterable[StormRule],
        counter: WindowCounter,
        repository: StormRepository,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = tuple(rules)
        self._counter = counter
        self._repository = repository
        self._clock = clock
        # The window each scope was last noted over its rate in, by this process.
        self._noted: dict[str, int] = {}
        self._folded: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()

    async def check(self, event: Event) -> Storm | None:
        """Takes one create of `event` from every rule; the storm of the first rule it goes
        beyond, or None."""
        for rule in self.rules:
            scope = _scope(rule, event)
            verdict = await self._counter.take(scope, rule.limit, rule.window_s)
            if verdict.allowed:
                continue
            now = int(self._clock() * 1_000_000)
            window_us = rule.window_s * 1_000_000
            record = StormRecord(
                scope=scope,
                per=rule.per,
                tenant_id=event.tenant_id,
                domain=event.domain,
                entity_type=event.entity_type,
                entity_id=event.entity_id,
                type_id=event.type_id,
                limit=rule.limit,
                window_s=rule.window_s,
                started_at=now,
                last_window=now - now % window_us,
            )
            if self._noted.get(scope) != record.last_window:
                self._noted[scope] = record.last_window
                if len(self._noted) > 10_000:
                    self._noted = {scope: record.last_window}
                if await self._repository.exceeded(record, storm_event):
                    log.warning("alarm storm started: %s over %s", scope, rule)
            return Storm(record, rule, verdict.retry_after)
        return None

    def counted(self, storm: Storm) -> None:
        """An alarm of the storm was counted into its open alarm."""
        self._folded[storm.record.scope] += 1

    def refused(self, storm: Storm) -> None:
        """A create of the storm was refused."""
        self._refused[storm.record.scope] += 1

    async def sweep(self) -> list[StormRecord]:
        """Stores this process's counts and ends the storms that calmed down; returns those."""
        if self._folded or self._refused:
            scopes = set(self._folded) | set(self._refused)
            counts = {s: (self._folded[s], self._refused[s]) for s in scopes}
            self._folded.clear()
            self._refused.clear()
            await self._repository.add_counts(counts)
        ended = await self._repository.end_calm(int(self._clock() * 1_000_000), storm_event)
        for record in ended:
            log.warning(
                "alarm storm ended: %s (%s counted, %s refused)",
                record.scope,
                record.folded,
                record.refused,
            )
        return ended

    async def run(self, interval: float = 1.0) -> None:
        import asyncio

        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("the alarm storm sweep failed; retrying")
