"""EventService in process: our grpc.aio server from `create_server`, called with a real stub
through pytest-grpc's channel and stub fixtures, on an SQLite store."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from helpers import CALLERS_EVENTS, STANDARD_EVENT_ID, free_port
from persistence.store import Store
from service.domain.access import Role
from service.server import create_server
from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

Metadata = tuple[tuple[str, str], ...]


# --- pytest-grpc fixtures, overridden for an aio server --------------------------------------


@pytest.fixture(scope="module")
def grpc_addr() -> str:
    # pytest-grpc's own grpc_addr leaves its probe socket open; free_port closes it.
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("grpc-inprocess") / "events.db"
    opened = Store(f"sqlite:///{path}")
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def grpc_server(grpc_addr: str, store: Store) -> Iterator[grpc.aio.Server]:
    """Our aio server from create_server, on its own event loop in a background thread."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    async def start() -> None:
        server, _ = create_server(store, grpc_addr)
        await server.start()
        holder["server"] = server

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as error:
            failure.append(error)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="grpc-aio-server", daemon=True)
    thread.start()
    assert started.wait(30), "the aio server did not start in 30 s"
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    server: grpc.aio.Server = holder["server"]
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


@pytest.fixture(scope="module")
def grpc_stub_cls() -> type[event_service_pb2_grpc.EventServiceStub]:
    return event_service_pb2_grpc.EventServiceStub


# --- keys ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def make_key(store: Store) -> Callable[..., Metadata]:
    """Creates a key (and its tenant) and returns the call metadata that carries it."""

    def make(
        tenant: str, role: Role = Role.READ_WRITE, domain: str = "/", name: str = "tester"
    ) -> Metadata:
        store.keys.create_tenant(tenant, tenant.title())
        return (("x-api-key", store.keys.create_key(tenant, name, role, domain).secret),)

    return make


def fresh_tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def new_event(**fields: Any) -> event_pb2.Event:
    return event_pb2.Event(**fields)


def create(stub: Any, metadata: Metadata, **fields: Any) -> event_pb2.Event:
    response = stub.CreateEvent(
        event_service_pb2.CreateEventRequest(event=new_event(**fields)), metadata=metadata
    )
    return response.event


def rpc_error(call: Callable[[], Any]) -> tuple[grpc.RpcError, Any]:
    """Runs a call that must fail; returns the error and its google.rpc.Status."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value, rpc_status.from_call(caught.value)


def details(status: Any) -> tuple[error_details_pb2.ErrorInfo, dict[str, str]]:
    info = error_details_pb2.ErrorInfo()
    violations: dict[str, str] = {}
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            packed.Unpack(info)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            packed.Unpack(bad_request)
            violations.update({v.field: v.description for v in bad_request.field_violations})
    return info, violations


# --- tests -----------------------------------------------------------------------------------


def test_create_get_list_update_acknowledge_round_trip(
    grpc_stub: Any, make_key: Callable[..., Metadata]
) -> None:
    tenant = fresh_tenant()
    key = make_key(tenant, name="operator")
    source = struct_pb2.Struct()
    source.update({"thingName": "pump", "thingType": "Pump", "limits": {"max": 4.5}})
    when = timestamp_pb2.Timestamp(seconds=1532844569, nanos=743_000_000)
    created = create(
        grpc_stub,
        key,
        description="Error happened in the engine",
        severity=event_pb2.SEVERITY_HIGH,
        code="10042",
        correlation_id="corr-1",
        entity_type="Device",
        entity_id="pump-7",
        domain="/root/sub1",
        timestamp=when,
        source_object=source,
        classification=event_pb2.CLASSIFICATION_ALARM,
        category="YOUR.CATEGORY",
        acknowledgement_required=True,
        payload=event_pb2.Payload(content_type="application/json", data=b'{"n":1}'),
    )
    assert str(uuid.UUID(created.id)) == created.id
    assert created.tenant_id == tenant
    assert created.etag == 1
    assert created.type_id == STANDARD_EVENT_ID
    assert created.timestamp == when
    assert created.source_object == source
    assert created.payload.data == b'{"n":1}'
    assert not created.acknowledged

    fetched = grpc_stub.GetEvent(
        event_service_pb2.GetEventRequest(id=created.id), metadata=key
    ).event
    assert fetched == created

    # A 2018 event lies outside the default 7-day window: ask for its time.
    listed = grpc_stub.ListEvents(
        event_service_pb2.ListEventsRequest(start_time=when, filter=CALLERS_EVENTS), metadata=key
    )
    assert [e.id for e in listed.events] == [created.id]
    assert listed.total_size == 1

    updated = grpc_stub.UpdateEvent(
        event_service_pb2.UpdateEventRequest(
            id=created.id,
            event=new_event(description="Engine fixed", etag=1, severity=event_pb2.SEVERITY_LOW),
            update_fields=["description", "severity"],
        ),
        metadata=key,
    ).event
    assert (updated.description, updated.severity, updated.etag) == (
        "Engine fixed",
        event_pb2.SEVERITY_LOW,
        2,
    )
    assert updated.code == "10042"
    assert updated.source_object == source

    acknowledged = grpc_stub.AcknowledgeEvent(
        event_service_pb2.AcknowledgeEventRequest(id=created.id), metadata=key
    ).event
    assert acknowledged.acknowledged
    assert acknowledged.acknowledged_by == "operator"
    assert acknowledged.HasField("acknowledged_at")
    assert acknowledged.etag == 3
    assert (
        grpc_stub.GetEvent(event_service_pb2.GetEventRequest(id=created.id), metadata=key).event
        == acknowledged
    )


def test_list_pages_with_tokens_and_exact_total(
    grpc_stub: Any, make_key: Callable[..., Metadata]
) -> None:
    key = make_key(fresh_tenant())
    created = [
        create(
            grpc_stub,
            key,
            description=f"event {i}",
            timestamp=timestamp_pb2.Timestamp(seconds=1_700_000_000 + i),
        )
        for i in range(7)
    ]
    create(grpc_stub, make_key(fresh_tenant()), description="someone else's")

    since = timestamp_pb2.Timestamp(seconds=1_700_000_000)  # before the 7-day default window
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = grpc_stub.ListEvents(
            event_service_pb2.ListEventsRequest(
                page_size=3, page_token=token, start_time=since, filter=CALLERS_EVENTS
            ),
            metadata=key,
        )
        pages += 1
        assert page.total_size == 7
        seen += [e.id for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    newest_first = [e.id for e in reversed(created)]
    assert seen == newest_first

    oldest_first = grpc_stub.ListEvents(
        event_service_pb2.ListEventsRequest(
            page_size=10, order_by="timestamp asc", start_time=since, filter=CALLERS_EVENTS
        ),
        metadata=key,
    )
    assert [e.id for e in oldest_first.events] == newest_first[::-1]
    assert oldest_first.next_page_token == ""


def test_invalid_argument_carries_error_info_and_field_violations(
    grpc_stub: Any, make_key: Callable[..., Metadata]
) -> None:
    key = make_key(fresh_tenant())
    error, status = rpc_error(
        lambda: create(
            grpc_stub,
            key,
            description="x" * 4097,
            correlation_id="c" * 129,
            domain="no/leading/slash",
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status.code == code_pb2.INVALID_ARGUMENT
    info, violations = details(status)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "eventmgmt.io")
    assert violations == {
        "description": "at most 4096 characters",
        "correlationId": "at most 128 characters",
        "domain": "must be / or a path such as /root/sub1 (letters, digits, _ . -)",
    }
    listed = grpc_stub.ListEvents(
        event_service_pb2.ListEventsRequest(filter=CALLERS_EVENTS), metadata=key
    )
    assert listed.total_size == 0


@pytest.mark.parametrize(
    ("request_factory", "method", "field"),
    [
        (lambda: event_service_pb2.GetEventRequest(id="not-a-uuid"), "GetEvent", "id"),
        (lambda: event_service_pb2.ListEventsRequest(page_token="%%%"), "ListEvents", "page_token"),
        (lambda: event_service_pb2.ListEventsRequest(page_size=100_000), "ListEvents", "page_size"),
        (lambda: event_service_pb2.ListEventsRequest(order_by="colour"), "ListEvents", "sort"),
    ],
)
def test_bad_request_fields_are_named(
    grpc_stub: Any,
    make_key: Callable[..., Metadata],
    request_factory: Callable[[], Any],
    method: str,
    field: str,
) -> None:
    key = make_key(fresh_tenant())
    error, status = rpc_error(lambda: getattr(grpc_stub, method)(request_factory(), metadata=key))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = details(status)
    assert list(violations) == [field]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "API_KEY_MISSING"),
        ((("x-api-key", "emk_0000_not-a-real-key"),), "API_KEY_INVALID"),
    ],
)
def test_calls_without_a_valid_key_are_unauthenticated(
    grpc_stub: Any, metadata: Metadata, reason: str
) -> None:
    error, status = rpc_error(
        lambda: grpc_stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=metadata)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(status)[0].reason == reason


def test_a_revoked_key_is_refused(grpc_stub: Any, store: Store) -> None:
    tenant = fresh_tenant()
    store.keys.create_tenant(tenant, tenant)
    issued = store.keys.create_key(tenant, "gone", Role.ADMIN, "/")
    store.keys.revoke_key(issued.key_id)
    error, _ = rpc_error(
        lambda: grpc_stub.ListEvents(
            event_service_pb2.ListEventsRequest(), metadata=(("x-api-key", issued.secret),)
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_read_key_cannot_create(grpc_stub: Any, make_key: Callable[..., Metadata]) -> None:
    tenant = fresh_tenant()
    reader = make_key(tenant, Role.READ)
    error, status = rpc_error(lambda: create(grpc_stub, reader, description="nope"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(status)[0].reason == "MISSING_PRIVILEGE_EVENTS_CREATE"
    listed = grpc_stub.ListEvents(
        event_service_pb2.ListEventsRequest(filter=CALLERS_EVENTS), metadata=reader
    )
    assert listed.total_size == 0


def test_a_domain_key_cannot_acknowledge_outside_its_subtree(
    grpc_stub: Any, make_key: Callable[..., Metadata]
) -> None:
    tenant = fresh_tenant()
    admin = make_key(tenant, Role.ADMIN)
    sub1 = make_key(tenant, Role.READ_WRITE, "/root/sub1")
    outside = create(grpc_stub, admin, domain="/root/sub2", description="elsewhere")
    error, status = rpc_error(
        lambda: grpc_stub.AcknowledgeEvent(
            event_service_pb2.AcknowledgeEventRequest(id=outside.id), metadata=sub1
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(status)[0].reason == "NOT_AUTHORIZED_DOMAIN"
    error, _ = rpc_error(
        lambda: grpc_stub.GetEvent(event_service_pb2.GetEventRequest(id=outside.id), metadata=sub1)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    stored = grpc_stub.GetEvent(
        event_service_pb2.GetEventRequest(id=outside.id), metadata=admin
    ).event
    assert not stored.acknowledged
    assert stored.etag == 1


def test_another_tenants_event_is_not_found(
    grpc_stub: Any, make_key: Callable[..., Metadata]
) -> None:
    mine = create(grpc_stub, make_key(fresh_tenant()), description="private")
    stranger = make_key(fresh_tenant(), Role.ADMIN)
    for call in (
        lambda: grpc_stub.GetEvent(
            event_service_pb2.GetEventRequest(id=mine.id), metadata=stranger
        ),
        lambda: grpc_stub.AcknowledgeEvent(
            event_service_pb2.AcknowledgeEventRequest(id=mine.id), metadata=stranger
        ),
    ):
        error, status = rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert details(status)[0].reason == "EVENT_NOT_FOUND"


def test_a_stale_etag_update_is_aborted_and_changes_nothing(
    grpc_stub: Any, make_key: Callable[..., Metadata]
) -> None:
    key = make_key(fresh_tenant())
    created = create(grpc_stub, key, description="original")
    current = grpc_stub.UpdateEvent(
        event_service_pb2.UpdateEventRequest(
            id=created.id,
            event=new_event(description="second", etag=1),
            update_fields=["description"],
        ),
        metadata=key,
    ).event
    assert current.etag == 2

    error, status = rpc_error(
        lambda: grpc_stub.UpdateEvent(
            event_service_pb2.UpdateEventRequest(
                id=created.id,
                event=new_event(description="lost update", etag=1),
                update_fields=["description"],
            ),
            metadata=key,
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert details(status)[0].reason == "ETAG_MISMATCH"
    after = grpc_stub.GetEvent(event_service_pb2.GetEventRequest(id=created.id), metadata=key).event
    assert after == current


def test_health_check_answers_without_a_key(grpc_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(grpc_channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
