"""Opens the store's database from a URL: an SQLite file (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
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
    # several processes (serve --workers) then queue on it under busy_timeout. A deferred
    # BEGIN that read first would fail at once with "database is locked" when another process
    # committed meanwhile (SQLite cannot upgrade a stale snapshot to a writer).
    return peewee.SqliteDatabase(
        path, pragmas=SQLITE_PRAGMAS, autoconnect=True, lock_type="IMMEDIATE"
    )


def is_postgres(database: peewee.Database) -> bool:
    return isinstance(database, peewee.PostgresqlDatabase)
