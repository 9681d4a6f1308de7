"""Credential changes as every process sees them: a version bumped in each transaction that
revokes or changes a key, a user or a token, and how a process learns of a new version (a
NOTIFY to every PostgreSQL replica; on SQLite, whose other writers are separate processes
such as `eventmgmt admin`, a counter in a small file beside the database that every change
bumps once it committed, read per call from shared memory in well under a microsecond)."""

from __future__ import annotations

import fcntl
import mmap
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import peewee

from persistence.database import is_postgres

# Every transaction that changes a credential notifies this channel at commit.
AUTH_CHANNEL = "eventmgmt_auth"
# SQLite: how often the version is read from the database even when the shared counter did
# not move (a change by a writer that died between its commit and the bump, or by a tool
# that does not bump it): the longest such a change can go unnoticed.
VERSION_READ_SECONDS = 1.0
_COUNTER = struct.Struct("<Q")


def record_auth_change(db: peewee.Database) -> None:
    """Marks, inside the caller's transaction, that credentials changed: caches of every
    process drop what they resolved once it commits."""
    db.execute_sql("UPDATE auth_state SET version = version + 1 WHERE id = 1")
    if is_postgres(db):
        db.execute_sql("SELECT pg_notify(%s, '')", (AUTH_CHANNEL,))
        return
    signal = AuthSignal.of(db.database)
    if signal is not None:
        # After the commit: a process that sees the new count reads the committed version.
        db.after_commit(signal.bump)


class AuthSignal:
    """A counter in `<database>-auth`, shared by every process of one SQLite file through
    mmap: bumped after each committed credential change, read before a cached principal is
    trusted. Only its changes matter, not its value."""

    _open: ClassVar[dict[str, AuthSignal]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < _COUNTER.size:
            os.ftruncate(self._fd, _COUNTER.size)
        self._map = mmap.mmap(self._fd, _COUNTER.size)

    @classmethod
    def of(cls, database_path: str) -> AuthSignal | None:
        """The signal of an SQLite file, shared within the process; None for :memory:."""
        if not database_path or database_path == ":memory:":
            return None
        path = f"{database_path}-auth"
        with cls._lock:
            signal = cls._open.get(path)
            if signal is None:
                signal = cls._open[path] = cls(path)
            return signal

    def value(self) -> int:
        return int(_COUNTER.unpack_from(self._map)[0])

    def bump(self) -> None:
        # The file lock makes the increment atomic across processes.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _COUNTER.pack_into(self._map, 0, (self.value() + 1) % (1 << 64))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


class AuthVersionProbe:
    """Reads the credential version of an SQLite file on a connection of its own, on the
    calling thread: one indexed row from the WAL, so that a credential revoked by another
    process stops at the very next call."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, timeout=5)
        self._connection.execute("PRAGMA query_only = 1")

    def version(self) -> int:
        row: Any = self._connection.execute(
            "SELECT version FROM auth_state WHERE id = 1"
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._connection.close()


def version_check(
    probe: AuthVersionProbe, signal: AuthSignal | None, on_change: Callable[[], None]
) -> Callable[[], bool]:
    """`check()`, run before a cached principal is trusted: calls `on_change()` (and answers
    True) when the credential version moved. It reads the version only when the shared
    counter moved, or VERSION_READ_SECONDS after its last read; without a counter (an
    in-memory database), on every call."""
    seen_version = probe.version()
    seen_count = signal.value() if signal is not None else 0
    read_at = time.monotonic()

    def check() -> bool:
        nonlocal seen_version, seen_count, read_at
        if signal is not None:
            count = signal.value()
            if count == seen_count and time.monotonic() - read_at < VERSION_READ_SECONDS:
                return False
            seen_count = count
            read_at = time.monotonic()
        version = probe.version()
        if version == seen_version:
            return False
        seen_version = version
        on_change()
        return True

    return check
