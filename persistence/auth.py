"""Credential changes as every process sees them: a version bumped in each transaction that
revokes or changes a key, a user or a token, and how a process learns of a new version (a
NOTIFY to every PostgreSQL replica; a cheap per-call read of one row on SQLite, whose other
writers are separate processes such as `eventmgmt admin`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import peewee

from persistence.database import is_postgres

# Every transaction that changes a credential notifies this channel at commit.
AUTH_CHANNEL = "eventmgmt_auth"


def record_auth_change(db: peewee.Database) -> None:
    """Marks, inside the caller's transaction, that credentials changed: caches of every
    process drop what they resolved once it commits."""
    db.execute_sql("UPDATE auth_state SET version = version + 1 WHERE id = 1")
    if is_postgres(db):
        db.execute_sql("SELECT pg_notify(%s, '')", (AUTH_CHANNEL,))


class AuthVersionProbe:
    """Reads the credential version of an SQLite file on a connection of its own, on the
    calling thread: one indexed row from the WAL, a few microseconds, so that a credential
    revoked by another process stops at the very next call."""

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
