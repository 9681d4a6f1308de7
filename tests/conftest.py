"""Shared fixtures: databases on both backends, and the real service (gRPC + Envoy) in a
child process, started the way a user starts it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

POSTGRES_ENV = "EVENTMGMT_TEST_POSTGRES_URL"
MQTT_ENV = "EVENTMGMT_TEST_MQTT_URL"
BACKENDS = ["sqlite", "postgresql"]
EVENTMGMT = [sys.executable, "-m", "service"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def _admin_connection(url: str) -> Any:
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    return connection


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Any]:
    """Creates fresh, uniquely named PostgreSQL databases on demand; drops them at the end."""
    created: list[str] = []
    server_url = None

    def create() -> str:
        nonlocal server_url
        server_url = postgres_server_url()
        name = f"eventmgmt_test_{uuid.uuid4().hex[:12]}"
        connection = _admin_connection(server_url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        created.append(name)
        return server_url.rsplit("/", 1)[0] + "/" + name

    yield create
    if server_url:
        connection = _admin_connection(server_url)
        with connection.cursor() as cursor:
            for name in created:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_databases: Any) -> str:
    """A new, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return str(postgres_databases())


@pytest.fixture
def store(database_url: str) -> Iterator[Any]:
    from persistence.store import Store

    opened = Store(database_url)
    opened.migrate()
    yield opened
    opened.close()


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
    process: subprocess.Popen[bytes] | None = None
    # Extra environment for the server (for example shorter job leases), and whether it
    # runs its Envoy gateway.
    env: dict[str, str] = field(default_factory=dict)
    gateway: bool = True
    # More `serve` flags, such as `--mqtt-url ...`.
    serve_args: tuple[str, ...] = ()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*EVENTMGMT, "--database", self.database_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
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
                "--data-dir",
                str(self.data_dir),
                *([] if self.gateway else ["--no-gateway"]),
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


@dataclass
class Keys:
    """API keys of a running service: two tenants, each role, and a domain-limited key."""

    admin: str
    read: str
    writer: str
    sub1_writer: str
    other_tenant: str


@pytest.fixture(scope="session", params=BACKENDS)
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: Any,
) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp(f"service-{request.param}")
    url = (
        f"sqlite:///{data_dir / 'events.db'}"
        if request.param == "sqlite"
        else str(postgres_databases())
    )
    running = Service(url, data_dir)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def keys(service: Service) -> Keys:
    return Keys(
        admin=service.create_key("acme", "Admin"),
        read=service.create_key("acme", "Read"),
        writer=service.create_key("acme", "ReadWrite"),
        sub1_writer=service.create_key("acme", "ReadWrite", "/root/sub1"),
        other_tenant=service.create_key("globex", "Admin"),
    )
