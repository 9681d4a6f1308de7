"""Group commit: concurrent writes share one transaction on one writer thread.

One commit per row caps a store at a few thousand rows per second; here every write that
arrives while a transaction is in flight joins the next one. A write's future resolves only
after its transaction committed, so an answer to the client means the row is durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import peewee

log = logging.getLogger(__name__)

# A batch applies many operations with one cursor; it returns one result per operation.
BatchApply = Callable[[Any, Sequence[Any]], list[Any]]
# Told, on the event loop, what each committed batch did: its operations and their results.
CommitListener = Callable[[Sequence[Any], Sequence[Any]], None]
# Told each batch's size and how long applying and committing it took (seconds).
BatchObserver = Callable[[int, float], None]


def _tuning(prepare: Callable[[], None] | None) -> Callable[[], None] | None:
    """`prepare` made harmless: it tunes the connection, and an executor whose initializer
    raises refuses every later job, so a failure is logged and the writer goes on."""
    if prepare is None:
        return None

    def run() -> None:
        try:
            prepare()
        except Exception:
            log.warning("preparing the writer's connection failed", exc_info=True)

    return run


class GroupCommitWriter:
    """Queues write operations and applies them in batches, one transaction per batch."""

    def __init__(
        self,
        database: peewee.Database,
        apply: BatchApply,
        max_batch: int = 1000,
        linger: float = float(os.environ.get("EVENTMGMT_WRITE_LINGER", "0.002")),
        on_commit: CommitListener | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        """`prepare`: run once on the writer's thread before its first write."""
        self._on_commit = on_commit
        self._database = database
        self._linger = linger
        self._apply = apply
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="db-writer", initializer=_tuning(prepare)
        )
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batch_observers: list[BatchObserver] = []

    async def submit(self, operation: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((operation, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self._linger and len(self._pending) < self._max_batch:
                    # Let the writes of calls already in flight join this transaction: a
                    # commit per two or three rows costs more than this short wait.
                    await asyncio.sleep(self._linger)
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                operations = [operation for operation, _ in batch]
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._executor, self._commit, operations)
                except Exception as error:  # the database itself failed: fail the whole batch
                    results = [error] * len(batch)
                for observe in self.batch_observers:
                    observe(len(operations), time.perf_counter() - started)
                if self._on_commit is not None:
                    try:
                        self._on_commit(operations, results)
                    except Exception:  # a listener's failure must not fail committed writes
                        log.exception("a commit listener failed")
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # the caller went away; the write stands regardless
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flusher = None

    def _commit(self, operations: list[Any]) -> list[Any]:
        db = self._database
        db.connect(reuse_if_open=True)
        # Any failure, not only the database's: a value the driver cannot encode raises its
        # own error (UnicodeEncodeError, ValueError) before the statement runs. The batch is
        # then applied again one write per transaction, so only the guilty write fails.
        try:
            return self._apply_atomically(operations)
        except Exception as error:
            if len(operations) == 1:
                return [error]
            log.info(
                "a batch of %s writes failed (%s); applying them one by one", len(operations), error
            )
        results: list[Any] = []
        for operation in operations:
            try:
                results.extend(self._apply_atomically([operation]))
            except Exception as error:
                results.append(error)
        return results

    def _apply_atomically(self, operations: list[Any]) -> list[Any]:
        db = self._database
        # The wrapper turns the driver's errors (sqlite3, psycopg2) into peewee's; the raw
        # cursor does not convert them itself.
        with db.atomic(), peewee.__exception_wrapper__:  # type: ignore[attr-defined]
            return self._apply(db.cursor(), operations)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
