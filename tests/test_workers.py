"""`serve --workers N`: the default count, writes that must have one outcome whichever process
takes them (etags, idempotency keys, device report duplicates), and the pool's life: a dead
worker is replaced, and no worker outlives a parent killed with -9."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from helpers import Replicas, Service, auth
from service.v1 import (
    device_event_service_pb2,
    device_event_service_pb2_grpc,
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    event_stream_service_pb2,
    event_stream_service_pb2_grpc,
    registry_pb2,
    registry_service_pb2,
    registry_service_pb2_grpc,
)

CALLS = 8  # concurrent calls, alternating over the two processes


def at_once(call: Callable[[grpc.Channel], Any], channels: list[grpc.Channel]) -> list[Any]:
    """Runs `call` CALLS times at once, alternating channels; each result or its RpcError."""

    def one(n: int) -> Any:
        try:
            return call(channels[n % len(channels)])
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(CALLS) as pool:
        return list(pool.map(one, range(CALLS)))


def codes(results: list[Any]) -> list[grpc.StatusCode]:
    return sorted(
        (r.code() if isinstance(r, grpc.RpcError) else grpc.StatusCode.OK for r in results),
        key=lambda code: code.value[0],
    )


def test_the_default_is_one_worker_per_core(tmp_path: Path) -> None:
    service = Service(f"sqlite:///{tmp_path / 'events.db'}", tmp_path, gateway=False, workers=None)
    service.start()
    try:
        cores = len(os.sched_getaffinity(0))
        assert len(service.worker_pids()) == (cores if cores > 1 else 0)
    finally:
        service.stop()


def test_one_etag_wins_whichever_process_takes_the_updates(
    replicas: Callable[..., Replicas],
) -> None:
    running = replicas()
    key = running.create_key("acme", "ReadWrite")
    stub = event_service_pb2_grpc.EventServiceStub(running.channels[0])
    created = stub.CreateEvent(
        event_service_pb2.CreateEventRequest(event=event_pb2.Event(description="v1")),
        metadata=auth(key),
    ).event

    def update(channel: grpc.Channel) -> Any:
        return event_service_pb2_grpc.EventServiceStub(channel).UpdateEvent(
            event_service_pb2.UpdateEventRequest(
                id=created.id,
                event=event_pb2.Event(description=uuid.uuid4().hex, etag=created.etag),
                update_fields=["description"],
            ),
            metadata=auth(key),
        )

    results = at_once(update, running.channels)
    assert codes(results) == [grpc.StatusCode.OK] + [grpc.StatusCode.ABORTED] * (CALLS - 1)
    winner = next(r for r in results if not isinstance(r, grpc.RpcError)).event
    stored = stub.GetEvent(event_service_pb2.GetEventRequest(id=created.id), metadata=auth(key))
    assert (stored.event.description, stored.event.etag) == (winner.description, created.etag + 1)


def test_one_event_per_idempotency_key_whichever_process_ingests_it(
    replicas: Callable[..., Replicas],
) -> None:
    running = replicas()
    key, idempotency_key = running.create_key("acme", "ReadWrite"), uuid.uuid4().hex

    def ingest(channel: grpc.Channel) -> Any:
        stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
        request = event_stream_service_pb2.IngestEventsRequest(
            items=[
                event_stream_service_pb2.IngestItem(
                    idempotency_key=idempotency_key,
                    event=event_pb2.Event(description="once", entity_id="e-1"),
                )
            ]
        )
        return next(iter(stub.IngestEvents(iter([request]), metadata=auth(key)))).results[0]

    results = at_once(ingest, running.channels)
    assert codes(results) == [grpc.StatusCode.OK] * CALLS
    assert len({r.id for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * (CALLS - 1)


def test_one_event_per_device_report_whichever_process_takes_it(
    replicas: Callable[..., Replicas],
) -> None:
    running = replicas()
    key = running.create_key("acme", "Admin")
    registry = registry_service_pb2_grpc.RegistryServiceStub(running.channels[0])
    registry.CreateDevice(
        registry_service_pb2.CreateDeviceRequest(device=registry_pb2.Device(id="dev-1")),
        metadata=auth(key),
    )
    registry.CreateApp(
        registry_service_pb2.CreateAppRequest(app=registry_pb2.App(id="app-1")),
        metadata=auth(key),
    )
    report = device_event_service_pb2.ReportDeviceEventRequest(
        tenant_id="acme",
        device_id="dev-1",
        type_id="0045",
        app_id="app-1",
        description="Software registered",
        severity=event_pb2.SEVERITY_MEDIUM,
        data_json='{"version": 2.5}',
        timestamp=Timestamp(seconds=int(time.time())),
    )

    def send(channel: grpc.Channel) -> Any:
        stub = device_event_service_pb2_grpc.DeviceEventServiceStub(channel)
        return stub.ReportDeviceEvent(report, metadata=auth(key))

    results = at_once(send, running.channels)
    assert codes(results) == [grpc.StatusCode.OK] + [grpc.StatusCode.ALREADY_EXISTS] * (CALLS - 1)
    winner = next(r for r in results if not isinstance(r, grpc.RpcError)).event.id
    assert all(winner in str(r.details()) for r in results if isinstance(r, grpc.RpcError))


def test_the_gateway_spreads_rest_calls_over_the_workers(tmp_path: Path) -> None:
    service = Service(f"sqlite:///{tmp_path / 'events.db'}", tmp_path, workers=2)
    service.start()
    try:
        key = service.create_key("acme", "ReadWrite")
        for n in range(20):
            body = {"description": f"{n}", "entityId": "e-1"}
            created = service.request("POST", "/events", body, key=key)
            assert created.status == 201, created.body
        with urllib.request.urlopen(f"http://127.0.0.1:{service.admin_port}/clusters") as answer:
            stats = answer.read().decode()
    finally:
        service.stop()
    # Envoy's own counters: calls per upstream host of the unary cluster, one per worker.
    unary = r"^grpc_service::127\.0\.0\.1:\d+::rq_total::(\d+)"
    calls = [int(n) for n in re.findall(unary, stats, re.MULTILINE)]
    assert len(calls) == 2 and all(calls) and sum(calls) >= 20, stats


def _serves(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its parent has not reaped it


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_a_dead_worker_is_replaced_and_no_worker_outlives_the_parent(
    tmp_path: Path, sig: int
) -> None:
    service = Service(f"sqlite:///{tmp_path / 'events.db'}", tmp_path, gateway=False, workers=2)
    service.start()
    try:
        key = service.create_key("acme", "ReadWrite")
        first, _ = service.worker_pids()
        os.kill(first, signal.SIGKILL)
        _wait(lambda: len(set(service.worker_pids()) - {first}) == 2, "the worker was not replaced")
        # Whichever worker each new connection reaches, it serves.
        for _ in range(4):
            with grpc.insecure_channel(
                service.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                event_service_pb2_grpc.EventServiceStub(channel).CreateEvent(
                    event_service_pb2.CreateEventRequest(event=event_pb2.Event(description="x")),
                    metadata=auth(key),
                    timeout=10,
                )
        workers = service.worker_pids()
    finally:
        code = service.stop(sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    # kill -9 gives the parent no chance to stop them: the kernel's parent-death signal does.
    _wait(lambda: not any(_alive(pid) for pid in workers), "workers outlived the parent")
    _wait(lambda: not _serves(service.grpc_port), "the port is still served")
