"""Grouped reads: the reads that calls submit in one turn of the event loop go to a reader
thread together, as one job, and come back together.

A hop to a thread and back costs more than a point read of SQLite (an executor job, two
futures, a wake-up of the loop through its self-pipe, and the GIL changing hands twice): per
read, that was most of what a GET by id cost beyond the call itself. Grouped, it is paid once
per turn of the loop however many calls read in it, and blocking work still never runs on the
loop. Groups of different turns run on different threads, side by side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
# A turn's reads are split over the threads in groups of at least this many, so that one slow
# read (a large list) holds up few others, and the hop is still shared.
MIN_GROUP = 4


class GroupedReader:
    """Runs `run(work)` on a pool of threads, grouping the works submitted in one turn."""

    def __init__(self, threads: int, run: Callable[[Callable[..., Any]], Any]) -> None:
        self._threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="db-reader")
        self._run = run
        self._pending: list[tuple[Callable[..., Any], asyncio.Future[Any]]] = []
        self._scheduled = False

    async def read(self, work: Callable[..., T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((work, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch, loop)
        return await future

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        groups = max(1, min(self._threads, len(pending) // MIN_GROUP))
        for index in range(groups):
            self._executor.submit(self._run_group, loop, pending[index::groups])

    def _run_group(
        self,
        loop: asyncio.AbstractEventLoop,
        group: list[tuple[Callable[..., Any], asyncio.Future[Any]]],
    ) -> None:
        outcomes: list[tuple[bool, Any]] = []
        for work, _ in group:
            try:
                outcomes.append((True, self._run(work)))
            except BaseException as error:  # each read's failure is its own
                outcomes.append((False, error))
        # A loop closed meanwhile (RuntimeError) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_deliver, group, outcomes)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def _deliver(
    group: list[tuple[Callable[..., Any], asyncio.Future[Any]]], outcomes: list[tuple[bool, Any]]
) -> None:
    for (_, future), (ok, value) in zip(group, outcomes, strict=True):
        if future.done():  # the caller went away
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
