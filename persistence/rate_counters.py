"""Shared rate counters: how much of a limit a scope used in one window, one row per scope and
window in `rate_counters` (migration 10), counted by every server process of the database.

Each process reserves a share of a window at a time (service.domain.rate_limits decides how
much), so that a busy scope costs one statement per share, not one per call. A reservation is
one atomic upsert in its own short transaction, never inside the group-commit writer's batch:
two rows locked in a batch in different orders by two replicas could deadlock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import peewee

if TYPE_CHECKING:
    from persistence.store import Store

# Rows of windows that ended this long ago are deleted (windows are at most a day long).
KEEP_US = 2 * 86_400 * 1_000_000
# How often one process purges old rows, at most.
PURGE_EVERY_S = 600.0


class SharedRateCounters:
    """`reserve(scope, window_start, want, limit)`: takes up to `want` units of what is left
    of `limit` in the scope's window; returns how many it got (0 when the window is used up)
    and how many are left after it. `used` counts every unit asked for in the window, also
    those refused, so that the grant follows from the one row the upsert returns."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._purged = 0.0

    async def reserve(
        self, scope: str, window_start: int, want: int, limit: int
    ) -> tuple[int, int]:
        return await self._store.read(
            lambda db: self._reserve(db, scope, window_start, want, limit)
        )

    def _reserve(
        self, db: peewee.Database, scope: str, window_start: int, want: int, limit: int
    ) -> tuple[int, int]:
        p = db.param
        with db.atomic():
            row: Any = db.execute_sql(
                "INSERT INTO rate_counters (scope, window_start, used) "
                f"VALUES ({p}, {p}, {p}) ON CONFLICT (scope, window_start) "
                "DO UPDATE SET used = rate_counters.used + excluded.used RETURNING used",
                (scope, window_start, want),
            ).fetchone()
            now = time.monotonic()
            if now - self._purged > PURGE_EVERY_S:
                self._purged = now
                db.execute_sql(
                    f"DELETE FROM rate_counters WHERE window_start < {p}",
                    (time.time_ns() // 1000 - KEEP_US,),
                )
        before = int(row[0]) - want
        granted = max(0, min(want, limit - before))
        return granted, max(0, limit - before - granted)
