"""Rate limits: fixed windows counted across every server process, and the rules that say what
a tenant or an API key may do per window (README "Rate limits").

`WindowCounter` is the reusable primitive: a scope string (any text naming what is counted,
such as `tenant:acme:create` or `alarm:acme:pump-7:overheat`), a limit and a window length in
seconds answer how many units were granted and, when not all, how long until the window ends:

    counter = WindowCounter(SharedRateCounters(store).reserve)
    verdict = await counter.take("alarm:acme:pump-7:overheat", limit=10, window_s=60)
    if not verdict.allowed: ...  # verdict.retry_after seconds until the next window

Windows are aligned to the epoch (a 60 s window runs from one full minute to the next) and at
most a day long. The counts live in the database (persistence.rate_counters), so that every
replica and worker shares them. To spare the database a write per call, a process reserves a
share of what is left of a window (a hundredth of the limit, less as the window runs out) and
hands it out locally. The limit is never exceeded; units that one process reserved and did not
use before the window ended are lost to the others, so several processes together may admit
up to (processes - 1) shares fewer than the limit.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from service.domain.access import Principal
from service.domain.errors import ResourceExhausted, invalid

# reserve(scope, window_start_us, want, limit) -> (units granted, units the store has left),
# counted in the shared store.
Reserve = Callable[[str, int, int, int], Awaitable[tuple[int, int]]]
MAX_WINDOW_S = 86_400
# A process reserves at most this fraction of a limit at a time.
SHARE_PARTS = 100
RATE_LIMITED = "RATE_LIMIT_EXCEEDED"
# Local states kept before those of ended windows are dropped.
_MAX_STATES = 10_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `take` granted of what was asked; `retry_after` (seconds) until the scope's
    window ends, 0 when everything was granted."""

    wanted: int
    granted: int
    retry_after: float
    window_start: int = 0  # epoch microseconds: the window the units were taken from

    @property
    def allowed(self) -> bool:
        return self.granted >= self.wanted


@dataclass
class _Window:
    start: int
    left: int = 0  # reserved by this process and not handed out yet
    remaining: int = 0  # what the store had left after this process's last reservation
    exhausted: bool = False  # the store granted less than asked: nothing left this window
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WindowCounter:
    """Counts units per scope in fixed windows shared through `reserve` (see the module)."""

    def __init__(self, reserve: Reserve, clock: Callable[[], float] = time.time) -> None:
        self._reserve = reserve
        self._clock = clock
        self._windows: dict[tuple[str, int], _Window] = {}

    async def take(
        self, scope: str, limit: int, window_s: int, cost: int = 1, *, partial: bool = False
    ) -> Verdict:
        """Takes `cost` units of `limit` per `window_s` seconds for `scope`: all or none, or
        with `partial` as many as are left."""
        if limit <= 0 or not 0 < window_s <= MAX_WINDOW_S:
            raise ValueError(f"a limit needs a count above 0 and a window of 1 s to 1 day: {scope}")
        now_us = int(self._clock() * 1_000_000)
        window_us = window_s * 1_000_000
        start = now_us - now_us % window_us
        retry_after = max(0.001, (start + window_us - now_us) / 1_000_000)
        if cost <= 0:
            return Verdict(cost, cost, 0.0, start)
        key = (scope, window_s)
        window = self._windows.get(key)
        if window is None or window.start != start:
            window = self._windows[key] = _Window(start, remaining=limit)
            if len(self._windows) > _MAX_STATES:
                self._forget_ended(now_us)
        if window.left < cost and not window.exhausted:
            async with window.lock:  # one reservation in flight per scope and process
                if window.left < cost and not window.exhausted and window.start == start:
                    share = max(1, min(limit // SHARE_PARTS, window.remaining // 8))
                    want = min(limit, max(cost - window.left, share))
                    granted, window.remaining = await self._reserve(scope, start, want, limit)
                    window.left += granted
                    if granted < want:
                        window.exhausted = True
        if window.left >= cost:
            window.left -= cost
            return Verdict(cost, cost, 0.0, start)
        granted = window.left if partial else 0
        window.left -= granted
        return Verdict(cost, granted, retry_after, start)

    def give_back(self, scope: str, window_s: int, units: int, window_start: int) -> None:
        """Returns units that `take` granted but the caller did not use (another limit
        refused the call) to this process's share of that window, if it is still on."""
        window = self._windows.get((scope, window_s))
        if units > 0 and window is not None and window.start == window_start:
            window.left += units

    def _forget_ended(self, now_us: int) -> None:
        for key, window in list(self._windows.items()):
            if window.start + key[1] * 1_000_000 <= now_us:
                del self._windows[key]


class Operation(StrEnum):
    """What a limit counts (README "Rate limits")."""

    CREATE = "create"  # each event created: single creates, streamed ingest, create jobs' events
    # and device reports
    READ = "read"  # each call that reads: gets, lists, searches, opening a subscription
    WRITE = "write"  # each other call that changes something: updates, acknowledgements,
    # jobs submitted, event types, shares, devices and apps


class Per(StrEnum):
    """Whose calls a limit counts together."""

    TENANT = "tenant"
    KEY = "key"  # one API key; a signed-in user without a key counts as its own


@dataclass(frozen=True, slots=True)
class RateRule:
    per: Per
    operation: Operation
    limit: int
    window_s: int

    def __str__(self) -> str:
        return f"{self.per}.{self.operation}={self.limit}/{_format_window(self.window_s)}"


_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}
_RULE = re.compile(r"^(tenant|key)\.(create|read|write)=(\d{1,9})/(\d{0,5})([a-z]+)$")
RULES_FIELD = "rate-limits"
RULES_SYNTAX = (
    "a comma-separated list of PER.OPERATION=COUNT/WINDOW, such as "
    "tenant.create=3000/1m,key.read=600/10s (PER: tenant or key; OPERATION: create, read or "
    "write; WINDOW: a number of s, m, h or d up to 1d), or `none`"
)
# `--production` without --rate-limits: the original v3 platform allows 3,000 creates a minute
# per tenant; reads and other writes are limited only to keep one tenant from starving others.
PRODUCTION_RULES = "tenant.create=3000/1m,tenant.read=30000/1m,tenant.write=3000/1m"


def _format_window(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_rate_limits(text: str) -> tuple[RateRule, ...]:
    """The rules of `text` (see RULES_SYNTAX); empty for "" or `none`."""
    text = text.strip()
    if text.lower() in ("", "none", "off"):
        return ()
    rules: dict[tuple[Per, Operation, int], RateRule] = {}
    for part in text.split(","):
        item = part.strip().lower().replace(" ", "")
        match = _RULE.match(item)
        if match is None or match[5] not in _UNITS:
            raise invalid(RULES_FIELD, f"{part.strip()!r} is not a rule: use {RULES_SYNTAX}")
        per, operation, count, number, unit = match.groups()
        window = int(number or 1) * _UNITS[unit]
        if int(count) == 0 or not 0 < window <= MAX_WINDOW_S:
            raise invalid(
                RULES_FIELD, f"{part.strip()!r}: the count must be above 0, the window 1s to 1d"
            )
        rule = RateRule(Per(per), Operation(operation), int(count), window)
        rules[(rule.per, rule.operation, rule.window_s)] = rule
    return tuple(rules.values())


class RateLimits:
    """Applies the rules to a principal's calls; without rules everything is allowed."""

    def __init__(self, rules: Iterable[RateRule], counter: WindowCounter | None) -> None:
        # The key's rules first: the narrower scope refuses before the tenant's is spent; what
        # a later rule refuses goes back to the earlier ones (`give_back`).
        self._rules = sorted(rules, key=lambda r: r.per != Per.KEY)
        self._counter = counter
        self._by_operation = {
            op: tuple(r for r in self._rules if r.operation == op) for op in Operation
        }

    @property
    def rules(self) -> tuple[RateRule, ...]:
        return tuple(self._rules)

    async def grant(
        self, principal: Principal, operation: Operation, want: int
    ) -> tuple[int, ResourceExhausted | None]:
        """As many of `want` units as every rule of `operation` allows now, and the refusal
        of the rest (None when all were granted)."""
        rules = self._by_operation[operation]
        if not rules or want <= 0 or self._counter is None:
            return want, None
        granted, refusal = want, None
        taken: list[tuple[str, RateRule, Verdict]] = []
        for rule in rules:
            scope = _scope(principal, rule)
            step = await self._counter.take(scope, rule.limit, rule.window_s, granted, partial=True)
            if not step.allowed:
                refusal = rate_limited(rule, step.retry_after)
            taken.append((scope, rule, step))
            granted = step.granted
            if granted == 0:
                break
        # What an earlier rule granted beyond what a later one allowed is not spent.
        for scope, rule, step in taken:
            self._counter.give_back(scope, rule.window_s, step.granted - granted, step.window_start)
        return granted, refusal

    async def check(self, principal: Principal, operation: Operation, cost: int = 1) -> None:
        """Raises ResourceExhausted, naming the limit and when to retry, unless every rule of
        `operation` allows `cost` units now."""
        rules = self._by_operation[operation]
        if not rules or self._counter is None:
            return
        taken: list[tuple[str, RateRule, Verdict]] = []
        for rule in rules:
            scope = _scope(principal, rule)
            verdict = await self._counter.take(scope, rule.limit, rule.window_s, cost)
            if not verdict.allowed:
                # A refused call spends nothing: not even of the limits it was within.
                for earlier, earlier_rule, step in taken:
                    self._counter.give_back(
                        earlier, earlier_rule.window_s, step.granted, step.window_start
                    )
                raise rate_limited(rule, verdict.retry_after)
            taken.append((scope, rule, verdict))


def rate_limited(rule: RateRule, retry_after: float) -> ResourceExhausted:
    whose = "this tenant" if rule.per is Per.TENANT else "this API key"
    seconds = math.ceil(retry_after)
    return ResourceExhausted(
        f"rate limit exceeded: {whose} may make {rule.limit} {rule.operation} operations per "
        f"{_format_window(rule.window_s)}; retry in {seconds} s",
        reason=RATE_LIMITED,
        metadata={"limit": str(rule), "retryAfterSeconds": str(seconds)},
        retry_after=retry_after,
    )


def _scope(principal: Principal, rule: RateRule) -> str:
    if rule.per is Per.TENANT:
        who = f"tenant:{principal.tenant_id}"
    elif principal.key_id:
        who = f"key:{principal.key_id}"
    else:
        who = f"user:{principal.user_id}"
    return f"{who}:{rule.operation}"
