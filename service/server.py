"""Builds and runs the gRPC server: `create_server` wires it, `serve` runs it with the
gateway until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eventmgmt.auth import KeyResolver, PrincipalInterceptor
from eventmgmt.domain.events import EventManager
from eventmgmt.persistence.store import Store
from eventmgmt.servicers.event_rest_service import EventRestServicer
from eventmgmt.servicers.event_service import EventServicer
from eventmgmt.v1 import (
    event_rest_service_pb2,
    event_rest_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
)

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass
class ServerSettings:
    database_url: str = "sqlite:///data/eventmgmt.db"
    grpc_address: str = "127.0.0.1:50051"
    rest_host: str = "127.0.0.1"
    rest_port: int = 8080
    admin_port: int = 9901
    data_dir: Path = Path("data")
    gateway: bool = True
    production: bool = False
    grace_seconds: float = 5.0


def create_server(store: Store, address: str) -> tuple[grpc.aio.Server, int]:
    """Wires servicers, auth, health and reflection onto a new server bound to `address`
    (port 0 picks a free port); returns the server, not started, and its port."""
    events = EventManager(store.events)
    server = grpc.aio.server(
        interceptors=[PrincipalInterceptor(KeyResolver(store.keys.principal_for))],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    event_service_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(events), server)
    event_rest_service_pb2_grpc.add_EventRestServiceServicer_to_server(
        EventRestServicer(events), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [
        event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
        event_rest_service_pb2.DESCRIPTOR.services_by_name["EventRestService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(services, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port


async def serve(settings: ServerSettings) -> None:
    from eventmgmt.bootstrap import ensure_dev_key
    from eventmgmt.gateway.launcher import Envoy, GatewaySettings

    store = Store(settings.database_url)
    store.migrate()
    dev_key = None if settings.production else ensure_dev_key(store, settings.data_dir)
    server, port = create_server(store, settings.grpc_address)
    await server.start()
    log.info("gRPC listening on %s", settings.grpc_address)
    envoy = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if settings.gateway:
            grpc_host = settings.grpc_address.rsplit(":", 1)[0].strip("[]")
            envoy = Envoy(
                GatewaySettings(
                    listen_host=settings.rest_host,
                    listen_port=settings.rest_port,
                    admin_port=settings.admin_port,
                    grpc_host="127.0.0.1" if grpc_host in ("0.0.0.0", "", "::") else grpc_host,
                    grpc_port=port,
                    work_dir=settings.data_dir / "gateway",
                )
            )
            # Started from the main thread: the gateway is tied to this thread's life
            # (see the launcher), and start-up may block the loop for the moment it takes.
            envoy.start()
            log.info(
                "REST (Envoy) listening on http://%s:%s", settings.rest_host, settings.rest_port
            )
        _print_welcome(settings, port, dev_key)
        await stop.wait()
        log.info("shutting down")
    finally:
        if envoy is not None:
            envoy.stop()
        await server.stop(settings.grace_seconds)
        store.close()


def _print_welcome(settings: ServerSettings, port: int, dev_key: Path | None) -> None:
    lines = [f"eventmgmt is running: gRPC on {settings.grpc_address.rsplit(':', 1)[0]}:{port}"]
    if settings.gateway:
        url = f"http://{settings.rest_host}:{settings.rest_port}"
        lines.append(f"REST on {url} (Envoy admin on 127.0.0.1:{settings.admin_port})")
        if dev_key is not None:
            lines += [
                f"Development API key (Admin, tenant 'dev'): stored in {dev_key}. Try:",
                f'  curl -s -X POST {url}/events -H "x-api-key: $(cat {dev_key})" '
                "-H 'Content-Type: application/json' "
                '-d \'{"description": "Error happened in the engine", "severity": 2}\'',
                f'  curl -s {url}/events -H "x-api-key: $(cat {dev_key})"',
            ]
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)
