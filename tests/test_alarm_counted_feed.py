"""Counted occurrences on the live feed, end to end: a repeated alarm counted into its open
alarm is a COUNTED transition (status unchanged) in commit order over gRPC, server-sent
events through the real Envoy and MQTT; live subscriptions take the list filter language
(`filter`), so that `count` and the occurrence times filter the feed, decided on the alarm as
each transition left it, also when resuming by cursor from memory or from the store."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from test_alarm_feed import acknowledge, delivered, fresh_root, kinds
from test_live import EventStream, MqttInbox, Subscription, create, reason_of

from helpers import Keys, Service
from service.v1 import event_pb2

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
T0_MS = 1_780_000_000_000  # 2026-05-28T20:26:40Z


def at(millis: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(millis)
    return stamp


def occur(channel: grpc.Channel, key: str, domain: str, code: str, **fields: Any) -> Any:
    """One occurrence of the alarm of (domain, pump-1, code): the first stores it, the next
    ones count into it."""
    return create(
        channel,
        key,
        entity_type="Device",
        entity_id="pump-1",
        domain=domain,
        code=code,
        classification=event_pb2.CLASSIFICATION_ALARM,
        description="pump overheating",
        **fields,
    )


def new_code() -> str:
    return str(10_000 + uuid.uuid4().int % 10**9)


def test_a_counted_occurrence_is_a_transition_and_a_count_filter_waits_for_it(
    channel: grpc.Channel, keys: Keys
) -> None:
    root, code = fresh_root(), new_code()
    everything = Subscription(channel, keys.read, domain=root)
    third_on = Subscription(channel, keys.read, domain=root, filter='{"count": {"after": 2}}')

    alarm = occur(channel, keys.writer, root, code)
    second = occur(channel, keys.writer, root, code)
    assert second.id == alarm.id and second.count == 2
    third = occur(channel, keys.writer, root, code)
    marker = create(channel, keys.writer, entity_id="m", domain=root, description="marker")

    got = delivered(everything, 4)
    everything.cancel()
    assert kinds(got) == [
        ("event", alarm.id),
        ("transition", "COUNTED"),
        ("transition", "COUNTED"),
        ("event", marker.id),
    ]
    counted = got[2].transition
    assert (counted.from_status, counted.to_status) == (
        event_pb2.ALARM_STATUS_ACTIVE,
        event_pb2.ALARM_STATUS_ACTIVE,
    )
    assert counted.by == "" and counted.event == third
    assert counted.time == third.update_time
    assert [m.transition.event.count for m in got[1:3]] == [2, 3]

    # Nothing for the creation and the second occurrence: the third is the first it gets.
    first = third_on.next()
    while first.WhichOneof("kind") == "heartbeat":
        first = third_on.next()
    assert first.cursor == got[2].cursor and first.transition.event.count == 3
    third_on.cancel()

    # Disconnected, it misses two more; resuming by cursor delivers them with their counts.
    fourth = occur(channel, keys.writer, root, code)
    fifth = occur(channel, keys.writer, root, code)
    resumed = Subscription(
        channel, keys.read, domain=root, filter='{"count": {"after": 2}}', cursor=first.cursor
    )
    again = delivered(resumed, 2)
    resumed.cancel()
    assert kinds(again) == [("transition", "COUNTED")] * 2
    assert [m.transition.event for m in again] == [fourth, fifth]


def test_a_live_filter_on_the_last_occurrence_time(channel: grpc.Channel, keys: Keys) -> None:
    root, code = fresh_root(), new_code()
    since = json.dumps({"lastOccurrenceTime": {"after": T0_MS + HOUR_MS}})
    recent = Subscription(channel, keys.read, domain=root, filter=since)

    occur(channel, keys.writer, root, code, timestamp=at(T0_MS))  # last occurrence T0
    later = occur(channel, keys.writer, root, code, timestamp=at(T0_MS + 2 * HOUR_MS))
    # An occurrence reported earlier leaves the last occurrence where it was.
    earlier = occur(channel, keys.writer, root, code, timestamp=at(T0_MS))
    assert earlier.last_occurrence_time == later.last_occurrence_time == at(T0_MS + 2 * HOUR_MS)
    marker = create(
        channel, keys.writer, entity_id="m", domain=root, timestamp=at(T0_MS + 3 * HOUR_MS)
    )
    got = delivered(recent, 2)
    recent.cancel()
    assert [m.transition.event.count for m in got] == [2, 3]
    # Events that are no alarms have no last occurrence: the marker does not match.
    assert marker.id not in [m.event.id for m in got]


def test_live_filters_are_checked_as_list_filters(channel: grpc.Channel, keys: Keys) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        Subscription(channel, keys.read, filter='{"count": {"gte": 3}}')
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter.count.gte" in (caught.value.details() or "")
    assert reason_of(caught.value) == "INVALID_FILTER"
    with pytest.raises(grpc.RpcError) as caught:
        Subscription(channel, keys.read, filter="{not json")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "MALFORMED_FILTER"


def test_counted_transitions_over_sse_with_a_filter(
    service: Service, channel: grpc.Channel, keys: Keys
) -> None:
    root, code = fresh_root(), new_code()
    # Percent-encoded: the gateway does not read `+` as a space.
    query = urllib.parse.urlencode(
        {"domain": root, "heartbeatSeconds": 1, "filter": '{"count": {"after": 1}}'},
        quote_via=urllib.parse.quote,
    )
    stream = EventStream(service, keys.read, query)
    assert stream.response.status == 200
    occur(channel, keys.writer, root, code)
    second = occur(channel, keys.writer, root, code)
    message = stream.next()
    while message["event"] == "heartbeat":
        message = stream.next()
    stream.close()
    assert message["event"] == "transition"
    data = message["data"]
    assert (data["change"], data["fromStatus"], data["toStatus"]) == (
        "COUNTED",
        "ACTIVE",
        "ACTIVE",
    )
    assert data["event"]["id"] == second.id and data["event"]["count"] == 2

    bad = urllib.parse.urlencode({"filter": '{"count": {"gte": 3}}'}, quote_via=urllib.parse.quote)
    answer = service.request("GET", f"/liveEvents?{bad}", key=keys.read)
    assert answer.status == 400, answer.body
    violation = answer.json()["details"]
    assert "filter.count.gte" in json.dumps(violation)


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


def test_counted_transitions_caught_up_from_the_store_carry_the_count_they_left(
    small_buffer_service: Service,
) -> None:
    key = small_buffer_service.create_key("counted", "ReadWrite")
    code = new_code()
    with grpc.insecure_channel(small_buffer_service.grpc_target) as channel:
        start = Subscription(channel, key)
        start.cancel()
        answers = [occur(channel, key, "/", code) for _ in range(3)]
        acknowledge(channel, key, answers[0].id)  # at count 3
        answers += [occur(channel, key, "/", code) for _ in range(2)]
        for n in range(40):
            create(channel, key, entity_id="n", description=f"n{n}")
        # Far more positions than memory keeps lie between: this reads the store, where the
        # alarm's count is 5 now.
        caught_up = Subscription(
            channel, key, cursor=start.start_cursor, filter='{"count": {"between": "[3,4]"}}'
        )
        got = delivered(caught_up, 3)
        caught_up.cancel()

    # As each left it: the third occurrence, the acknowledgement at count 3, the fourth.
    assert kinds(got) == [
        ("transition", "COUNTED"),
        ("transition", "ACKNOWLEDGED"),
        ("transition", "COUNTED"),
    ]
    assert [m.transition.event.count for m in got] == [3, 3, 4]
    assert got[0].transition.event.status == event_pb2.ALARM_STATUS_ACTIVE
    assert got[2].transition.event.status == event_pb2.ALARM_STATUS_ACKNOWLEDGED
    assert got[2].transition.event.last_occurrence_time == answers[3].last_occurrence_time
    assert (got[2].transition.from_status, got[2].transition.to_status) == (
        event_pb2.ALARM_STATUS_ACKNOWLEDGED,
        event_pb2.ALARM_STATUS_ACKNOWLEDGED,
    )


def test_counted_occurrences_are_published_to_mqtt(mqtt_service: Service) -> None:
    from helpers import STANDARD_EVENT_ID, mqtt_broker_url

    tenant = f"mqtt-{uuid.uuid4().hex[:8]}"
    key = mqtt_service.create_key(tenant, "ReadWrite")
    inbox = MqttInbox(mqtt_broker_url(), f"transition/{tenant}/root/#")
    code = new_code()
    try:
        with grpc.insecure_channel(mqtt_service.grpc_target) as channel:
            occur(channel, key, "/root/sub1", code)
            second = occur(channel, key, "/root/sub1", code)
        [(topic, payload)] = inbox.take(1)
        assert topic == f"transition/{tenant}/root/sub1/{STANDARD_EVENT_ID}"
        assert (payload["change"], payload["fromStatus"], payload["toStatus"]) == (
            "COUNTED",
            "ACTIVE",
            "ACTIVE",
        )
        assert payload["event"]["id"] == second.id and payload["event"]["count"] == 2
        assert payload["event"]["tenantId"] == tenant and int(payload["cursor"]) > 0
    finally:
        inbox.close()
