"""Cross-replica wake-ups on PostgreSQL: LISTEN on a channel (the feed positions that any
replica's commits notify, or credential changes), on a connection of its own, and hand each
notification to a callback. On an SQLite file that several processes share, poll the feed
position instead."""

from __future__ import annotations

import logging
import select
import sqlite3
import threading
from collections.abc import Callable

import psycopg2
import psycopg2.extensions

from service.domain.parsing import is_digits

log = logging.getLogger(__name__)
# Each write transaction that creates events notifies its newest feed position here.
FEED_CHANNEL = "eventmgmt_feed"
RECONNECT_SECONDS = 1.0
# How often a process sharing an SQLite file reads the feed position that others advance: the
# most it adds to live delivery of their events, for one indexed read (microseconds) per poll.
POLL_SECONDS = 0.01


class _Watcher:
    """A daemon thread that runs `_run` until stopped and hands what it sees to `on_notify`."""

    def __init__(self, name: str, on_notify: Callable[[int], None]) -> None:
        self._on_notify = on_notify
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError


class FeedListener(_Watcher):
    """A thread that LISTENs on `channel` and calls `on_notify(n)` with the largest integer
    payload of each wake-up (0 when none, and once each time listening starts, since what was
    committed while no connection listened is unknown), from the thread: the callback must
    hand over to its own loop."""

    def __init__(
        self, url: str, on_notify: Callable[[int], None], channel: str = FEED_CHANNEL
    ) -> None:
        super().__init__(f"{channel}-listener", on_notify)
        self._url = url.replace("postgres://", "postgresql://", 1)
        self._channel = channel

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except Exception as error:  # the database went away: retry, never crash
                log.warning("%s LISTEN connection lost (%s); reconnecting", self._channel, error)
                self._stopping.wait(RECONNECT_SECONDS)

    def _listen(self) -> None:
        connection = psycopg2.connect(self._url)
        try:
            connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {self._channel}")
            # Commits made while no connection listened are found by this first wake-up.
            self._on_notify(0)
            while not self._stopping.is_set():
                if select.select([connection], [], [], 0.5) == ([], [], []):
                    continue
                connection.poll()
                newest, woken = 0, False
                while connection.notifies:
                    payload = connection.notifies.pop(0).payload
                    newest = max(newest, int(payload) if is_digits(payload) else 0)
                    woken = True
                if woken:
                    self._on_notify(newest)
        finally:
            connection.close()


class FeedPoller(_Watcher):
    """A thread that reads the newest feed position of a shared SQLite file every
    POLL_SECONDS and calls `on_notify(seq)` when it moved (and once at the start)."""

    def __init__(self, path: str, on_notify: Callable[[int], None]) -> None:
        super().__init__("feed-poller", on_notify)
        self._path = path

    def _run(self) -> None:
        seen = -1
        connection = sqlite3.connect(self._path, timeout=10, check_same_thread=False)
        try:
            while not self._stopping.wait(0 if seen < 0 else POLL_SECONDS):
                try:
                    row = connection.execute("SELECT last_seq FROM feed_state WHERE id = 1")
                    newest = int(row.fetchone()[0])
                except sqlite3.Error as error:  # busy or being migrated: next time
                    log.warning("reading the feed position failed (%s); retrying", error)
                    self._stopping.wait(RECONNECT_SECONDS)
                    continue
                if newest != seen:
                    seen = newest
                    self._on_notify(newest)
        finally:
            connection.close()
