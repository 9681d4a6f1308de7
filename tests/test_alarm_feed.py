"""Alarm transitions on the live feed, end to end: acknowledgements and clearings delivered as
their own message kind beside creations over gRPC, server-sent events through the real Envoy
and MQTT, filtered by the alarm's fields after the change, resumable by cursor from memory and
from the store, and across two server processes on one database."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_live import EventStream, MqttInbox, Subscription, create

from helpers import Keys, Replicas, Service, auth
from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

pytestmark = pytest.mark.integration


def fresh_root() -> str:
    return f"/a{uuid.uuid4().hex[:8]}"


def raise_alarm(channel: grpc.Channel, key: str, domain: str, **fields: Any) -> event_pb2.Event:
    # Each alarm its own code: a repeated alarm of one key counts into the open one
    # (README: Alarms, de-duplication).
    fields.setdefault("code", str(10_000 + uuid.uuid4().int % 10**9))
    return create(
        channel,
        key,
        entity_id="pump-1",
        domain=domain,
        classification=event_pb2.CLASSIFICATION_ALARM,
        **fields,
    )


def acknowledge(channel: grpc.Channel, key: str, event_id: str) -> event_pb2.Event:
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    request = event_service_pb2.AcknowledgeEventRequest(id=event_id)
    return stub.AcknowledgeEvent(request, metadata=auth(key)).event


def clear(channel: grpc.Channel, key: str, event_id: str) -> event_pb2.Event:
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    return stub.ClearEvent(
        event_service_pb2.ClearEventRequest(id=event_id), metadata=auth(key)
    ).event


def delivered(subscription: Subscription, count: int) -> list[Any]:
    """The next `count` events and transitions, skipping heartbeats."""
    found: list[Any] = []
    while len(found) < count:
        message = subscription.next()
        assert message is not None, f"stream ended after {len(found)} of {count} messages"
        if message.WhichOneof("kind") in ("event", "transition"):
            found.append(message)
    return found


def kinds(messages: list[Any]) -> list[tuple[str, str]]:
    """(kind, event id or change) of each message."""
    return [
        ("event", m.event.id)
        if m.WhichOneof("kind") == "event"
        else ("transition", m.transition.change)
        for m in messages
    ]


def test_transitions_reach_grpc_subscribers_in_commit_order_and_resume_by_cursor(
    channel: grpc.Channel, keys: Keys
) -> None:
    root = fresh_root()
    everything = Subscription(channel, keys.read, domain=root)
    cleared_only = Subscription(
        channel, keys.read, domain=root, statuses=[event_pb2.ALARM_STATUS_CLEARED]
    )
    other_tenant = Subscription(channel, keys.other_tenant, domain=root)

    alarm = raise_alarm(channel, keys.writer, root, severity=event_pb2.SEVERITY_HIGH)
    acknowledge(channel, keys.writer, alarm.id)
    acknowledge(channel, keys.writer, alarm.id)  # twice: nothing changes, nothing delivered
    cleared = clear(channel, keys.admin, alarm.id)
    clear(channel, keys.admin, alarm.id)
    marker = create(channel, keys.writer, entity_id="m", domain=root, description="marker")

    got = delivered(everything, 4)
    assert kinds(got) == [
        ("event", alarm.id),
        ("transition", "ACKNOWLEDGED"),
        ("transition", "CLEARED"),
        ("event", marker.id),
    ]
    cursors = [int(m.cursor) for m in got]
    assert cursors == sorted(cursors) and len(set(cursors)) == 4
    acked, clearing = got[1].transition, got[2].transition
    assert (acked.from_status, acked.to_status) == (
        event_pb2.ALARM_STATUS_ACTIVE,
        event_pb2.ALARM_STATUS_ACKNOWLEDGED,
    )
    assert acked.by == "test-key" and acked.event.id == alarm.id
    assert acked.event.status == event_pb2.ALARM_STATUS_ACKNOWLEDGED
    assert (clearing.from_status, clearing.to_status) == (
        event_pb2.ALARM_STATUS_ACKNOWLEDGED,
        event_pb2.ALARM_STATUS_CLEARED,
    )
    assert clearing.event == cleared and clearing.time == cleared.cleared_at

    # The filter decides on the alarm after the change: only the clearing is CLEARED.
    only = delivered(cleared_only, 1)
    assert kinds(only) == [("transition", "CLEARED")] and only[0].cursor == got[2].cursor
    everything.cancel()
    cleared_only.cancel()

    # Resuming after the creation delivers exactly the transitions and the marker.
    resumed = Subscription(channel, keys.read, domain=root, cursor=got[0].cursor)
    assert [m.cursor for m in delivered(resumed, 3)] == [m.cursor for m in got[1:]]
    resumed.cancel()

    # Another tenant's subscriber saw nothing of it: its first message after the start is
    # its own event.
    mine = create(channel, keys.other_tenant, entity_id="x", domain=root)
    assert kinds(delivered(other_tenant, 1)) == [("event", mine.id)]
    other_tenant.cancel()


def test_transitions_over_sse_resume_with_last_event_id(
    service: Service, channel: grpc.Channel, keys: Keys
) -> None:
    root = fresh_root()
    stream = EventStream(service, keys.read, f"domain={root}&heartbeatSeconds=1")
    assert stream.next()["event"] == "heartbeat"
    alarm = raise_alarm(channel, keys.writer, root)
    acknowledge(channel, keys.writer, alarm.id)
    clear(channel, keys.writer, alarm.id)

    def messages(events: EventStream, count: int) -> list[dict[str, Any]]:
        found = []
        while len(found) < count:
            message = events.next()
            if message["event"] in ("event", "transition"):
                found.append(message)
        return found

    got = messages(stream, 3)
    stream.close()
    assert [m["event"] for m in got] == ["event", "transition", "transition"]
    clearing = got[2]["data"]
    assert clearing["change"] == "CLEARED"
    assert (clearing["fromStatus"], clearing["toStatus"]) == ("ACKNOWLEDGED", "CLEARED")
    assert clearing["by"] == "test-key" and clearing["time"] == clearing["event"]["clearedAt"]
    assert clearing["event"]["id"] == alarm.id and clearing["event"]["status"] == "CLEARED"
    assert clearing["event"]["_links"]["self"]["href"].endswith(f"/events/{alarm.id}")

    resumed = EventStream(
        service, keys.read, f"domain={root}&statuses=cleared", **{"Last-Event-ID": got[0]["id"]}
    )
    again = messages(resumed, 1)
    resumed.close()
    assert again[0]["id"] == got[2]["id"] and again[0]["data"] == clearing

    bad = service.request("GET", "/liveEvents?statuses=GONE", key=keys.read)
    assert bad.status == 400 and "statuses" in bad.body.decode()


@pytest.fixture
def small_buffer_service(tmp_path: Path) -> Iterator[Service]:
    """A server that keeps only 20 feed positions in memory, gRPC only."""
    running = Service(
        f"sqlite:///{tmp_path / 'events.db'}",
        tmp_path,
        gateway=False,
        env={"EVENTMGMT_LIVE_BUFFER": "20"},
    )
    running.start()
    yield running
    running.stop()


def test_a_subscriber_catches_up_transitions_from_the_store(
    small_buffer_service: Service,
) -> None:
    key = small_buffer_service.create_key("catchup", "ReadWrite")
    with grpc.insecure_channel(small_buffer_service.grpc_target) as channel:
        start = Subscription(channel, key)
        start.cancel()
        alarms = [raise_alarm(channel, key, "/", description=f"a{n}") for n in range(3)]
        clear(channel, key, alarms[1].id)
        noise = [create(channel, key, entity_id="n", description=f"n{n}") for n in range(40)]
        acknowledge(channel, key, alarms[0].id)
        # Far more positions than memory keeps lie between: this reads the store.
        caught_up = Subscription(channel, key, cursor=start.start_cursor)
        got = delivered(caught_up, 3 + 1 + 40 + 1)
        caught_up.cancel()
        assert kinds(got) == [
            *(("event", a.id) for a in alarms),
            ("transition", "CLEARED"),
            *(("event", n.id) for n in noise),
            ("transition", "ACKNOWLEDGED"),
        ]
        # Caught up from the store, a transition carries the alarm as it is now, with the
        # status the transition left it with.
        assert got[3].transition.event.id == alarms[1].id
        assert got[-1].transition.event.status == event_pb2.ALARM_STATUS_ACKNOWLEDGED
        statuses = Subscription(
            channel, key, cursor=start.start_cursor, statuses=[event_pb2.ALARM_STATUS_CLEARED]
        )
        # The cleared alarm's creation matches (it is CLEARED now), then its clearing.
        assert kinds(delivered(statuses, 2)) == [
            ("event", alarms[1].id),
            ("transition", "CLEARED"),
        ]
        statuses.cancel()


def test_a_transition_read_back_from_the_store_carries_the_status_it_left(
    small_buffer_service: Service,
) -> None:
    key = small_buffer_service.create_key("left-by", "ReadWrite")
    with grpc.insecure_channel(small_buffer_service.grpc_target) as channel:
        start = Subscription(channel, key)
        start.cancel()
        alarm = raise_alarm(channel, key, "/", description="acked, then cleared")
        acknowledge(channel, key, alarm.id)
        for n in range(40):
            create(channel, key, entity_id="n", description=f"n{n}")
        cleared = clear(channel, key, alarm.id)
        # Far more positions than memory keeps lie between: this reads the store, where the
        # alarm is CLEARED now.
        caught_up = Subscription(channel, key, cursor=start.start_cursor)
        got = [m for m in delivered(caught_up, 1 + 1 + 40 + 1) if m.HasField("transition")]
        caught_up.cancel()

    acked, clearing = (m.transition for m in got)
    assert acked.to_status == event_pb2.ALARM_STATUS_ACKNOWLEDGED
    assert acked.event.status == event_pb2.ALARM_STATUS_ACKNOWLEDGED
    assert acked.event.acknowledged and not acked.event.HasField("cleared_at")
    assert clearing.event.status == event_pb2.ALARM_STATUS_CLEARED
    assert clearing.event.cleared_at == cleared.cleared_at


def test_transitions_made_through_one_replica_reach_subscribers_of_another(
    replicas: Callable[..., Replicas],
) -> None:
    running = replicas()
    key = running.create_key("replicated-alarms", "ReadWrite")
    one, two = running.channels
    subscription = Subscription(one, key)
    alarms = [raise_alarm(one if n % 2 else two, key, "/", description=f"r{n}") for n in range(4)]
    for n, alarm in enumerate(alarms):
        (clear if n % 2 else acknowledge)(two if n % 2 else one, key, alarm.id)
    got = delivered(subscription, 8)
    subscription.cancel()
    assert [m.WhichOneof("kind") for m in got] == ["event"] * 4 + ["transition"] * 4
    assert [m.transition.event.id for m in got[4:]] == [a.id for a in alarms]
    assert [m.transition.change for m in got[4:]] == ["ACKNOWLEDGED", "CLEARED"] * 2
    again = Subscription(two, key, cursor=subscription.start_cursor)
    assert [m.cursor for m in delivered(again, 8)] == [m.cursor for m in got]
    again.cancel()


def test_transitions_are_published_to_mqtt(mqtt_service: Service) -> None:
    from helpers import STANDARD_EVENT_ID, mqtt_broker_url

    tenant = f"mqtt-{uuid.uuid4().hex[:8]}"
    key = mqtt_service.create_key(tenant, "ReadWrite")
    inbox = MqttInbox(mqtt_broker_url(), f"transition/{tenant}/root/#")
    try:
        with grpc.insecure_channel(mqtt_service.grpc_target) as channel:
            alarm = raise_alarm(channel, key, "/root/sub1")
            acknowledge(channel, key, alarm.id)
            clear(channel, key, alarm.id)
        got = inbox.take(2)
        assert [topic for topic, _ in got] == [
            f"transition/{tenant}/root/sub1/{STANDARD_EVENT_ID}"
        ] * 2
        assert [payload["change"] for _, payload in got] == ["ACKNOWLEDGED", "CLEARED"]
        last = got[1][1]
        assert (last["fromStatus"], last["toStatus"], last["by"]) == (
            "ACKNOWLEDGED",
            "CLEARED",
            "test-key",
        )
        assert last["event"]["id"] == alarm.id and last["event"]["tenantId"] == tenant
        assert int(last["cursor"]) > int(got[0][1]["cursor"])
    finally:
        inbox.close()
