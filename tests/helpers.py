"""What the tests share besides fixtures: the running service and its REST client, free ports,
the optional PostgreSQL and MQTT servers, and small builders and readers of events, rows and
error details. Fixtures live in conftest.py, which builds on this module."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest

if TYPE_CHECKING:
    from persistence.store import Store
    from service.domain.events import Event

T = TypeVar("T")
# Two server processes on one database, as the replica tests run them: two `serve` commands on
# PostgreSQL, or one `serve --workers 2` on each backend.
REPLICA_LAYOUTS = ["postgresql-servers", "postgresql-workers", "sqlite-workers"]
POSTGRES_ENV = "EVENTMGMT_TEST_POSTGRES_URL"
MQTT_ENV = "EVENTMGMT_TEST_MQTT_URL"
BACKENDS = ["sqlite", "postgresql"]
EVENTMGMT = [sys.executable, "-m", "service"]
# The v3 API's id of the standard event type (docs/rest-v3.md#standard-type), written out as a
# client sees it.
STANDARD_EVENT_ID = "com.siemens.mindsphere.eventmgmt.event.type.MindSphereStandardEvent"
# The documented create request of a standard event (docs/rest-v3.md#create-event).
DOCUMENTED_EVENT = {
    "correlationId": "cd5f73c4-bd67-11e7-abc4-cec278b6b50a",
    "timestamp": "2018-07-29T06:09:29.743Z",
    "entityId": "cd5f73c4-bd67-11e7-abc4-cec278b6b50b",
    "code": "123",
    "description": "Error happened in the engine",
    "severity": 5,
    "source": "eventSource",
    "acknowledged": False,
}
# The documented create request of a custom event (docs/rest-v3.md#custom-event).
DOCUMENTED_CUSTOM_EVENT = {
    "correlationId": "cd5f73c4-bd67-11e7-abc4-cec278b6b50a",
    "timestamp": "2018-07-29T06:09:29.743Z",
    "entityId": "cd5f73c4-bd67-11e7-abc4-cec278b6b50b",
    "typeId": "c3d6749a-c9e4-11e7-abc4-cec278b6b50a",
    "additionalFieldChild": "additionalFieldChildValue",
    "additionalFieldParent": "additionalFieldParentalue",
}
# The documented device report (docs/device-api.md#request) with its JSON typos fixed: typeId
# quoted, and the empty description (required, so it cannot stay empty) given a text.
DEVICE_APP = "IPSO-SFHWREG-ASDEGFE-SDGACXV-BSDF"
DEVICE_REPORT = {
    "typeId": "0045",
    "description": "Software registered",
    "appId": DEVICE_APP,
    "severity": 3,
    "data": {"source": "Software", "version": 2.5, "active": True},
    "timestamp": 1440014969567,
}


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


_EPHEMERAL = _ephemeral_ports()
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, outside the kernel's ephemeral range, never handed out twice
    in this process. A port the kernel picks for `bind(0)` is ephemeral: until the server binds
    it, any outgoing connection of the machine (a client, psycopg2, Envoy's upstream) may take
    it as its local port, and the server then fails to start with "address already in use"."""
    low = 10_000
    if _EPHEMERAL.start - low < 1_000:  # no room below the range: take the kernel's pick
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    while True:
        port = random.randrange(low, _EPHEMERAL.start)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def postgres_server_url() -> str:
    """The PostgreSQL server the tests may use; CI must have one, elsewhere it is optional."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests: set {POSTGRES_ENV}")
    pytest.skip(f"no PostgreSQL configured: set {POSTGRES_ENV}=postgresql://user@host/db to run")


def mqtt_broker_url() -> str:
    """The MQTT broker the tests may use; CI must have one, elsewhere it is optional."""
    url = os.environ.get(MQTT_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the MQTT tests: set {MQTT_ENV}")
    pytest.skip(f"no MQTT broker configured: set {MQTT_ENV}=mqtt://host:1883 to run")


def mqtt_publishing_service(tmp_path: Path, *serve_args: str) -> Iterator[Service]:
    """A gRPC-only server on a fresh SQLite file that publishes its commits to the test broker
    (skipped without one, except in CI), for the life of the test."""
    running = Service(
        f"sqlite:///{tmp_path / 'events.db'}",
        tmp_path,
        gateway=False,
        serve_args=("--mqtt-url", mqtt_broker_url(), *serve_args),
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def admin_connection(url: str) -> Any:
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    return connection


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Service:
    """A running `eventmgmt serve` child process with its Envoy gateway."""

    database_url: str
    data_dir: Path
    grpc_port: int = field(default_factory=free_port)
    rest_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Extra environment for the server (for example shorter job leases), and whether it
    # runs its Envoy gateway.
    env: dict[str, str] = field(default_factory=dict)
    gateway: bool = True
    # More `serve` flags, such as `--mqtt-url ...`.
    serve_args: tuple[str, ...] = ()
    # Server processes (`serve --workers`): one keeps most tests fast; the replica tests run
    # with several too; None leaves the flag out (its default: one per core).
    workers: int | None = 1

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def cli(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [*EVENTMGMT, "--database", self.database_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            input=input,
        )
        if done.returncode != 0:
            raise AssertionError(f"eventmgmt {' '.join(args)} failed: {done.stderr}")
        return done.stdout.strip()

    def create_key(self, tenant: str, role: str, domain: str = "/", name: str = "test-key") -> str:
        self.cli("admin", "create-tenant", tenant)
        return self.cli(
            "admin",
            "create-key",
            "--tenant",
            tenant,
            "--role",
            role,
            "--domain",
            domain,
            "--name",
            name,
        )

    def start(self) -> None:
        log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [
                *EVENTMGMT,
                "--database",
                self.database_url,
                "serve",
                "--grpc-address",
                self.grpc_target,
                "--rest-port",
                str(self.rest_port),
                "--admin-port",
                str(self.admin_port),
                "--metrics-port",
                str(self.metrics_port),
                "--data-dir",
                str(self.data_dir),
                *([] if self.gateway else ["--no-gateway"]),
                *([] if self.workers is None else ["--workers", str(self.workers)]),
                *self.serve_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in 30 s: {self.log_tail()}")

    def _ready(self) -> bool:
        try:
            if self.gateway:
                return self.request("GET", "/events").status == 401
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1):
                return True
        except OSError:
            return False

    def log_tail(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")[-3000:]

    def worker_pids(self) -> list[int]:
        """The worker processes of a `serve --workers N` (N > 1), by their parent."""
        assert self.process is not None
        found = []
        for pid in child_pids(self.process.pid):
            try:
                if b"service.workers" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:  # it ended meanwhile
                continue
        return found

    def channels_to_workers(self, count: int) -> list[grpc.Channel]:
        """`count` gRPC channels, each connected to a different worker process. SO_REUSEPORT
        hands each connection to a worker by a hash: new connections are opened (each channel
        its own, not shared) until `count` workers hold one."""
        import grpc

        workers = set(self.worker_pids())
        chosen: dict[int, grpc.Channel] = {}
        for _ in range(64):
            before = connection_owners(self.grpc_port, workers)
            channel = grpc.insecure_channel(
                self.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            grpc.channel_ready_future(channel).result(timeout=10)
            new = set(connection_owners(self.grpc_port, workers).items()) - set(before.items())
            owner = next(iter(new))[1] if len(new) == 1 else None
            if owner is not None and owner not in chosen:
                chosen[owner] = channel
                if len(chosen) == count:
                    return list(chosen.values())
            else:
                channel.close()
        for channel in chosen.values():
            channel.close()
        raise AssertionError(f"no connection reached {count} of the workers {sorted(workers)}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            all_headers["x-api-key"] = key
        request = urllib.request.Request(
            self.rest_url + path, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return Response(
                    answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
                )
        except urllib.error.HTTPError as error:
            with error:
                return Response(
                    error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()
                )


def child_pids(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def connection_owners(port: int, pids: set[int]) -> dict[int, int]:
    """The established TCP connections to local `port` held by one of `pids`: the remote
    port of each, and the pid that holds it (from /proc: socket inodes of each pid's fds)."""
    owners: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[target[8:-1]] = pid
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port and inode in owners:
                found[int(remote.rsplit(":", 1)[1], 16)] = owners[inode]
    return found


@dataclass
class Replicas:
    """Two server processes on one database and a gRPC channel to each."""

    database_url: str
    services: list[Service]
    channels: list[grpc.Channel]

    def create_key(self, tenant: str, role: str) -> str:
        return self.services[0].create_key(tenant, role)


@dataclass
class Keys:
    """API keys of a running service: two tenants, each role, and a domain-limited key."""

    admin: str
    read: str
    writer: str
    sub1_writer: str
    other_tenant: str


# A bound for things to arrive, never a timing assertion.
WAIT = 30.0
# A list filter for the events callers made, leaving out the platform's internal events
# (such as the audit event of the key a test just created); REST_ form for query strings.
CALLERS_EVENTS = '{"internal": false}'
REST_CALLERS_EVENTS = "filter=%7B%22internal%22%3Afalse%7D"


class Subscription:
    """SubscribeEvents read by a thread into a queue, so that waits are bounded."""

    def __init__(
        self,
        channel: grpc.Channel,
        key: str,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        from service.v1 import event_stream_service_pb2, event_stream_service_pb2_grpc

        stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
        self.call = stub.SubscribeEvents(
            event_stream_service_pb2.SubscribeEventsRequest(heartbeat_seconds=1),
            metadata=metadata or auth(key),
            timeout=120,
        )
        self.messages: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.messages.get(timeout=WAIT)
        assert not isinstance(first, grpc.RpcError), first

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except grpc.RpcError as error:
            self.messages.put(error)

    def ending(self) -> grpc.RpcError:
        """Waits for the stream to end (heartbeats come every second until then)."""
        while True:
            message = self.messages.get(timeout=WAIT)
            if isinstance(message, grpc.RpcError):
                return message


def rest_stream_ends(
    service: Service, key: str, headers: dict[str, str] | None = None
) -> threading.Event:
    """Opens `GET /liveEvents` and returns an event set once the stream ends."""
    import http.client

    ended = threading.Event()
    connection = http.client.HTTPConnection("127.0.0.1", service.rest_port, timeout=WAIT)
    connection.request(
        "GET", "/liveEvents?heartbeatSeconds=1", headers=headers or {"x-api-key": key}
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"id: ")

    def read() -> None:
        try:
            while response.readline():
                pass
        finally:
            ended.set()
            connection.close()

    threading.Thread(target=read, daemon=True).start()
    return ended


# --- small builders and readers ------------------------------------------------------------


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def event(tenant: str = "acme", **fields: Any) -> Event:
    """A new event of `tenant` (not stored); its times default to one fixed moment."""
    from service.domain.events import Event

    fields.setdefault("timestamp", 1_700_000_000_000_000)
    fields.setdefault("create_time", fields["timestamp"])
    fields.setdefault("update_time", fields["timestamp"])
    return Event(id=str(uuid.uuid4()), tenant_id=tenant, **fields)


def insert(store: Store, *events: Event) -> None:
    """Stores the events through the store's writer, concurrently, as clients would."""

    async def all_of_them() -> None:
        await asyncio.gather(*(store.events.insert(e) for e in events))

    run(all_of_them())


def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return store.run_sync(lambda db: [tuple(r) for r in db.execute_sql(sql).fetchall()])


def auth(key: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata with an API key."""
    return (("x-api-key", key),)


def _error_body(answer: Response | dict[str, Any]) -> dict[str, Any]:
    return answer.json() if isinstance(answer, Response) else answer


def error_reason(answer: Response | dict[str, Any]) -> str:
    """The ErrorInfo reason of a REST error answer (or of its decoded body)."""
    details = _error_body(answer)["details"]
    return str(next(d["reason"] for d in details if d["@type"].endswith("ErrorInfo")))


def violations(answer: Response | dict[str, Any]) -> dict[str, str]:
    """Field -> rule of a REST error answer's BadRequest (or of its decoded body)."""
    details = _error_body(answer)["details"]
    bad_request = next(d for d in details if d["@type"].endswith("BadRequest"))
    return {v["field"]: v["description"] for v in bad_request["fieldViolations"]}


def grpc_details(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and the BadRequest violations of a failed gRPC call."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reason, fields = "", {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields = {v.field: v.description for v in bad.field_violations}
    return reason, fields


def grpc_violations(error: grpc.RpcError) -> dict[str, str]:
    return grpc_details(error)[1]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(service: Service) -> dict[str, float]:
    """The metrics page as {'name{labels}': value}, labels as printed."""
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/plain")
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def metric_value(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sample of `name` whose labels include `labels` (0 when absent)."""
    for key, number in samples.items():
        metric, _, rest = key.partition("{")
        if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return number
    return 0.0
