"""Opens the store's database from a URL: an SQLite file (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect as connect_url

# WAL lets readers run beside the one writer; synchronous=NORMAL in WAL mode keeps every
# commit across a killed process (only a power cut can lose the last commits).
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 10_000,
    "foreign_keys": 1,
}

# The sqlite3 module binds int, float and str directly; every other value (None, bytes, bool:
# most columns of an event row) first looks for an adapter, and when none is registered the
# look-up raises and clears an AttributeError per value: half of what binding an event row
# cost. Registered adapters that give back what SQLite binds as it would have (NULL, the
# blob, 0 or 1) skip that. An empty dict's `get` answers None for None without a Python frame.
_NOTHING: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NOTHING.get)
sqlite3.register_adapter(bytes, bytes)
sqlite3.register_adapter(bool, int)


def open_database(url: str) -> peewee.Database:
    """`sqlite:///relative/or/absolute.db`, a plain file path, or `postgresql://...`."""
    scheme = urlparse(url).scheme
    if scheme in ("postgres", "postgresql"):
        return connect_url(url.replace("postgres://", "postgresql://", 1), autoconnect=True)
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    elif scheme == "":
        path = url
    else:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://"
        )
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Write transactions take the file's write lock at BEGIN (IMMEDIATE): the writers of
    # several processes (serve --workers) then queue on it. A deferred BEGIN that read first
    # would fail at once with "database is locked" when another process committed meanwhile
    # (SQLite cannot upgrade a stale snapshot to a writer).
    return QueuedWritersSqlite(
        path, pragmas=SQLITE_PRAGMAS, autoconnect=True, lock_type="IMMEDIATE"
    )


class QueuedWritersSqlite(peewee.SqliteDatabase):
    """Every write transaction on the file, of any process or thread, first takes an
    exclusive flock on `<file>-writers`, and gives it back at COMMIT or ROLLBACK. The kernel
    hands that lock to the next waiter the moment it is free; SQLite's own busy handler
    retries with sleeps of up to 100 ms instead, so the lock idles while its waiter sleeps.
    Two processes writing 100-row transactions back to back on this machine: 6,200 commits
    in 3 s with SQLite's busy handler, 11,600 with this queue, shared evenly. SQLite's lock
    still guards the file against writers that do not queue here (the sqlite3 shell)."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(path, **options)
        self._queue_path = None if path == ":memory:" else f"{path}-writers"
        # One descriptor per thread: flock excludes descriptors, not threads.
        self._queue = threading.local()

    def _queue_fd(self) -> int | None:
        if self._queue_path is None:
            return None
        fd: int | None = getattr(self._queue, "fd", None)
        if fd is None:
            fd = self._queue.fd = os.open(self._queue_path, os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def _leave_queue(self) -> None:
        fd = getattr(self._queue, "fd", None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def begin(self, lock_type: str | None = None) -> None:
        fd = self._queue_fd()
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            super().begin(lock_type)
        except BaseException:
            self._leave_queue()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._leave_queue()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._leave_queue()


# The writer's page cache on SQLite (KiB; SQLite's default is 2 MiB per connection). Each
# event row goes into 9 indexes; past a few hundred thousand rows their pages no longer fit
# 2 MiB and each insert reads some back from the file. Measured with `make bench`'s memory
# run (1,000,000 streamed events; interleaved runs on a shared machine, means): 18,700/s
# at 2 MiB, 22,300/s at 32 MiB; server RSS 88 -> 123 MB. Readers keep the default: they are
# several, and a point read or a page of a list touches few pages.
SQLITE_WRITER_CACHE_KIB = 32 * 1024


def prepare_writer_connection(database: peewee.Database) -> None:
    """Run on the writer's thread before its first write: its connection's settings."""
    if not is_postgres(database):
        database.execute_sql(f"PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB}")


def is_postgres(database: peewee.Database) -> bool:
    return isinstance(database, peewee.PostgresqlDatabase)
