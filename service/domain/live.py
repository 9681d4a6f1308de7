"""Live events: resumable subscriptions over the commit-ordered feed.

Every created event, and every transition of an alarm (acknowledged, cleared, another
occurrence counted), gets a feed position (`seq`) in commit order; a transition is delivered
when its event, as the change left it, matches the subscriber's filter: the typed filters and
the list filter language (`filter`), one condition. A process keeps the newest positions in memory
(`LiveFeed`); subscribers read from there, and a caught-up subscriber waits in an index by
tenant and domain subtree, so that a commit wakes only the subscribers one of its items can
match. Writers never wait for subscribers and a slow subscriber only delays itself. A
subscriber that resumes from an older cursor first catches up from the store (its own scoped,
filtered query), then continues from memory. One that falls behind what memory keeps while
live is told so and may resume from its cursor.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from service.domain.access import ROOT_DOMAIN, Principal, check_domain_path
from service.domain.alarm_status import STATUSES, Transition
from service.domain.conditions import (
    DOMAIN,
    Compare,
    Condition,
    FieldRef,
    Matcher,
    Subtree,
    all_of,
    event_matcher,
)
from service.domain.custom_fields import canonical_type_id
from service.domain.errors import FieldViolation, InvalidInput, PermissionDenied, invalid
from service.domain.events import CLASSIFICATIONS, MAX_SEVERITY, Event
from service.domain.filters import CustomFieldType, compile_filter, no_custom_fields
from service.domain.parsing import parse_digits

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 15
MAX_HEARTBEAT_SECONDS = 300
CATCH_UP_PAGE = 500
REFRESH_PAGE = 2000
FELL_BEHIND = "SUBSCRIBER_TOO_SLOW"


_TYPE_ID = FieldRef("type_id", "string")
_SEVERITY = FieldRef("severity", "integer")
_CLASSIFICATION = FieldRef("classification", "string")
_ENTITY_TYPE = FieldRef("entity_type", "string")
_ENTITY_ID = FieldRef("entity_id", "string")
_STATUS = FieldRef("status", "string")
# What the feed carries: created events and alarm transitions, each with its `seq`.
FeedItem = Event | Transition


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a subscriber wants: a domain subtree, optional sets of values (an empty
    set matches every value) and a condition of the list filter language (`where`), all of
    them. As one condition (`condition`), which the store renders for catching up and
    `matches` evaluates on live events, compiled once per subscription."""

    domain: str
    type_ids: frozenset[str] = frozenset()
    severities: frozenset[int] = frozenset()
    classifications: frozenset[str] = frozenset()
    entity_type: str = ""
    entity_id: str = ""
    statuses: frozenset[str] = frozenset()
    where: Condition | None = None
    condition: Condition | None = field(init=False, repr=False, compare=False)
    _matcher: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts: list[Condition] = []
        if self.domain != ROOT_DOMAIN:
            parts.append(Subtree(DOMAIN, self.domain))
        for ref, values in (
            (_TYPE_ID, self.type_ids),
            (_SEVERITY, self.severities),
            (_CLASSIFICATION, self.classifications),
            (_STATUS, self.statuses),
        ):
            if values:
                parts.append(Compare(ref, "in", tuple(sorted(values))))
        for ref, value in ((_ENTITY_TYPE, self.entity_type), (_ENTITY_ID, self.entity_id)):
            if value:
                parts.append(Compare(ref, "eq", value))
        if self.where is not None:
            parts.append(self.where)
        condition = all_of(parts)
        object.__setattr__(self, "condition", condition)
        object.__setattr__(self, "_matcher", event_matcher(condition))

    def matches(self, event: Event) -> bool:
        return self._matcher(event)

    def delivers(self, item: FeedItem) -> bool:
        """Whether the item's event (for a transition: as the change left it) matches."""
        return self._matcher(item.subject if isinstance(item, Transition) else item)


def subscription_filter(
    principal: Principal,
    *,
    domain: str = "",
    type_ids: Iterable[str] = (),
    severities: Iterable[int] = (),
    classifications: Iterable[str] = (),
    entity_type: str = "",
    entity_id: str = "",
    statuses: Iterable[str] = (),
    filter_text: str = "",
    custom_field_type: CustomFieldType = no_custom_fields,
) -> EventFilter:
    """Checks a subscription's filter against the caller: Read role, a domain inside the
    key's subtree (the key's own domain when empty), known severities, classifications and
    alarm statuses, and a JSON `filter` of the list filter language (GET /events), parsed
    and refused as the list does (errors name `filter` paths). The list's 7-day default
    window is no part of the language and does not apply: a subscription gets what is
    committed from its cursor on."""
    violations: list[FieldViolation] = []
    where: Condition | None = None
    filter_error: InvalidInput | None = None
    try:
        where = compile_filter(filter_text, custom_field_type)
    except InvalidInput as error:
        filter_error = error
    domain = domain or principal.domain
    try:
        check_domain_path(domain)
    except InvalidInput as error:
        violations.extend(error.violations)
    severity_set = frozenset(int(s) for s in severities)
    if any(not 0 <= s <= MAX_SEVERITY for s in severity_set):
        violations.append(
            FieldViolation("severities", f"each must be between 0 and {MAX_SEVERITY}")
        )
    classification_set = frozenset(c.upper() for c in classifications)
    unknown = sorted(classification_set - set(CLASSIFICATIONS))
    if unknown:
        violations.append(
            FieldViolation(
                "classifications",
                f"unknown {', '.join(unknown)}; use {', '.join(CLASSIFICATIONS)}",
            )
        )
    status_set = frozenset(s.upper() for s in statuses)
    unknown_statuses = sorted(status_set - set(STATUSES))
    if unknown_statuses:
        violations.append(
            FieldViolation(
                "statuses",
                f"unknown {', '.join(unknown_statuses)}; use {', '.join(STATUSES)}",
            )
        )
    if violations:
        raise InvalidInput([*violations, *(filter_error.violations if filter_error else ())])
    if filter_error is not None:
        raise filter_error
    if not principal.covers(domain):
        raise PermissionDenied(
            f"domain {domain} is outside this key's domain {principal.domain}",
            reason="NOT_AUTHORIZED_DOMAIN",
        )
    return EventFilter(
        domain=domain,
        type_ids=frozenset(canonical_type_id(t) for t in type_ids if t),
        severities=severity_set,
        classifications=classification_set,
        entity_type=entity_type,
        entity_id=entity_id,
        statuses=status_set,
        where=where,
    )


def format_cursor(seq: int) -> str:
    return str(seq)


def parse_cursor(text: str, field: str = "cursor") -> int | None:
    """None for an empty cursor (start at the call), else the feed position it names."""
    if not text:
        return None
    return parse_digits(text, field, "must be a cursor returned by a subscription (digits)")


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event for the subscriber; its `seq` is the cursor to resume after it."""

    event: Event

    @property
    def cursor(self) -> int:
        return self.event.seq


@dataclass(frozen=True, slots=True)
class Changed:
    """An alarm's transition for the subscriber, with the event as the change left it (or,
    caught up from the store, as it is now); its `seq` is the cursor to resume after it."""

    transition: Transition

    @property
    def cursor(self) -> int:
        return self.transition.seq


def notice_of(item: FeedItem) -> Delivery | Changed:
    return Changed(item) if isinstance(item, Transition) else Delivery(item)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing new matched up to `cursor`: resuming from it misses nothing."""

    cursor: int


@dataclass(frozen=True, slots=True)
class FellBehind:
    """The subscriber fell too far behind; it ends and may resume from `cursor`."""

    cursor: int
    reason: str = FELL_BEHIND

    @property
    def message(self) -> str:
        return (
            f"the subscriber fell more events behind than the server keeps in memory; "
            f"subscribe again with cursor {self.cursor} to continue without a gap"
        )


Notice = Delivery | Changed | Heartbeat | FellBehind


class FeedRepository(Protocol):
    """What the live feed needs from the store."""

    async def latest_seq(self) -> int:
        """The newest committed feed position."""
        ...

    async def committed_after(self, after: int, limit: int) -> list[FeedItem]:
        """Process-wide: the first `limit` items with a position above `after`, in feed
        order. Only LiveFeed reads this; it applies each subscriber's principal before
        delivering anything."""
        ...

    async def feed_page(
        self, principal: Principal, event_filter: EventFilter, after: int, upto: int, limit: int
    ) -> list[FeedItem]:
        """The first `limit` of the principal's items that match, with positions in
        (after, upto], in order."""
        ...


def _subtrees_covering(path: str) -> Iterator[str]:
    """Every subscription domain whose subtree holds `path` (domain_covers): the root, the path
    itself and each of its ancestors."""
    yield ROOT_DOMAIN
    if path == ROOT_DOMAIN:
        return
    yield path
    index = path.find("/", 1)
    while index > 0:
        yield path[:index]
        index = path.find("/", index + 1)


class _Waiter:
    """A caught-up subscriber waiting for a commit it may match, or for its heartbeat."""

    __slots__ = ("skip_to", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A bare future and a timer (see `wait`): a subscriber waits once per event it gets,
        # and an asyncio.Event under asyncio.timeout cost several objects more each time.
        self.woken: asyncio.Future[None] = loop.create_future()
        # Set when memory is trimmed while it waits: nothing up to here was of its tenant and
        # subtree (it would have been woken), so it resumes from here.
        self.skip_to = 0

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)

    async def wait(self, seconds: float) -> None:
        """Until woken, or `seconds` passed."""
        timer = self.woken.get_loop().call_later(seconds, self.wake)
        try:
            await self.woken
        finally:
            timer.cancel()


class LiveFeed:
    """The newest feed positions of this process, and the subscribers waiting for them."""

    def __init__(
        self, repository: FeedRepository, buffer_size: int = 10_000, refresh_seconds: float = 1.0
    ) -> None:
        self._repository = repository
        self._buffer_size = buffer_size
        self._refresh_seconds = refresh_seconds
        self._seqs: list[int] = []
        self._events: list[FeedItem] = []
        # Memory holds every event with a position in (floor, high_water].
        self.floor = 0
        self.high_water = 0
        # Caught-up subscribers by (tenant, subscription domain); a commit wakes those whose
        # tenant and subtree one of its items has (1,000 subscribers over 10 domains: a
        # tenth of them per event, where one broadcast woke all to check and sleep again).
        self._waiting: dict[tuple[str, str], set[_Waiter]] = {}
        self._dirty = False
        self._refresher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started = False
        self.closed = False
        # The feed position that each open subscription has reached, for its lag (None while
        # it waits caught up: then nothing in memory is for it).
        self._positions: dict[object, int | None] = {}

    async def start(self) -> None:
        """Reads the newest position; until then commits are not kept in memory."""
        async with self._starting:
            if self.started:
                return
            self.floor = self.high_water = await self._repository.latest_seq()
            self._loop = asyncio.get_running_loop()
            self.started = True
            # A safety net, not the delivery path: one read per interval for the whole
            # process picks up commits whose wake-up was lost (a dropped LISTEN connection).
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def subscriber_lag(self) -> tuple[int, int]:
        """How many subscriptions are open, and how many feed positions the furthest behind
        one is from the newest position in memory."""
        if not self._positions:
            return 0, 0
        reached = [p for p in self._positions.values() if p is not None]
        lag = self.high_water - min(reached) if reached else 0
        return len(self._positions), max(0, lag)

    def close(self) -> None:
        """Ends every subscription (their clients resume elsewhere or after a restart)."""
        self.closed = True
        for task in (self._ticker, self._refresher):
            if task is not None:
                task.cancel()
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                waiter.wake()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            self.poke()

    def offer(self, events: list[FeedItem]) -> None:
        """This process committed `events` (in feed order): append them when they continue
        memory exactly, else read the feed (another replica committed in between)."""
        if not events or not self.started:
            return
        if events[0].seq == self.high_water + 1 and self._refresher is None:
            self._append([e for e in events if e.seq > self.high_water])
        elif events[-1].seq > self.high_water:
            self.poke()

    def poke_threadsafe(self, seq: int) -> None:
        """`poke` from another thread (a LISTEN connection); 0 when the position is unknown."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.poke, seq or None)

    def poke(self, seq: int | None = None) -> None:
        """Something was committed (up to `seq`, when known): read the feed once."""
        if not self.started or (seq is not None and seq <= self.high_water):
            return
        self._dirty = True
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                while True:
                    events = await self._repository.committed_after(self.high_water, REFRESH_PAGE)
                    self._append([e for e in events if e.seq > self.high_water])
                    if len(events) < REFRESH_PAGE:
                        break
        except Exception:
            log.exception("reading the live feed failed; retrying on the next commit")
        finally:
            self._refresher = None

    def _append(self, events: list[FeedItem]) -> None:
        if not events:
            return
        self._seqs.extend(e.seq for e in events)
        self._events.extend(events)
        self.high_water = events[-1].seq
        if self._waiting:
            for item in events:
                subject = item.subject if isinstance(item, Transition) else item
                for subtree in _subtrees_covering(subject.domain):
                    waiters = self._waiting.pop((item.tenant_id, subtree), None)
                    if waiters is not None:
                        for waiter in waiters:
                            waiter.wake()
                if not self._waiting:
                    break
        excess = len(self._seqs) - self._buffer_size
        if excess > self._buffer_size // 4:  # trim in steps, not one element per append
            self.floor = self._seqs[excess - 1]
            del self._seqs[:excess]
            del self._events[:excess]
            for waiters in self._waiting.values():
                for waiter in waiters:
                    waiter.skip_to = self.high_water

    def _after(self, cursor: int) -> list[FeedItem]:
        return self._events[bisect.bisect_right(self._seqs, cursor) :]

    async def subscribe(
        self,
        principal: Principal,
        event_filter: EventFilter,
        after: int | None,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    ) -> AsyncIterator[Notice]:
        """Every matching event committed after `after` (after the call when None), in
        commit order, then live ones; heartbeats when idle. The first notice is a heartbeat
        that names the starting cursor."""
        await self.start()
        latest = await self._repository.latest_seq()
        if after is not None and after > max(latest, self.high_water):
            raise invalid("cursor", f"is ahead of the feed (newest position {latest})")
        cursor = latest if after is None else after
        tenant = principal.tenant_id
        key = (tenant, event_filter.domain)
        me = object()
        loop = asyncio.get_running_loop()
        self._positions[me] = cursor
        try:
            yield Heartbeat(cursor)
            last_sent = time.monotonic()
            live = False
            while not self.closed:
                self._positions[me] = cursor
                if cursor < self.floor:
                    if live:
                        yield FellBehind(cursor)
                        return
                    upto = self.high_water
                    page = await self._repository.feed_page(
                        principal, event_filter, cursor, upto, CATCH_UP_PAGE
                    )
                    for item in page:
                        yield notice_of(item)
                    cursor = page[-1].seq if len(page) == CATCH_UP_PAGE else max(cursor, upto)
                    last_sent = time.monotonic()
                    continue
                live = True
                events = self._after(cursor)
                if events:
                    for event in events:
                        if event.tenant_id == tenant and event_filter.delivers(event):
                            yield notice_of(event)
                            last_sent = time.monotonic()
                        cursor = event.seq
                    continue
                idle = time.monotonic() - last_sent
                if idle >= heartbeat_seconds:
                    yield Heartbeat(cursor)
                    last_sent = time.monotonic()
                    continue
                # Caught up: registered before anything can append (no await in between).
                waiter = _Waiter(loop)
                waiters = self._waiting.setdefault(key, set())
                waiters.add(waiter)
                self._positions[me] = None
                try:
                    await waiter.wait(heartbeat_seconds - idle)
                finally:
                    waiters.discard(waiter)
                    if not waiters and self._waiting.get(key) is waiters:
                        del self._waiting[key]
                cursor = max(cursor, waiter.skip_to)
        finally:
            del self._positions[me]


def check_heartbeat(seconds: int) -> int:
    if seconds == 0:
        return DEFAULT_HEARTBEAT_SECONDS
    if not 1 <= seconds <= MAX_HEARTBEAT_SECONDS:
        raise invalid("heartbeat_seconds", f"must be between 1 and {MAX_HEARTBEAT_SECONDS}")
    return seconds
