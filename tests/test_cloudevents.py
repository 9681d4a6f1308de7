"""CloudEvents 1.0, opt-in, end to end: the protobuf format for gRPC subscribers, structured
JSON over the REST stream through Envoy and over MQTT, with one mapping (id, source from
tenant and domain, type, time, subject from the entity id, the event as data)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from test_live import EventStream, MqttInbox, Subscription, create, fresh_root

from helpers import STANDARD_EVENT_ID, Keys, Service, mqtt_publishing_service
from service.v1 import event_pb2, event_stream_service_pb2

pytestmark = pytest.mark.integration


def test_grpc_subscribers_may_ask_for_the_cloudevents_protobuf_format(
    channel: grpc.Channel, keys: Keys
) -> None:
    root = fresh_root()
    subscription = Subscription(
        channel,
        keys.read,
        domain=root,
        format=event_stream_service_pb2.EVENT_FORMAT_CLOUDEVENTS,
    )
    try:
        stored = create(
            channel,
            keys.writer,
            description="pump",
            domain=f"{root}/a",
            entity_id="pump-7",
            severity=2,
        )
        (first,) = _cloud_events(subscription, 1)
    finally:
        subscription.cancel()
    assert first.WhichOneof("kind") == "cloud_event"
    cloud = first.cloud_event
    assert cloud.id == stored.id
    assert cloud.spec_version == "1.0"
    assert cloud.source == f"/tenants/acme/domains{root}/a"
    assert cloud.type == STANDARD_EVENT_ID
    assert cloud.attributes["time"].ce_timestamp == stored.timestamp
    assert cloud.attributes["subject"].ce_string == "pump-7"
    assert cloud.attributes["datacontenttype"].ce_string == "application/protobuf"
    data = event_pb2.Event()
    assert cloud.proto_data.Unpack(data)
    assert data == stored


def _cloud_events(
    subscription: Subscription, count: int
) -> list[event_stream_service_pb2.SubscribeEventsResponse]:
    found = []
    while len(found) < count:
        message = subscription.next()
        assert message is not None
        if message.WhichOneof("kind") == "cloud_event":
            found.append(message)
        else:
            assert message.WhichOneof("kind") == "heartbeat", message
    return found


def test_an_event_without_entity_has_no_subject() -> None:
    from service import cloudevents
    from service.convert import event_to_proto
    from service.domain.events import Event

    event = Event(id="e1", tenant_id="acme", domain="/", timestamp=1_000_000)
    document = cloudevents.structured(event, {"id": "e1"})
    assert "subject" not in document
    assert document["source"] == "/tenants/acme/domains/"
    assert document["time"] == "1970-01-01T00:00:01.000Z"
    assert "subject" not in cloudevents.to_proto(event, event_to_proto(event)).attributes


def test_rest_stream_format_cloudevents_is_structured_json(service: Service, keys: Keys) -> None:
    root = fresh_root()
    stream = EventStream(service, keys.read, f"domain={root}&format=cloudevents")
    try:
        assert stream.response.status == 200
        assert stream.next()["event"] == "heartbeat"
        answer = service.request(
            "POST",
            "/events",
            {"description": "valve", "domain": f"{root}/x", "entityId": "valve-1", "severity": 3},
            keys.writer,
        )
        assert answer.status == 201, answer.body
        stored = answer.json()
        (message,) = stream.events(1)
    finally:
        stream.close()
    cloud = message["data"]
    assert message["id"].isdigit()  # the cursor, as without CloudEvents
    assert {k: v for k, v in cloud.items() if k != "data"} == {
        "specversion": "1.0",
        "id": stored["id"],
        "source": f"/tenants/acme/domains{root}/x",
        "type": STANDARD_EVENT_ID,
        "time": stored["timestamp"],
        "subject": "valve-1",
        "datacontenttype": "application/json",
    }
    assert cloud["data"] == stored

    refused = service.request("GET", "/liveEvents?format=xml", key=keys.read)
    assert refused.status == 400
    assert refused.json()["details"][1]["fieldViolations"][0]["field"] == "format"


@pytest.fixture
def cloudevents_mqtt_service(tmp_path: Path) -> Iterator[Service]:
    yield from mqtt_publishing_service(tmp_path, "--mqtt-format", "cloudevents")


def test_mqtt_format_cloudevents(cloudevents_mqtt_service: Service) -> None:
    from helpers import mqtt_broker_url

    tenant = f"ce-{uuid.uuid4().hex[:8]}"
    key = cloudevents_mqtt_service.create_key(tenant, "ReadWrite")
    inbox = MqttInbox(mqtt_broker_url(), f"event/{tenant}/#")
    try:
        with grpc.insecure_channel(cloudevents_mqtt_service.grpc_target) as channel:
            stored = create(channel, key, description="door", domain="/site", entity_id="d-1")
        ((topic, cloud),) = inbox.take(1)
    finally:
        inbox.close()
    assert topic == f"event/{tenant}/site/{STANDARD_EVENT_ID}"
    assert cloud["specversion"] == "1.0"
    assert cloud["id"] == stored.id
    assert cloud["source"] == f"/tenants/{tenant}/domains/site"
    assert cloud["type"] == STANDARD_EVENT_ID
    assert cloud["subject"] == "d-1"
    assert cloud["data"]["id"] == stored.id
    assert cloud["data"]["tenantId"] == tenant
    assert cloud["data"]["description"] == "door"
