"""The store: one database, its reader threads and its group-commit writer, and the
repositories over it. Repositories take and return domain objects; every event query is
scoped by the calling principal, so no query runs unscoped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import peewee

from persistence.auth import AUTH_CHANNEL, AuthSignal, AuthVersionProbe, version_check
from persistence.custom_indexes import CustomFieldIndexes
from persistence.database import is_postgres, open_database, prepare_writer_connection
from persistence.devices import DeviceEventStore, RegistryStore
from persistence.events import EventRepository
from persistence.keys import KeyRepository
from persistence.migrations import migrate
from persistence.notify import FeedListener, FeedPoller
from persistence.partitions import ensure_partitions
from persistence.queries import install_sqlite_functions
from persistence.reader import GroupedReader
from persistence.users import UserStore
from persistence.writer import GroupCommitWriter
from persistence.writes import EventWrites

T = TypeVar("T")
log = logging.getLogger(__name__)


class Store:
    """Owns the database, its reader threads and its writer; hands out repositories."""

    def __init__(self, url: str, readers: int = 4, shared: bool = False) -> None:
        """`shared`: other server processes write to this database too (workers)."""
        self.url = url
        self.shared = shared
        self.database = open_database(url)
        self.postgres = is_postgres(self.database)
        install_sqlite_functions(self.database)
        self._readers = GroupedReader(readers, self._run)
        self.writes = EventWrites(self.database, self.postgres)
        self.writer = GroupCommitWriter(
            self.database,
            self.writes.apply,
            on_commit=self.writes.after_commit,
            prepare=lambda: prepare_writer_connection(self.database),
        )
        # Called on the event loop with the events each commit created, in feed order.
        self.commit_listeners = self.writes.commit_listeners
        self.events = EventRepository(self)
        self.keys = KeyRepository(self)
        self.users = UserStore(self)
        self._feed_listeners: list[FeedListener | FeedPoller] = []
        self._probes: list[AuthVersionProbe] = []
        # Called on the event loop once this process committed a credential change, before
        # its caller is answered (other processes learn of it by NOTIFY or the version).
        self.credential_listeners: list[Callable[[], None]] = []
        self.registry = RegistryStore(self)
        self.custom_indexes = CustomFieldIndexes(self)
        self.device_events = DeviceEventStore(self)

    def migrate(self) -> list[int]:
        """Applies the missing migrations; on PostgreSQL also creates the coming months'
        partitions (persistence/partitions.py), so that a server without retention sweeps
        still gets them at each start, and warns when autovacuum is off."""
        applied = migrate(self.database)
        if self.postgres:
            with self.database.connection_context(), self.database.atomic():
                cursor = self.database.cursor()
                ensure_partitions(cursor, time.time_ns() // 1000)
                cursor.execute("SHOW autovacuum")
                if cursor.fetchone()[0] != "on":
                    log.warning(
                        "PostgreSQL's autovacuum is off: the events' partitions then have no "
                        "statistics as they fill, and lists are planned onto the wrong indexes "
                        "(several times slower); turn it on, or run ANALYZE events regularly"
                    )
        return applied

    def watch_credentials(self, on_change: Callable[[], None]) -> Callable[[], bool] | None:
        """Makes `on_change()` run whenever credentials may have changed in any process.

        On PostgreSQL a LISTEN thread calls it (and once when listening starts); returns
        None. On SQLite returns `check()`, which calls `on_change()` when the credential
        version moved (persistence.auth): the caller runs it before trusting its cache."""
        if self.postgres:
            listener = FeedListener(self.url, lambda _: on_change(), channel=AUTH_CHANNEL)
            listener.start()
            self._feed_listeners.append(listener)
            return None
        probe = AuthVersionProbe(self.database.database)
        self._probes.append(probe)
        return version_check(probe, AuthSignal.of(self.database.database), on_change)

    def credentials_changed(self) -> None:
        for listener in self.credential_listeners:
            listener()

    def listen_for_commits(self, on_commit: Callable[[int], None]) -> None:
        """Calls `on_commit(newest seq)` from a thread whenever another process commits new
        events (and once when listening starts): on PostgreSQL by LISTEN; on an SQLite file
        `shared` by several processes, by polling its feed position (SQLite cannot notify).
        A process alone on an SQLite file needs nothing: its own commits reach its commit
        listeners."""
        listener: FeedListener | FeedPoller
        if self.postgres:
            listener = FeedListener(self.url, on_commit)
        elif self.shared:
            listener = FeedPoller(self.database.database, on_commit)
        else:
            return
        listener.start()
        self._feed_listeners.append(listener)

    async def read(self, work: Callable[[peewee.Database], T]) -> T:
        """Runs blocking database work on a reader thread, off the event loop, together
        with the other reads of this turn of the loop (persistence.reader)."""
        return await self._readers.read(work)

    async def read_point(self, work: Callable[[peewee.Database], T]) -> T:
        """A read of one row by its key: on SQLite on the calling thread (the event loop), like
        the credential check (persistence.auth). The hop to a reader thread and back costs
        more than such a read of the WAL (a tenth of what a GET by id cost); on PostgreSQL a
        read is a network round trip, which goes to a reader thread as `read` does."""
        if self.postgres:
            return await self._readers.read(work)
        return self._run(work)

    def _run(self, work: Callable[[peewee.Database], T]) -> T:
        self.database.connect(reuse_if_open=True)
        return work(self.database)

    def run_sync(self, work: Callable[[peewee.Database], T]) -> T:
        """For commands and start-up, where no event loop runs."""
        with self.database.connection_context(), self.database.atomic():
            return work(self.database)

    def close(self) -> None:
        for listener in self._feed_listeners:
            listener.stop()
        for probe in self._probes:
            probe.close()
        self.writer.close()
        self.custom_indexes.close()
        self._readers.shutdown()
        self.database.close()
