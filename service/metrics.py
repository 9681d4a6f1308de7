"""Prometheus metrics of the service, declared once here.

With several server processes (workers) on one machine, each process writes its values to
files in `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode) and one scrape of
`serve --metrics-port` adds them up; `eventmgmt serve` sets that directory before this module
is first imported. Counters and histograms are updated where things happen; the gauges of
live subscribers, the job queue and the MQTT queue are sampled every second by `Sampler`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 1.0
# From a cache hit (well under a millisecond) to a slow find or a long stream.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RPC_REQUESTS = Counter(
    "eventmgmt_rpc_requests",
    "Calls served, by gRPC method (REST calls by the rpc they are transcoded onto) and status.",
    ["rpc", "code"],
)
RPC_SECONDS = Histogram(
    "eventmgmt_rpc_duration_seconds",
    "Time from a call's start to its answer (to its end for streams), by gRPC method.",
    ["rpc"],
    buckets=_LATENCY,
)
WRITE_BATCH = Histogram(
    "eventmgmt_write_batch_size",
    "Writes committed together in one transaction by the group-commit writer.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
COMMIT_SECONDS = Histogram(
    "eventmgmt_write_commit_seconds",
    "Time to apply and commit one batch of writes.",
    buckets=_LATENCY,
)
LIVE_SUBSCRIBERS = Gauge(
    "eventmgmt_live_subscribers",
    "Open live subscriptions (gRPC SubscribeEvents and REST /liveEvents).",
    multiprocess_mode="livesum",
)
LIVE_LAG = Gauge(
    "eventmgmt_live_subscriber_lag_events",
    "How many feed positions the furthest-behind subscriber is behind the newest commit.",
    multiprocess_mode="livemax",
)
JOBS_QUEUED = Gauge(
    "eventmgmt_jobs",
    "Bulk jobs not yet finished, over the whole database, by kind and state.",
    ["kind", "state"],
    multiprocess_mode="livemax",
)
JOB_EVENTS = Gauge(
    "eventmgmt_job_events",
    "Events of the unfinished jobs: `done` so far of their `total`, by kind.",
    ["kind", "measure"],
    multiprocess_mode="livemax",
)
RETENTION_DELETED = Counter(
    "eventmgmt_retention_deleted_events",
    "Events deleted because their type's retention ran out.",
)
MQTT_QUEUE = Gauge(
    "eventmgmt_mqtt_queue_events",
    "Committed events waiting to be published to the MQTT broker.",
    multiprocess_mode="livesum",
)
REFUSED = Counter(
    "eventmgmt_refused",
    "Calls and items (of batches and streams) refused as RESOURCE_EXHAUSTED, by reason and, "
    "for a rate limit or alarm storm control, the rule as configured (`limit`).",
    ["reason", "limit"],
)
MQTT_PUBLISHED = Counter("eventmgmt_mqtt_published_events", "Events published to MQTT.")
MQTT_DROPPED = Counter(
    "eventmgmt_mqtt_dropped_events", "Events dropped because the MQTT queue was full."
)


def count_refusal(reason: str, limit: str) -> None:
    REFUSED.labels(reason, limit).inc()


def observe_commit(batch_size: int, seconds: float) -> None:
    """A group-commit writer's listener: one committed (or failed) batch."""
    WRITE_BATCH.observe(batch_size)
    COMMIT_SECONDS.observe(seconds)


# The labelled children, looked up once per rpc and code: `labels()` takes a lock and builds
# its key on every call, which costs more than the observation itself.
_calls: dict[tuple[str, str], Any] = {}
_durations: dict[str, Any] = {}


def observe_call(rpc: str, code: str, seconds: float) -> None:
    counter = _calls.get((rpc, code))
    if counter is None:
        counter = _calls[rpc, code] = RPC_REQUESTS.labels(rpc, code)
    counter.inc()
    histogram = _durations.get(rpc)
    if histogram is None:
        histogram = _durations[rpc] = RPC_SECONDS.labels(rpc)
    histogram.observe(seconds)


def start_server(host: str, port: int) -> Callable[[], None]:
    """Serves /metrics on `host:port` from a thread; returns the function that stops it.
    In multiprocess mode the scrape adds up every process's files."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    server, thread = start_http_server(port, host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def process_exited(pid: int | None = None) -> None:
    """Drops the live gauges of this process (or of worker `pid`, which died without doing
    it) from the multiprocess sums."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid() if pid is None else pid)


@dataclass
class Sources:
    """Where the sampled values come from; each one optional."""

    # (open subscriptions, the largest lag in feed positions)
    live: Callable[[], tuple[int, int]] | None = None
    # rows of (kind, state, jobs, events done, events total) of unfinished jobs
    jobs: Callable[[], Awaitable[list[tuple[str, str, int, int, int]]]] | None = None
    # (events queued, published so far, dropped so far)
    mqtt: Callable[[], tuple[int, int, int]] | None = None
    # events deleted by retention so far
    retention: Callable[[], int] | None = None


class Sampler:
    """Copies the service's own counts into the gauges (and counters) every second."""

    def __init__(self, sources: Sources, interval: float = SAMPLE_SECONDS) -> None:
        self._sources = sources
        self._interval = interval
        self._seen: dict[str, int] = {}
        self._job_labels: set[tuple[str, str]] = set()

    def _advance(self, counter: Any, name: str, total: int) -> None:
        counter.inc(max(0, total - self._seen.get(name, 0)))
        self._seen[name] = total

    async def sample(self) -> None:
        s = self._sources
        if s.live is not None:
            subscribers, lag = s.live()
            LIVE_SUBSCRIBERS.set(subscribers)
            LIVE_LAG.set(lag)
        if s.mqtt is not None:
            queued, published, dropped = s.mqtt()
            MQTT_QUEUE.set(queued)
            self._advance(MQTT_PUBLISHED, "mqtt_published", published)
            self._advance(MQTT_DROPPED, "mqtt_dropped", dropped)
        if s.retention is not None:
            self._advance(RETENTION_DELETED, "retention", s.retention())
        if s.jobs is not None:
            rows = await s.jobs()
            labels = set()
            done: dict[str, int] = {}
            total: dict[str, int] = {}
            for kind, state, count, done_events, total_events in rows:
                JOBS_QUEUED.labels(kind, state).set(count)
                labels.add((kind, state))
                done[kind] = done.get(kind, 0) + done_events
                total[kind] = total.get(kind, 0) + total_events
            # A kind and state that emptied reads 0, not its last value.
            for kind, state in self._job_labels - labels:
                JOBS_QUEUED.labels(kind, state).set(0)
            self._job_labels |= labels
            for kind in {k for k, _ in self._job_labels}:
                JOB_EVENTS.labels(kind, "done").set(done.get(kind, 0))
                JOB_EVENTS.labels(kind, "total").set(total.get(kind, 0))

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("sampling metrics failed; retrying")
            await asyncio.sleep(self._interval)
