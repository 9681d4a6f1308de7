"""Retention: events older than their type's retention are deleted in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from service.domain.custom_fields import STANDARD_EVENT
from service.domain.event_types import DEFAULT_TTL_DAYS
from service.domain.events import now_us

log = logging.getLogger(__name__)
DAY_US = 86_400 * 1_000_000


class RetentionStore(Protocol):
    async def retention_days(self) -> dict[str, int]: ...

    async def drop_expired_partitions(self, cutoffs: Mapping[str, int], now_us: int) -> int: ...

    async def delete_stored_before(self, type_id: str, cutoff_us: int, limit: int) -> int: ...


class RetentionSweeper:
    """Deletes, every `interval` seconds, the events stored longer ago than their type's
    retention (StandardEvent: `default_days`). Where the store keeps events in partitions by
    time (PostgreSQL), a partition whose every event expired is dropped whole first; the rest
    go in batches, each its own short write, so creates queued behind the sweeper wait for one
    batch at most."""

    def __init__(
        self,
        store: RetentionStore,
        interval: float = 600.0,
        batch: int = 500,
        default_days: int = DEFAULT_TTL_DAYS,
    ) -> None:
        self._store = store
        self.interval = interval
        self._batch = batch
        self._default_days = default_days
        self.deleted_total = 0

    async def sweep(self, now: int | None = None) -> int:
        """One pass over every type; returns how many events it deleted."""
        now = now_us() if now is None else now
        retention = {STANDARD_EVENT: self._default_days, **await self._store.retention_days()}
        cutoffs = {type_id: now - days * DAY_US for type_id, days in retention.items()}
        deleted = await self._store.drop_expired_partitions(cutoffs, now)
        for type_id, cutoff in sorted(cutoffs.items()):
            while True:
                count = await self._store.delete_stored_before(type_id, cutoff, self._batch)
                deleted += count
                if count < self._batch:
                    break
        if deleted:
            log.info("retention: deleted %s expired events", deleted)
        self.deleted_total += deleted
        return deleted

    async def run(self) -> None:
        """Sweeps until cancelled; a failed pass is logged and retried at the next tick."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed; retrying in %s s", self.interval)
            await asyncio.sleep(self.interval)
