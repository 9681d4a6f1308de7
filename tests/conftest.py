"""Shared fixtures: databases on both backends, and the real service (gRPC + Envoy) in a
child process, started the way a user starts it. What tests share besides fixtures is in
helpers.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from helpers import (
    BACKENDS,
    REPLICA_LAYOUTS,
    Keys,
    Replicas,
    Service,
    admin_connection,
    mqtt_publishing_service,
    postgres_server_url,
)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Any]:
    """Creates fresh, uniquely named PostgreSQL databases on demand; drops them at the end."""
    created: list[str] = []
    server_url = None

    def create() -> str:
        nonlocal server_url
        server_url = postgres_server_url()
        name = f"eventmgmt_test_{uuid.uuid4().hex[:12]}"
        connection = admin_connection(server_url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        created.append(name)
        return server_url.rsplit("/", 1)[0] + "/" + name

    yield create
    if server_url:
        connection = admin_connection(server_url)
        with connection.cursor() as cursor:
            for name in created:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


@pytest.fixture(params=REPLICA_LAYOUTS)
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_databases: Any
) -> Iterator[Callable[..., Replicas]]:
    """Starts two server processes on one new database (see REPLICA_LAYOUTS), with the
    given extra environment, and a channel to each; stops them at the end."""
    backend, layout = request.param.split("-")
    url = (
        str(postgres_databases())
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'events.db'}"
    )
    services: list[Service] = []
    channels: list[grpc.Channel] = []

    def start(env: dict[str, str] | None = None) -> Replicas:
        names, workers = (["a", "b"], 1) if layout == "servers" else (["w"], 2)
        mine = [
            Service(url, tmp_path / name, gateway=False, env=env or {}, workers=workers)
            for name in names
        ]
        for service in mine:
            service.data_dir.mkdir()
            services.append(service)
            service.start()
        if layout == "servers":
            channels.extend(grpc.insecure_channel(s.grpc_target) for s in mine)
        else:
            channels.extend(mine[0].channels_to_workers(2))
        return Replicas(url, mine, channels[-2:])

    yield start
    for channel in channels:
        channel.close()
    for service in services:
        if service.process is not None:
            service.stop()


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


@pytest.fixture
def channel(service: Service) -> Iterator[grpc.Channel]:
    """A gRPC channel to the running service."""
    with grpc.insecure_channel(service.grpc_target) as opened:
        yield opened


@pytest.fixture
def mqtt_service(tmp_path: Path) -> Iterator[Service]:
    """A server publishing its commits to the test MQTT broker (tests/helpers.py)."""
    yield from mqtt_publishing_service(tmp_path)
