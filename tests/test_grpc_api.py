"""EventService over gRPC against the real server process, and the process's lifecycle:
durable answers, graceful shutdown, health and reflection."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from helpers import CALLERS_EVENTS, Service, auth, grpc_details
from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

if TYPE_CHECKING:
    from helpers import Keys

pytestmark = pytest.mark.integration


@pytest.fixture
def stub(channel: grpc.Channel) -> event_service_pb2_grpc.EventServiceStub:
    return event_service_pb2_grpc.EventServiceStub(channel)


def test_event_lifecycle_over_grpc(
    stub: event_service_pb2_grpc.EventServiceStub, keys: Keys
) -> None:
    draft = event_pb2.Event(
        description="pump overheating",
        severity=event_pb2.SEVERITY_HIGH,
        entity_type="Device",
        entity_id="pump-7",
        code="10042",
        classification=event_pb2.CLASSIFICATION_ALARM,
        acknowledgement_required=True,
    )
    draft.source_object.update({"thingName": "pump-7", "rule": "temp"})
    created = stub.CreateEvent(
        event_service_pb2.CreateEventRequest(event=draft), metadata=auth(keys.writer)
    ).event

    assert created.id and created.etag == 1 and created.tenant_id == "acme"
    assert created.timestamp.seconds > 0
    got = stub.GetEvent(
        event_service_pb2.GetEventRequest(id=created.id), metadata=auth(keys.read)
    ).event
    assert got == created

    changed = event_pb2.Event(description="pump cooled down", etag=1)
    updated = stub.UpdateEvent(
        event_service_pb2.UpdateEventRequest(id=created.id, event=changed),
        metadata=auth(keys.writer),
    ).event
    assert updated.etag == 2 and updated.description == "pump cooled down"
    assert updated.severity == event_pb2.SEVERITY_HIGH

    acked = stub.AcknowledgeEvent(
        event_service_pb2.AcknowledgeEventRequest(id=created.id), metadata=auth(keys.writer)
    ).event
    assert acked.acknowledged and acked.acknowledged_by == "test-key" and acked.etag == 3


def test_list_pages_with_tokens(
    service: Service, stub: event_service_pb2_grpc.EventServiceStub
) -> None:
    key = service.create_key("paging-tenant", "ReadWrite")
    for number in range(5):
        stub.CreateEvent(
            event_service_pb2.CreateEventRequest(
                event=event_pb2.Event(description=f"e{number}", severity=number)
            ),
            metadata=auth(key),
        )

    seen, token = [], ""
    while True:
        page = stub.ListEvents(
            event_service_pb2.ListEventsRequest(
                page_size=2, page_token=token, order_by="severity asc", filter=CALLERS_EVENTS
            ),
            metadata=auth(key),
        )
        assert page.total_size == 5
        seen += [e.description for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["e0", "e1", "e2", "e3", "e4"]


def test_errors_carry_reason_and_field_violations(
    stub: event_service_pb2_grpc.EventServiceStub, keys: Keys
) -> None:
    with pytest.raises(grpc.RpcError) as invalid:
        stub.CreateEvent(
            event_service_pb2.CreateEventRequest(
                event=event_pb2.Event(description="x", domain="no-slash")
            ),
            metadata=auth(keys.writer),
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "domain" in grpc_details(invalid.value)[1]

    with pytest.raises(grpc.RpcError) as bad_size:
        stub.ListEvents(
            event_service_pb2.ListEventsRequest(page_size=5000), metadata=auth(keys.read)
        )
    assert bad_size.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in grpc_details(bad_size.value)[1]

    with pytest.raises(grpc.RpcError) as bad_token:
        stub.ListEvents(
            event_service_pb2.ListEventsRequest(page_token="garbage"), metadata=auth(keys.read)
        )
    assert "page_token" in grpc_details(bad_token.value)[1]

    with pytest.raises(grpc.RpcError) as unauthenticated:
        stub.GetEvent(event_service_pb2.GetEventRequest(id="x"))
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_details(unauthenticated.value)[0] == "API_KEY_MISSING"

    with pytest.raises(grpc.RpcError) as read_only:
        stub.CreateEvent(
            event_service_pb2.CreateEventRequest(event=event_pb2.Event()), metadata=auth(keys.read)
        )
    assert read_only.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_details(read_only.value)[0] == "MISSING_PRIVILEGE_EVENTS_CREATE"


def test_stale_etag_changes_nothing(
    stub: event_service_pb2_grpc.EventServiceStub, keys: Keys
) -> None:
    created = stub.CreateEvent(
        event_service_pb2.CreateEventRequest(event=event_pb2.Event(description="before")),
        metadata=auth(keys.writer),
    ).event

    with pytest.raises(grpc.RpcError) as stale:
        stub.UpdateEvent(
            event_service_pb2.UpdateEventRequest(
                id=created.id, event=event_pb2.Event(description="after", etag=7)
            ),
            metadata=auth(keys.writer),
        )

    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert grpc_details(stale.value)[0] == "ETAG_MISMATCH"
    again = stub.GetEvent(
        event_service_pb2.GetEventRequest(id=created.id), metadata=auth(keys.read)
    ).event
    assert again.description == "before" and again.etag == 1


def test_cross_tenant_ids_are_not_found(
    stub: event_service_pb2_grpc.EventServiceStub, keys: Keys
) -> None:
    created = stub.CreateEvent(
        event_service_pb2.CreateEventRequest(event=event_pb2.Event(description="mine")),
        metadata=auth(keys.writer),
    ).event

    for call, request in (
        (stub.GetEvent, event_service_pb2.GetEventRequest(id=created.id)),
        (stub.AcknowledgeEvent, event_service_pb2.AcknowledgeEventRequest(id=created.id)),
        (
            stub.UpdateEvent,
            event_service_pb2.UpdateEventRequest(
                id=created.id, event=event_pb2.Event(description="theirs")
            ),
        ),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call(request, metadata=auth(keys.other_tenant))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_need_no_key(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {"eventmgmt.v1.EventService", "eventmgmt.v1.EventRestService"} <= names


@pytest.fixture
def own_service(tmp_path: Path) -> Iterator[Service]:
    """A server of its own, on SQLite, for tests that kill or stop it."""
    running = Service(f"sqlite:///{tmp_path / 'events.db'}", tmp_path)
    running.start()
    yield running
    if running.process and running.process.poll() is None:
        running.stop(signal.SIGKILL)


def test_a_201_survives_kill_9(own_service: Service) -> None:
    key = own_service.create_key("durable", "ReadWrite")
    ids = [
        own_service.request(
            "POST", "/events", {"description": f"d{n}", "entityId": "e"}, key=key
        ).json()["id"]
        for n in range(20)
    ]

    own_service.stop(signal.SIGKILL)
    own_service.start()  # on the same ports: the killed server's gateway went with it

    for event_id in ids:
        assert own_service.request("GET", f"/events/{event_id}", key=key).status == 200


def test_sigterm_stops_server_and_gateway(own_service: Service) -> None:
    assert own_service.stop(signal.SIGTERM) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(own_service.rest_url + "/events", timeout=2)
