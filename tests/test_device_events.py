"""The device path (docs/device-api.md) end to end: HTTP to the real Envoy, the real server, SQLite
and PostgreSQL; the registry and the typed rpc over gRPC; 202 across a real restart."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from helpers import DEVICE_APP, DEVICE_REPORT, Keys, Response, Service, auth, free_port
from persistence.database import open_database
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

pytestmark = pytest.mark.integration

# The documented example exactly as printed (docs/device-api.md#request): not JSON.
REPORT_AS_PRINTED = b"""{
    typeId: 0045,
    description: ,
    appId: "IPSO-SFHWREG-ASDEGFE-SDGACXV-BSDF",
    severity: 3,
    data: {
            source:"Software",
            version:2.5,
            active:true
    },
    timestamp: 1440014969567
}"""
_timestamps = itertools.count(1_600_000_000_000)


def path(tenant: str = "acme", device: str = "dev-1") -> str:
    return f"/rest/v1/api/tenants/{tenant}/devices/{device}/events"


def report(**fields: Any) -> dict[str, Any]:
    """The documented report with a timestamp no other test uses, and `fields` changed."""
    return {**DEVICE_REPORT, "timestamp": next(_timestamps), **fields}


def stored_rows(service: Service, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    database = open_database(service.database_url)
    try:
        return [tuple(row) for row in database.execute_sql(sql, args).fetchall()]
    finally:
        database.close()


def device_events(service: Service, device: str, timestamp_ms: int) -> list[tuple[Any, ...]]:
    p = "%s" if service.database_url.startswith("postgres") else "?"
    return stored_rows(
        service,
        f"SELECT id, type_id, description FROM events WHERE tenant_id = 'acme' "
        f"AND entity_id = {p} AND ts = {p}",
        device,
        timestamp_ms * 1000,
    )


def assert_failure(answer: Response, status: int, error: int, *words: str) -> None:
    assert answer.status == status, answer.body
    body = answer.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == error, body
    for word in words:
        assert word in body["message"], body


@dataclass
class Registry:
    registry: registry_service_pb2_grpc.RegistryServiceStub
    devices: device_event_service_pb2_grpc.DeviceEventServiceStub
    events: event_service_pb2_grpc.EventServiceStub


@pytest.fixture(scope="session")
def registry(service: Service, keys: Keys) -> Iterator[Registry]:
    """Devices and apps of tenant acme (and one device of globex), registered over gRPC."""
    with grpc.insecure_channel(service.grpc_target) as channel:
        stubs = Registry(
            registry_service_pb2_grpc.RegistryServiceStub(channel),
            device_event_service_pb2_grpc.DeviceEventServiceStub(channel),
            event_service_pb2_grpc.EventServiceStub(channel),
        )
        admin = auth(keys.admin)
        for device_id, domain in [
            ("dev-1", "/root/sub1"),
            ("dev-2", "/root/sub2"),
            ("dev-race", "/root/sub1"),
            ("dev-off", "/root/sub1"),
        ]:
            stubs.registry.CreateDevice(
                registry_service_pb2.CreateDeviceRequest(
                    device=registry_pb2.Device(id=device_id, domain=domain)
                ),
                metadata=admin,
            )
        stubs.registry.DisableDevice(
            registry_service_pb2.DisableDeviceRequest(device_id="dev-off"), metadata=admin
        )
        for app_id in (DEVICE_APP, "APP-OFF"):
            stubs.registry.CreateApp(
                registry_service_pb2.CreateAppRequest(app=registry_pb2.App(id=app_id)),
                metadata=admin,
            )
        stubs.registry.DisableApp(
            registry_service_pb2.DisableAppRequest(app_id="APP-OFF"), metadata=admin
        )
        stubs.registry.CreateDevice(
            registry_service_pb2.CreateDeviceRequest(device=registry_pb2.Device(id="g-1")),
            metadata=auth(keys.other_tenant),
        )
        yield stubs


# --- REST: success ---------------------------------------------------------------------------


def test_the_documented_report_is_stored_as_an_ordinary_event(
    service: Service, keys: Keys, registry: Registry
) -> None:
    answer = service.request("POST", path(), DEVICE_REPORT, key=keys.writer)

    assert answer.status == 201, answer.body
    body = answer.json()
    event_url = f"{service.rest_url}/events/{body['id']}"
    assert answer.headers["location"] == event_url
    assert body == {
        **DEVICE_REPORT,
        "id": body["id"],
        "tenantId": "acme",
        "deviceId": "dev-1",
        "domain": "/root/sub1",
        "etag": 1,
        "_links": {"self": {"href": event_url}},
    }
    assert not any(h.startswith("grpc-") for h in answer.headers)

    stored = service.request("GET", f"/events/{body['id']}", key=keys.read).json()
    assert stored["entityType"] == "Device"
    assert stored["entityId"] == "dev-1"
    assert stored["domain"] == "/root/sub1"
    assert stored["appId"] == DEVICE_APP
    assert stored["typeId"] == "0045"
    assert stored["severity"] == 3
    assert stored["timestamp"] == "2015-08-19T20:09:29.567Z"
    assert stored["payload"] == {"contentType": "application/json", "data": DEVICE_REPORT["data"]}


def test_data_keeps_its_exact_json_types(service: Service, keys: Keys, registry: Registry) -> None:
    data = {
        "count": 7,
        "ratio": 2.5,
        "whole": 1.0,
        "on": False,
        "tags": ["a", 1, None, {"deep": [True]}],
        "big": 12345678901234567890,
    }
    answer = service.request("POST", path(), report(data=data), key=keys.writer)

    assert answer.status == 201, answer.body
    assert answer.json()["data"] == data
    stored = service.request("GET", f"/events/{answer.json()['id']}", key=keys.read).json()
    stored_data = stored["payload"]["data"]
    assert stored_data == data
    assert type(stored_data["count"]) is int
    assert type(stored_data["whole"]) is float
    assert type(stored_data["on"]) is bool
    assert type(stored_data["big"]) is int


def test_device_events_are_listed_with_the_device_as_entity(
    service: Service, keys: Keys, registry: Registry
) -> None:
    now_ms = time.time_ns() // 1_000_000
    created = service.request("POST", path(), report(timestamp=now_ms), key=keys.writer).json()

    listed = service.request("GET", "/events?size=1000", key=keys.admin).json()
    found = [e for e in listed["_embedded"]["events"] if e["id"] == created["id"]]
    assert len(found) == 1
    assert found[0]["entityType"] == "Device"
    assert found[0]["entityId"] == "dev-1"
    assert found[0]["domain"] == "/root/sub1"
    assert found[0]["appId"] == DEVICE_APP

    page = registry.events.ListEvents(
        event_service_pb2.ListEventsRequest(page_size=1000), metadata=auth(keys.admin)
    )
    event = next(e for e in page.events if e.id == created["id"])
    assert (event.entity_type, event.entity_id, event.domain, event.app_id) == (
        "Device",
        "dev-1",
        "/root/sub1",
        DEVICE_APP,
    )
    assert event.payload.content_type == "application/json"


def test_a_key_limited_to_the_devices_domain_may_report(
    service: Service, keys: Keys, registry: Registry
) -> None:
    answer = service.request("POST", path(), report(), key=keys.sub1_writer)

    assert answer.status == 201, answer.body


# --- REST: failures --------------------------------------------------------------------------

MISSING = object()


@pytest.mark.parametrize(
    ("changes", "status", "error", "words"),
    [
        ({"typeId": MISSING}, 400, 6, ("typeId", "required")),
        ({"typeId": "a b"}, 400, 6, ("typeId", "machine name")),
        ({"typeId": "x" * 25}, 400, 6, ("typeId", "1 to 24")),
        ({"typeId": 45}, 400, 6, ("typeId", "must be a string")),
        ({"description": MISSING}, 400, 6, ("description", "required")),
        ({"description": ""}, 400, 6, ("description", "1 to 255")),
        ({"description": "x" * 256}, 400, 6, ("description", "1 to 255")),
        ({"appId": MISSING}, 400, 6, ("appId", "required")),
        ({"appId": "NO-SUCH-APP"}, 400, 0, ("appId", "invalid licence")),
        ({"appId": "APP-OFF"}, 403, 0, ("appId", "not active")),
        ({"severity": MISSING}, 400, 6, ("severity", "1 to 5")),
        ({"severity": 0}, 400, 6, ("severity", "1 to 5")),
        ({"severity": 6}, 400, 6, ("severity", "1 to 5")),
        ({"severity": "3"}, 400, 6, ("severity", "integer")),
        ({"severity": 3.0}, 400, 6, ("severity", "integer")),
        ({"data": MISSING}, 400, 6, ("data", "JSON object")),
        ({"data": [1, 2]}, 400, 6, ("data", "JSON object")),
        ({"data": "Software"}, 400, 6, ("data", "JSON object")),
        ({"timestamp": MISSING}, 400, 6, ("timestamp", "required")),
        ({"timestamp": "2015-08-19T20:09:29Z"}, 400, 6, ("timestamp", "epoch milliseconds")),
        ({"timestamp": 1440014969567.5}, 400, 6, ("timestamp", "integer")),
        ({"timestamp": -1}, 400, 6, ("timestamp", "0 or more")),
        ({"timestamp": 10**17}, 400, 6, ("timestamp", "9999")),
        ({"colour": "red", "size": 1}, 400, 6, ("colour", "size", "unknown fields")),
    ],
)
def test_bad_reports_are_refused_by_field_and_change_nothing(
    service: Service,
    keys: Keys,
    registry: Registry,
    changes: dict[str, Any],
    status: int,
    error: int,
    words: tuple[str, ...],
) -> None:
    body = report(**changes)
    for name in [n for n, v in changes.items() if v is MISSING]:
        del body[name]

    answer = service.request("POST", path(), body, key=keys.writer)

    assert_failure(answer, status, error, *words)
    if isinstance(body.get("timestamp"), int) and 0 <= body["timestamp"] < 10**15:
        assert device_events(service, "dev-1", body["timestamp"]) == []


@pytest.mark.parametrize(
    "raw",
    [REPORT_AS_PRINTED, b"", b"[1, 2]", b'{"typeId": "a", "typeId": "b"}', b"\xff"],
    ids=["as-printed", "empty", "array", "duplicate-key", "not-utf8"],
)
def test_malformed_bodies_are_400_validation_errors(
    service: Service, keys: Keys, registry: Registry, raw: bytes
) -> None:
    answer = service.request("POST", path(), raw, key=keys.writer)

    assert_failure(answer, 400, 6, "body")


def test_every_broken_rule_is_named_in_one_answer(
    service: Service, keys: Keys, registry: Registry
) -> None:
    body = {"typeId": "a b", "severity": "3", "data": [], "colour": "red"}
    answer = service.request("POST", path(), body, key=keys.writer)

    assert_failure(answer, 400, 6)
    message = answer.json()["message"]
    for rule in [
        "typeId: required: a machine name",
        "description: required",
        "appId: required",
        "severity: must be an integer",
        "data: must be a JSON object",
        "timestamp: required",
        "colour: unknown field",
    ]:
        assert rule in message
    assert message.count("severity:") == 1


def test_missing_or_unknown_key_is_401(service: Service, registry: Registry) -> None:
    assert_failure(service.request("POST", path(), report()), 401, 4, "x-api-key")
    assert_failure(service.request("POST", path(), report(), key="emk_nope"), 401, 4, "not valid")


def test_keys_without_access_to_the_tenant_or_device_are_403(
    service: Service, keys: Keys, registry: Registry
) -> None:
    body = report()

    assert_failure(service.request("POST", path(), body, key=keys.other_tenant), 403, 4, "acme")
    assert_failure(service.request("POST", path(), body, key=keys.read), 403, 4, "Read")
    outside = service.request("POST", path(device="dev-2"), body, key=keys.sub1_writer)
    assert_failure(outside, 403, 5, "deviceId", "/root/sub1")
    disabled = service.request("POST", path(device="dev-off"), body, key=keys.writer)
    assert_failure(disabled, 403, 5, "deviceId", "disabled")
    assert device_events(service, "dev-2", body["timestamp"]) == []
    assert device_events(service, "dev-off", body["timestamp"]) == []


def test_unknown_tenant_or_device_is_404_before_the_body_is_read(
    service: Service, keys: Keys, registry: Registry
) -> None:
    no_tenant = service.request("POST", path(tenant="nope"), b"not json", key=keys.writer)
    assert_failure(no_tenant, 404, 4, "tenantId", "nope")
    no_device = service.request("POST", path(device="nope"), b"not json", key=keys.writer)
    assert_failure(no_device, 404, 5, "deviceId", "nope")
    # Another tenant's device is no device of this tenant.
    assert_failure(service.request("POST", path(device="g-1"), report(), key=keys.writer), 404, 5)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow_post(service: Service, keys: Keys, method: str) -> None:
    body = None if method in ("GET", "DELETE") else report()
    answer = service.request(method, path(), body, key=keys.writer)

    assert_failure(answer, 405, 6, "POST")
    assert answer.headers["allow"] == "POST"


def test_the_same_report_twice_is_409_and_different_data_is_a_new_event(
    service: Service, keys: Keys, registry: Registry
) -> None:
    body = report()
    first = service.request("POST", path(), body, key=keys.writer)
    again = service.request("POST", path(), body, key=keys.writer)

    assert first.status == 201
    assert_failure(again, 409, 6, first.json()["id"])
    assert again.headers["location"] == first.headers["location"]
    # Key order and number spelling do not make a report different; values and types do.
    reordered = (
        b'{"timestamp": %d, "data": {"active": true, "version": 2.50, "source": "Software"},'
    )
    reordered += b' "severity": 3, "appId": "%s", "description": "Software registered",'
    reordered += b' "typeId": "0045"}'
    same = service.request(
        "POST", path(), reordered % (body["timestamp"], DEVICE_APP.encode()), key=keys.writer
    )
    assert_failure(same, 409, 6)
    changed = report(timestamp=body["timestamp"], data={**body["data"], "version": 3})
    assert service.request("POST", path(), changed, key=keys.writer).status == 201
    described = report(timestamp=body["timestamp"], description="Software registered again")
    assert service.request("POST", path(), described, key=keys.writer).status == 201
    assert len(device_events(service, "dev-1", body["timestamp"])) == 3


def test_identical_concurrent_reports_store_one_event(
    service: Service, keys: Keys, registry: Registry
) -> None:
    body = report()
    senders = 8
    barrier = threading.Barrier(senders)

    def send(_: int) -> Response:
        barrier.wait()
        return service.request("POST", path(device="dev-race"), body, key=keys.writer)

    with ThreadPoolExecutor(senders) as pool:
        answers = list(pool.map(send, range(senders)))

    assert sorted(a.status for a in answers) == [201] + [409] * (senders - 1)
    winner = next(a for a in answers if a.status == 201).json()["id"]
    for answer in answers:
        if answer.status == 409:
            assert_failure(answer, 409, 6, winner)
    assert [r[0] for r in device_events(service, "dev-race", body["timestamp"])] == [winner]


def test_respond_async_is_202_and_the_event_follows(
    service: Service, keys: Keys, registry: Registry
) -> None:
    body = report()
    answer = service.request(
        "POST", path(), body, key=keys.writer, headers={"Prefer": "respond-async"}
    )

    assert answer.status == 202, answer.body
    assert answer.headers["preference-applied"] == "respond-async"
    accepted = answer.json()
    assert accepted["data"] == body["data"] and accepted["timestamp"] == body["timestamp"]
    # Pending or already stored, the same report again is a duplicate of the first.
    again = service.request(
        "POST", path(), body, key=keys.writer, headers={"Prefer": "respond-async"}
    )
    assert_failure(again, 409, 6, accepted["id"])
    stored = wait_for_event(service, keys.read, accepted["id"])
    assert stored["payload"]["data"] == body["data"]
    assert service.request("POST", path(), body, key=keys.writer).status == 409
    assert len(device_events(service, "dev-1", body["timestamp"])) == 1


def test_device_reports_reach_live_subscribers(
    service: Service, keys: Keys, registry: Registry
) -> None:
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
        call = stub.SubscribeEvents(
            event_stream_service_pb2.SubscribeEventsRequest(
                domain="/root/sub1", entity_type="Device", entity_id="dev-1"
            ),
            metadata=auth(keys.read),
            timeout=60,
        )
        messages = iter(call)
        assert next(messages).WhichOneof("kind") == "heartbeat"
        now = service.request("POST", path(), report(), key=keys.writer)
        later = service.request(
            "POST", path(), report(), key=keys.writer, headers={"Prefer": "respond-async"}
        )
        assert (now.status, later.status) == (201, 202)
        events = (m.event.id for m in messages if m.WhichOneof("kind") == "event")
        got = list(itertools.islice(events, 2))
        assert got == [now.json()["id"], later.json()["id"]]
        call.cancel()


def wait_for_event(service: Service, key: str, event_id: str) -> dict[str, Any]:
    """Polls until the background pass has stored the event (a deadline, not a timing claim)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = service.request("GET", f"/events/{event_id}", key=key)
        if answer.status == 200:
            return dict(answer.json())
        assert answer.status == 404, answer.body
        time.sleep(0.1)
    raise AssertionError(f"event {event_id} not stored in 30 s: {service.log_tail()}")


# --- gRPC ------------------------------------------------------------------------------------


def _timestamp(millis: int) -> Timestamp:
    return Timestamp(seconds=millis // 1000, nanos=millis % 1000 * 1_000_000)


def typed_report(**fields: Any) -> device_event_service_pb2.ReportDeviceEventRequest:
    values: dict[str, Any] = {
        "tenant_id": "acme",
        "device_id": "dev-1",
        "type_id": "0045",
        "description": "Software registered",
        "app_id": DEVICE_APP,
        "severity": event_pb2.SEVERITY_MEDIUM,
        "data_json": '{"source": "Software", "version": 2.5, "build": 7, "active": true}',
        "timestamp": _timestamp(next(_timestamps)),
    }
    values.update(fields)
    return device_event_service_pb2.ReportDeviceEventRequest(**values)


def test_typed_report_over_grpc(service: Service, keys: Keys, registry: Registry) -> None:
    request = typed_report()
    answer = registry.devices.ReportDeviceEvent(request, metadata=auth(keys.writer))

    assert not answer.pending
    event = answer.event
    assert (event.entity_type, event.entity_id, event.domain, event.app_id) == (
        "Device",
        "dev-1",
        "/root/sub1",
        DEVICE_APP,
    )
    assert event.timestamp == request.timestamp
    assert event.payload.data == b'{"source":"Software","version":2.5,"build":7,"active":true}'
    rest = service.request("GET", f"/events/{event.id}", key=keys.read).json()
    assert rest["payload"]["data"]["build"] == 7

    with pytest.raises(grpc.RpcError) as duplicate:
        registry.devices.ReportDeviceEvent(request, metadata=auth(keys.writer))
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert event.id in str(duplicate.value.details())


@pytest.mark.parametrize(
    ("fields", "code", "word"),
    [
        ({"type_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "typeId"),
        ({"data_json": "[1]"}, grpc.StatusCode.INVALID_ARGUMENT, "data"),
        ({"data_json": "{not json"}, grpc.StatusCode.INVALID_ARGUMENT, "data_json"),
        ({"severity": 0}, grpc.StatusCode.INVALID_ARGUMENT, "severity"),
        ({"app_id": "APP-OFF"}, grpc.StatusCode.PERMISSION_DENIED, "licence"),
        ({"tenant_id": "globex"}, grpc.StatusCode.PERMISSION_DENIED, "tenantId"),
        ({"device_id": "nope"}, grpc.StatusCode.NOT_FOUND, "deviceId"),
    ],
)
def test_typed_report_errors(
    registry: Registry, keys: Keys, fields: dict[str, Any], code: grpc.StatusCode, word: str
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        registry.devices.ReportDeviceEvent(typed_report(**fields), metadata=auth(keys.writer))

    assert failure.value.code() == code
    assert word in str(failure.value.details())


def test_typed_report_can_be_pending(service: Service, keys: Keys, registry: Registry) -> None:
    answer = registry.devices.ReportDeviceEvent(
        typed_report(respond_async=True), metadata=auth(keys.writer)
    )

    assert answer.pending
    assert wait_for_event(service, keys.read, answer.event.id)["entityId"] == "dev-1"


def test_registry_is_admin_only_and_scoped_to_the_keys_tenant(
    service: Service, keys: Keys, registry: Registry
) -> None:
    devices = registry.registry.ListDevices(
        registry_service_pb2.ListDevicesRequest(), metadata=auth(keys.admin)
    ).devices
    assert {d.id: d.enabled for d in devices} == {
        "dev-1": True,
        "dev-2": True,
        "dev-off": False,
        "dev-race": True,
    }
    assert all(d.tenant_id == "acme" and d.entity_type == "Device" for d in devices)
    globex = registry.registry.ListDevices(
        registry_service_pb2.ListDevicesRequest(), metadata=auth(keys.other_tenant)
    ).devices
    assert [d.id for d in globex] == ["g-1"]
    apps = registry.registry.ListApps(
        registry_service_pb2.ListAppsRequest(page_size=1), metadata=auth(keys.admin)
    )
    assert [a.id for a in apps.apps] == ["APP-OFF"] and not apps.apps[0].licence_active
    rest = registry.registry.ListApps(
        registry_service_pb2.ListAppsRequest(page_size=1, page_token=apps.next_page_token),
        metadata=auth(keys.admin),
    )
    assert [(a.id, a.licence_active) for a in rest.apps] == [(DEVICE_APP, True)]

    with pytest.raises(grpc.RpcError) as writer:
        registry.registry.ListDevices(
            registry_service_pb2.ListDevicesRequest(), metadata=auth(keys.writer)
        )
    assert writer.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as taken:
        registry.registry.CreateDevice(
            registry_service_pb2.CreateDeviceRequest(device=registry_pb2.Device(id="dev-1")),
            metadata=auth(keys.admin),
        )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as foreign:
        registry.registry.DisableDevice(
            registry_service_pb2.DisableDeviceRequest(device_id="g-1"), metadata=auth(keys.admin)
        )
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad:
        registry.registry.CreateDevice(
            registry_service_pb2.CreateDeviceRequest(
                device=registry_pb2.Device(id="has space", domain="root")
            ),
            metadata=auth(keys.admin),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "device.id" in str(bad.value.details()) and "device.domain" in str(bad.value.details())


# --- 202 across a restart, and an unexpected failure -----------------------------------------


def start_own_service(
    url: str, data_dir: Path, workers: int = 1, **env: str
) -> tuple[Service, str]:
    """A service of its own with tenant acme, an Admin key, device dev-1 in /root/sub1 and the
    documented app (registered over gRPC: each command-line call costs a Python start)."""
    running = Service(url, data_dir, env=env, workers=workers)
    key = running.create_key("acme", "Admin")
    running.start()
    with grpc.insecure_channel(running.grpc_target) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        stub.CreateDevice(
            registry_service_pb2.CreateDeviceRequest(
                device=registry_pb2.Device(id="dev-1", domain="/root/sub1")
            ),
            metadata=auth(key),
        )
        stub.CreateApp(
            registry_service_pb2.CreateAppRequest(app=registry_pb2.App(id=DEVICE_APP)),
            metadata=auth(key),
        )
    return running, key


@pytest.fixture(params=["sqlite", "postgresql", "sqlite-workers", "postgresql-workers"])
def quiet_service(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_databases: Any
) -> Iterator[tuple[Service, str]]:
    """An own service whose periodic pass for pending reports never comes during a test: it
    only runs when the service starts (in each of two workers at once, for `-workers`)."""
    backend, _, layout = request.param.partition("-")
    url = (
        f"sqlite:///{tmp_path / 'events.db'}" if backend == "sqlite" else str(postgres_databases())
    )
    running, key = start_own_service(
        url, tmp_path, 2 if layout else 1, EVENTMGMT_PENDING_INTERVAL="86400"
    )
    yield running, key
    running.stop()


def test_a_report_answered_202_becomes_an_event_after_a_restart(
    quiet_service: tuple[Service, str],
) -> None:
    service, key = quiet_service
    answer = service.request(
        "POST", path(), DEVICE_REPORT, key=key, headers={"Prefer": "respond-async"}
    )
    assert answer.status == 202, answer.body
    event_id = answer.json()["id"]
    assert service.request("GET", f"/events/{event_id}", key=key).status == 404

    assert service.stop() == 0
    assert stored_rows(service, "SELECT id FROM pending_device_events") == [(event_id,)]
    service.grpc_port, service.rest_port, service.admin_port = free_port(), free_port(), free_port()
    service.start()

    stored = service.request("GET", f"/events/{event_id}", key=key)
    assert stored.status == 200, stored.body
    assert stored.json()["payload"]["data"] == DEVICE_REPORT["data"]
    assert stored_rows(service, "SELECT id FROM pending_device_events") == []
    again = service.request("POST", path(), DEVICE_REPORT, key=key)
    assert_failure(again, 409, 6, event_id)


def test_an_unexpected_failure_is_500_with_error_minus_1(tmp_path: Path) -> None:
    service, key = start_own_service(f"sqlite:///{tmp_path / 'events.db'}", tmp_path)
    try:
        # A real fault under the running server: the table of apps disappears.
        with sqlite3.connect(tmp_path / "events.db") as connection:
            connection.execute("ALTER TABLE tenant_apps RENAME TO tenant_apps_lost")

        answer = service.request(
            "POST", path(), DEVICE_REPORT, key=key, headers={"x-request-id": "incident-7"}
        )
    finally:
        service.stop()

    # The incident is the request's id: the client has it in the answer's header too.
    assert_failure(answer, 500, -1, "internal error (incident incident-7)")
    assert answer.headers["x-request-id"] == "incident-7"
    assert "incident incident-7" in (service.data_dir / "serve.log").read_text()
