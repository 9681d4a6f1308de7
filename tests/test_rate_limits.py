"""Rate limits: the rules' syntax, the shared window counter on both backends (also with
several stores on one database, as replicas see it), and the limits as clients meet them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from helpers import rows, run
from persistence.rate_counters import SharedRateCounters
from persistence.store import Store
from service.domain.errors import InvalidInput
from service.domain.rate_limits import (
    PRODUCTION_RULES,
    Operation,
    Per,
    RateRule,
    WindowCounter,
    parse_rate_limits,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rules_are_read_with_their_windows() -> None:
    rules = parse_rate_limits("tenant.create=3000/1m, key.read=600/10s,Tenant.Write=5/h")
    assert rules == (
        RateRule(Per.TENANT, Operation.CREATE, 3000, 60),
        RateRule(Per.KEY, Operation.READ, 600, 10),
        RateRule(Per.TENANT, Operation.WRITE, 5, 3600),
    )
    assert [str(r) for r in rules] == [
        "tenant.create=3000/1m",
        "key.read=600/10s",
        "tenant.write=5/1h",
    ]
    assert parse_rate_limits("none") == () == parse_rate_limits("")
    assert parse_rate_limits(PRODUCTION_RULES)[0] == RateRule(
        Per.TENANT, Operation.CREATE, 3000, 60
    )


@pytest.mark.parametrize(
    "text",
    ["tenant.create=3000", "tenant.delete=1/1m", "app.create=1/1m", "tenant.create=0/1m",
     "tenant.create=5/2d", "tenant.create=5/1y", "tenant.create=-1/1m", "tenant.create=5/0s"],
)  # fmt: skip
def test_a_broken_rule_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rate_limits(f"key.read=1/1s,{text}")
    assert caught.value.violations[0].field == "rate-limits"
    assert text in caught.value.message


def test_the_shared_counter_grants_the_limit_per_window(store: Store) -> None:
    clock = Clock(time.time() // 60 * 60 + 0.5)  # half a second into a minute
    counter = WindowCounter(SharedRateCounters(store).reserve, clock)

    async def scenario() -> None:
        verdicts = [await counter.take("tenant:a:create", 10, 60) for _ in range(12)]
        assert [v.allowed for v in verdicts] == [True] * 10 + [False] * 2
        assert verdicts[-1].retry_after == pytest.approx(59.5)
        # Another scope has its own count.
        assert (await counter.take("tenant:b:create", 10, 60)).allowed
        # More than is left: all or nothing, or as many as are left.
        clock.now += 60
        assert (await counter.take("tenant:a:create", 10, 60, 7)).allowed
        assert not (await counter.take("tenant:a:create", 10, 60, 4)).allowed
        partial = await counter.take("tenant:a:create", 10, 60, 4, partial=True)
        assert (partial.granted, partial.allowed) == (3, False)

    run(scenario())
    used = dict(rows(store, "SELECT scope, SUM(used) FROM rate_counters GROUP BY scope"))
    assert set(used) == {"tenant:a:create", "tenant:b:create"}


def test_stores_of_one_database_never_grant_more_than_the_limit_together(
    database_url: str,
) -> None:
    """Four stores (as four replicas have) take units of one scope concurrently: together
    they get the limit, less at most the shares the others reserved and did not use."""
    stores = [Store(database_url) for _ in range(4)]
    stores[0].migrate()
    limit = 1000  # shares of 10
    try:

        async def one_replica(store: Store) -> int:
            counter = WindowCounter(SharedRateCounters(store).reserve, Clock(time.time()))
            granted = 0

            async def caller() -> None:
                nonlocal granted
                while (await counter.take("tenant:shared:create", limit, 3600)).allowed:
                    granted += 1

            await asyncio.gather(*(caller() for _ in range(5)))
            return granted

        async def everyone() -> list[Any]:
            return await asyncio.gather(*(one_replica(s) for s in stores))

        granted = run(everyone())
        assert limit - 3 * 10 <= sum(granted) <= limit, granted
        assert all(g > 0 for g in granted), granted
    finally:
        for opened in stores:
            opened.close()
