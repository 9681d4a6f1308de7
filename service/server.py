"""Builds and runs the gRPC server: `create_server` wires it, `serve` runs it with the
gateway until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from persistence.event_types import EventTypeRepository, RetentionRepository
from persistence.jobs import JobRepository
from persistence.rate_counters import SharedRateCounters
from persistence.sharing import ShareRepository
from persistence.store import Store
from persistence.storms import StormRepository
from service import metrics
from service.auth import CredentialResolver, PrincipalGuard
from service.call_limits import CallLimiter
from service.catalog import SERVICES, MethodTable
from service.domain.device_events import PENDING_BATCH, DeviceEventReporter
from service.domain.event_types import EventTypeManager
from service.domain.events import EventManager
from service.domain.find import EventFinder
from service.domain.jobs import JobManager, JobRunner
from service.domain.live import LiveFeed
from service.domain.rate_limits import RateLimits, WindowCounter, parse_rate_limits
from service.domain.registry import RegistryManager
from service.domain.retention import RetentionSweeper
from service.domain.sharing import SharingManager
from service.domain.storms import StormControl, parse_storm_rules
from service.domain.tokens import TokenCodec
from service.domain.users import LoginThrottle, SessionManager, UserAdmin
from service.job_views import parse_job_item
from service.observability import observed
from service.servicers.device_event_service import REST_REPORT_METHOD, answer_device_error
from service.servicers.rest import CONDITIONAL_WRITES, answer_rest_error
from service.settings import ServerSettings
from service.token_keys import load_signing_keys, new_keys_document, parse_keys

if TYPE_CHECKING:
    from service.mqtt import MqttPublisher

log = logging.getLogger(__name__)
# A bulk job carries up to 10,000 events (16 MiB of JSON); single events stay at 1 MiB.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Where the gateway reaches the service when the gRPC address listens on every interface, and
# where workers listen for the gateway alone (Envoy runs on this machine).
GATEWAY_UPSTREAM_HOST = "127.0.0.1"
# Request metadata (headers) a call may carry. gRPC's default (8 KiB soft, 16 KiB hard) is below
# the gateway's header limit (32 KiB, which answers 431): a REST client's large header would
# reach the server and get 429 "metadata size exceeds hard limit". Above it, with room for the
# headers Envoy adds and gRPC's 32 bytes per entry.
MAX_METADATA_BYTES = 64 * 1024
# (Their stubs type them as upb's own descriptor class.)
HEALTH = cast(ServiceDescriptor, health_pb2.DESCRIPTOR.services_by_name["Health"])
REFLECTION = cast(ServiceDescriptor, reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"])


@dataclass
class Services:
    """The domain services over one store, shared by the servicers and background work."""

    events: EventManager
    jobs: JobManager
    job_runner: JobRunner
    sharing: SharingManager
    types: EventTypeManager
    registry: RegistryManager
    reporter: DeviceEventReporter
    feed: LiveFeed
    finder: EventFinder
    limits: RateLimits
    users: UserAdmin
    sessions: SessionManager
    # What vouches for a gateway's X-Forwarded-For (ServerSettings.gateway_token).
    gateway_token: str = ""

    @classmethod
    def over(cls, store: Store, settings: ServerSettings | None = None) -> Services:
        """The services over `store`, configured by `settings`; without them (tests in one
        process), tokens are signed with a new key that lives as long as this process."""
        if settings is None:
            keys, settings = parse_keys(new_keys_document()), ServerSettings()
        else:
            configured = Path(settings.token_keys) if settings.token_keys else None
            keys = load_signing_keys(configured, settings.data_dir)
        counter = WindowCounter(SharedRateCounters(store).reserve)
        limits = RateLimits(parse_rate_limits(settings.rate_rules), counter)
        storm_rules = parse_storm_rules(settings.storm_rules)
        storms = StormControl(storm_rules, counter, StormRepository(store)) if storm_rules else None
        sessions = SessionManager(
            store.users,
            TokenCodec(keys, settings.token_ttl_seconds),
            LoginThrottle(
                slow_after=settings.login_slow_after,
                lock_after=settings.login_lock_after,
                address_lock_after=settings.login_address_lock_after,
                lock_seconds=settings.login_lock_seconds,
            ),
        )
        types = EventTypeManager(EventTypeRepository(store))
        # Events created by jobs pass the same custom-type checks as single creates.
        events = EventManager(store.events, types, storms)
        job_store = JobRepository(store)
        runner = JobRunner(job_store, events, parse_job_item, limits=limits)
        sharing = SharingManager(ShareRepository(store))
        feed = LiveFeed(
            store.events, buffer_size=int(os.environ.get("EVENTMGMT_LIVE_BUFFER", "10000"))
        )
        store.commit_listeners.append(feed.offer)
        # Other replicas' commits (PostgreSQL): wake this process's feed.
        store.listen_for_commits(feed.poke_threadsafe)
        return cls(
            events,
            JobManager(job_store, runner.wake, events.filterable_fields),
            runner,
            sharing,
            types,
            RegistryManager(store.registry),
            DeviceEventReporter(store.registry, store.device_events, storms),
            feed,
            EventFinder(store.events),
            limits,
            UserAdmin(store.users),
            sessions,
            settings.gateway_token,
        )


def create_server(
    store: Store,
    address: str,
    services: Services | None = None,
    *,
    reuse_port: bool = False,
    also_listen: tuple[str, ...] = (),
) -> tuple[grpc.aio.Server, int]:
    """Wires servicers, auth, health and reflection onto a new server bound to `address`
    (port 0 picks a free port) and `also_listen`; returns the server, not started, and the
    port of `address`. With `reuse_port`, other processes may listen on the same ports
    (SO_REUSEPORT: workers); without it, a port another server holds fails here."""
    services = services or Services.over(store)
    resolver = CredentialResolver(store.keys.principal_for, services.sessions.principal_for_token)
    resolver.check = store.watch_credentials(resolver.invalidate_threadsafe)
    store.credential_listeners.append(resolver.invalidate)
    service_names = [
        *(offered.full_name for offered in SERVICES),
        HEALTH.full_name,
        reflection.SERVICE_NAME,
    ]
    guard = PrincipalGuard(
        resolver,
        # The device path answers its failures with its own body, never a gRPC status
        # (docs/errors.md#device-path); REST writes conditional on If-Match answer a failed
        # precondition with 412.
        {
            REST_REPORT_METHOD: answer_device_error,
            **dict.fromkeys(CONDITIONAL_WRITES, answer_rest_error),
        },
        CallLimiter(services.limits) if services.limits.rules else None,
    )
    table = MethodTable(
        [
            *((offered.descriptor, offered.servicer(services)) for offered in SERVICES),
            (HEALTH, health.aio.HealthServicer()),
            (REFLECTION, reflection.aio.ReflectionServicer(service_names)),
        ],
        # Request ids, the request log and the rpc metrics outside, so that they also see
        # the calls that authentication refuses.
        lambda method, handler: observed(method, guard.wrap(method, handler)),
    )
    server = grpc.aio.server(
        handlers=[table],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    port = server.add_insecure_port(address)
    if port == 0 or any(server.add_insecure_port(other) == 0 for other in also_listen):
        raise OSError(f"cannot listen on {', '.join((address, *also_listen))}")
    return server, port


async def drain_pending_reports(reporter: DeviceEventReporter) -> None:
    """Turns every pending device report (answered 202) into an event, batch by batch."""
    try:
        while True:
            stored, dropped = await reporter.process_pending()
            if stored or dropped:
                log.info("pending device reports: %s stored, %s duplicates", stored, dropped)
            if stored + dropped < PENDING_BATCH:
                return
    except Exception:
        log.exception("processing pending device reports failed; retrying later")


async def process_pending_reports(reporter: DeviceEventReporter, interval: float) -> None:
    """Drains pending device reports every `interval` seconds; serve() drains once before it
    takes calls, so that reports accepted before a restart become events first."""
    while True:
        await asyncio.sleep(interval)
        await drain_pending_reports(reporter)


async def serve(settings: ServerSettings) -> None:
    """Runs the service until SIGINT or SIGTERM: in this process, or with `settings.workers`
    above 1 as that many worker processes on the one port (service.workers)."""
    from service.bootstrap import ensure_dev_key, ensure_dev_login

    if not settings.gateway_token:  # one for this run, shared by its gateway and workers
        settings = replace(settings, gateway_token=secrets.token_urlsafe(32))
    store = Store(settings.database_url)
    store.migrate()
    # Made (or found wrong) before any worker starts.
    load_signing_keys(Path(settings.token_keys) if settings.token_keys else None, settings.data_dir)
    dev_key = dev_login = None
    if not settings.production:
        dev_key = ensure_dev_key(store, settings.data_dir)
        dev_login = await ensure_dev_login(store, settings.data_dir)
    # One metrics endpoint; in multiprocess mode its scrape adds up every worker's files.
    stop_metrics = None
    if settings.metrics_port:
        stop_metrics = metrics.start_server(settings.rest_host, settings.metrics_port)
        log.info("metrics on http://%s:%s/metrics", settings.rest_host, settings.metrics_port)
    try:
        if settings.workers > 1:
            store.close()
            await _serve_pool(settings, dev_key, dev_login)
            return
        async with _serving(settings, store, reuse_port=False) as port:
            with _gateway(settings, port):
                _print_welcome(settings, port, dev_key, dev_login)
                await _stop_signal()
    finally:
        if stop_metrics is not None:
            stop_metrics()


async def serve_worker(
    settings: ServerSettings, ready: Callable[[], None], gateway_address: str
) -> None:
    """One worker of a pool: the parent migrated, made the dev key, serves the metrics and
    runs the gateway, which calls this worker on `gateway_address`."""
    store = Store(settings.database_url, shared=True)
    async with _serving(settings, store, reuse_port=True, also_listen=(gateway_address,)):
        ready()
        await _stop_signal()


async def _serve_pool(
    settings: ServerSettings, dev_key: Path | None, dev_login: Path | None
) -> None:
    from service.workers import WorkerPool, reserve_port

    holder, port = reserve_port(settings.grpc_address)
    # Each worker's own port, for the gateway: kept for the pool's life, so that a worker
    # started again takes its predecessor's place in Envoy's configuration.
    own = [reserve_port(f"{GATEWAY_UPSTREAM_HOST}:0") for _ in range(settings.workers)]
    holders = [holder, *(held for held, _ in own)]
    host = settings.grpc_address.rpartition(":")[0]
    pool = WorkerPool(
        replace(settings, grpc_address=f"{host}:{port}"),
        [f"{GATEWAY_UPSTREAM_HOST}:{own_port}" for _, own_port in own],
        metrics.process_exited,
    )
    try:
        await asyncio.to_thread(pool.start)
        log.info("gRPC listening on %s:%s in %s worker processes", host, port, settings.workers)
        with _gateway(settings, port, tuple(own_port for _, own_port in own)):
            _print_welcome(settings, port, dev_key, dev_login)
            stop = asyncio.create_task(_stop_signal())
            while not stop.done():
                await asyncio.wait([stop], timeout=0.5)
                pool.restart_dead()
            log.info("shutting down")
    finally:
        await asyncio.to_thread(pool.stop, settings.grace_seconds)
        for held in holders:
            held.close()


async def _stop_signal() -> None:
    """Returns at SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


# Collections of the cyclic garbage collector: the first generation's after this many net
# new container objects (CPython's default, 700, meant one every few calls), the older ones
# after 20 of the one below. Measured on streamed ingest (300,000 events, `make bench`'s
# memory run): 14% of the server's CPU went to collecting, most of it scanning full
# generations of objects that live as long as the process; frozen and at these
# thresholds, 0.2%. Cycles (rare here: requests, events and rows are trees) wait longer to be
# freed, which bounded memory does not notice.
GC_THRESHOLDS = (20_000, 20, 20)


def _settle_heap() -> None:
    """Once the server is built: what exists now (modules, descriptors, caches, the store)
    lives as long as the process, so the collector stops scanning it (gc.freeze), and it
    collects young objects in larger, rarer rounds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@asynccontextmanager
async def _serving(
    settings: ServerSettings, store: Store, reuse_port: bool, also_listen: tuple[str, ...] = ()
) -> AsyncIterator[int]:
    """The gRPC server over `store` with its background work, serving inside the block;
    yields its port. On the way out: stops taking calls within the grace period, closes."""
    services = Services.over(store, settings)
    if services.limits.rules:
        log.info("rate limits: %s", ",".join(str(r) for r in services.limits.rules))
    storms = services.events.storms
    if storms is not None:
        log.info("alarm storm control: %s", ",".join(str(r) for r in storms.rules))
    await drain_pending_reports(services.reporter)
    server, port = create_server(
        store, settings.grpc_address, services, reuse_port=reuse_port, also_listen=also_listen
    )
    await server.start()
    loop = asyncio.get_running_loop()
    # Jobs accepted before a restart (or by a replica that died) resume here.
    tasks = [
        loop.create_task(services.job_runner.run_forever()),
        loop.create_task(process_pending_reports(services.reporter, settings.pending_interval)),
    ]
    if storms is not None:
        tasks.append(loop.create_task(storms.run()))
    # Indexes of filterable custom fields that a crash left missing or stale.
    store.custom_indexes.schedule()
    retention = None
    if settings.retention_interval > 0:
        retention = RetentionSweeper(RetentionRepository(store), settings.retention_interval)
        tasks.append(loop.create_task(retention.run()))
    log.info("gRPC listening on %s (%s event loop)", settings.grpc_address, type(loop).__module__)
    publisher = None
    if settings.mqtt_url:
        from service.mqtt import MqttPublisher

        publisher = MqttPublisher(settings.mqtt_url, payload_format=settings.mqtt_format)
        store.commit_listeners.append(publisher.offer)
        publisher.start()
        log.info("publishing committed events to MQTT at %s", settings.mqtt_url)
    store.writer.batch_observers.append(metrics.observe_commit)
    tasks.append(
        loop.create_task(
            metrics.Sampler(_metric_sources(store, services, publisher, retention)).run()
        )
    )
    _settle_heap()
    try:
        yield port
        log.info("shutting down")
    finally:
        for task in tasks:
            task.cancel()
        # Open subscriptions would hold the grace period; their clients resume by cursor.
        services.feed.close()
        await server.stop(settings.grace_seconds)
        if publisher is not None:
            publisher.stop()
        store.close()
        metrics.process_exited()


@contextmanager
def _gateway(
    settings: ServerSettings, port: int, worker_ports: tuple[int, ...] = ()
) -> Iterator[None]:
    """The Envoy REST gateway in front of the gRPC port (or of the workers' own ports on
    GATEWAY_UPSTREAM_HOST), while inside the block."""
    if not settings.gateway:
        yield
        return
    from gateway.launcher import Envoy, GatewaySettings

    grpc_host = settings.grpc_address.rsplit(":", 1)[0].strip("[]")
    envoy = Envoy(
        GatewaySettings(
            listen_host=settings.rest_host,
            listen_port=settings.rest_port,
            admin_port=settings.admin_port,
            grpc_host=GATEWAY_UPSTREAM_HOST
            if worker_ports or grpc_host in ("0.0.0.0", "", "::")
            else grpc_host,
            grpc_port=port,
            grpc_ports=worker_ports,
            work_dir=settings.data_dir / "gateway",
            token=settings.gateway_token,
        )
    )
    # Started from the main thread: the gateway is tied to this thread's life
    # (see the launcher), and start-up may block the loop for the moment it takes.
    envoy.start()
    log.info("REST (Envoy) listening on http://%s:%s", settings.rest_host, settings.rest_port)
    try:
        yield
    finally:
        envoy.stop()


def _metric_sources(
    store: Store,
    services: Services,
    publisher: MqttPublisher | None,
    retention: RetentionSweeper | None,
) -> metrics.Sources:
    return metrics.Sources(
        live=services.feed.subscriber_lag,
        jobs=JobRepository(store).unfinished,
        mqtt=None
        if publisher is None
        else (lambda: (publisher.queued, publisher.published, publisher.dropped)),
        retention=None if retention is None else (lambda: retention.deleted_total),
    )


def _print_welcome(
    settings: ServerSettings, port: int, dev_key: Path | None, dev_login: Path | None
) -> None:
    lines = [f"eventmgmt is running: gRPC on {settings.grpc_address.rsplit(':', 1)[0]}:{port}"]
    if settings.gateway:
        url = f"http://{settings.rest_host}:{settings.rest_port}"
        lines.append(f"REST on {url} (Envoy admin on 127.0.0.1:{settings.admin_port})")
        lines.append(f"Web console on {url}/console")
        if dev_key is not None:
            lines += [
                f"Development API key (Admin, tenant 'dev'): stored in {dev_key}. Try:",
                f'  curl -s -X POST {url}/events -H "x-api-key: $(cat {dev_key})" '
                "-H 'Content-Type: application/json' "
                '-d \'{"description": "Error happened in the engine", "severity": 2, '
                '"entityId": "pump-1"}\'',
                f'  curl -s {url}/events -H "x-api-key: $(cat {dev_key})"',
            ]
        if dev_login is not None:
            lines += [
                f"Development user (Admin, tenant 'dev'): username and password in {dev_login}."
                " Sign in:",
                f"  curl -s -X POST {url}/auth/login -H 'Content-Type: application/json' "
                f"-d @{dev_login}",
            ]
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)
