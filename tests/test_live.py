"""Live events end to end: resumable gRPC subscriptions, the REST stream (server-sent events)
through the real Envoy, streamed ingest with idempotency keys, a slow subscriber, several
replicas on one PostgreSQL database, and publishing to the real MQTT broker."""

from __future__ import annotations

import http.client
import json
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from helpers import STANDARD_EVENT_ID, Keys, Replicas, Service, auth, free_port
from service.servicers.event_stream_service import INGEST_BATCHES_IN_FLIGHT
from service.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    event_stream_service_pb2,
    event_stream_service_pb2_grpc,
)

pytestmark = pytest.mark.integration
WAIT = 30.0  # generous bound for anything to arrive; never a timing assertion


class Subscription:
    """A SubscribeEvents call read by a thread into a queue, so that reads can be bounded."""

    def __init__(self, channel: grpc.Channel, key: str, **request: Any) -> None:
        stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
        self.call = stub.SubscribeEvents(
            event_stream_service_pb2.SubscribeEventsRequest(**request),
            metadata=auth(key),
            timeout=300,
        )
        self.messages: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        first = self.next()
        assert first.WhichOneof("kind") == "heartbeat", first
        self.start_cursor = first.cursor

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except grpc.RpcError as error:
            self.messages.put(error)
        self.messages.put(None)

    def next(self) -> Any:
        message = self.messages.get(timeout=WAIT)
        if isinstance(message, grpc.RpcError):
            raise message
        return message

    def events(self, count: int) -> list[Any]:
        """The next `count` event messages, skipping heartbeats."""
        found: list[Any] = []
        while len(found) < count:
            message = self.next()
            assert message is not None, f"stream ended after {len(found)} of {count} events"
            if message.WhichOneof("kind") == "event":
                found.append(message)
        return found

    def cancel(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=WAIT)


def create(channel: grpc.Channel, key: str, **fields: Any) -> event_pb2.Event:
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    return stub.CreateEvent(
        event_service_pb2.CreateEventRequest(event=event_pb2.Event(**fields)), metadata=auth(key)
    ).event


def reason_of(error: grpc.RpcError) -> str:
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


# --- subscribe -------------------------------------------------------------------------------


def fresh_root() -> str:
    """A domain no other test writes to: the session's service and keys are shared."""
    return f"/t{uuid.uuid4().hex[:8]}"


def test_subscriber_gets_matching_events_of_its_subtree_in_commit_order(
    channel: grpc.Channel, keys: Keys
) -> None:
    root = fresh_root()
    writer, reader, other_tenant = keys.writer, keys.read, keys.other_tenant
    subscription = Subscription(channel, reader, domain=f"{root}/sub1")
    alarms = Subscription(
        channel,
        reader,
        domain=root,
        severities=[event_pb2.SEVERITY_CRITICAL],
        classifications=[event_pb2.CLASSIFICATION_ALARM],
        type_ids=["StandardEvent"],
        entity_id="pump-7",
    )

    expected = [
        create(channel, writer, description="a", domain=f"{root}/sub1").id,
        create(channel, writer, description="b", domain=f"{root}/sub1/sub11").id,
    ]
    create(channel, writer, description="sibling", domain=f"{root}/sub10")
    create(channel, writer, description="a sibling root", domain=f"{root}x")
    create(channel, other_tenant, description="another tenant", domain=f"{root}/sub1")
    alarm = create(
        channel,
        writer,
        description="hot",
        domain=f"{root}/sub2",
        entity_id="pump-7",
        severity=event_pb2.SEVERITY_CRITICAL,
        classification=event_pb2.CLASSIFICATION_ALARM,
    ).id
    create(channel, writer, description="mild", domain=root, entity_id="pump-7", severity=3)
    create(
        channel,
        writer,
        description="another pump",
        domain=root,
        entity_id="pump-8",
        severity=event_pb2.SEVERITY_CRITICAL,
        classification=event_pb2.CLASSIFICATION_ALARM,
    )
    expected.append(create(channel, writer, description="c", domain=f"{root}/sub1").id)

    got = subscription.events(3)
    assert [m.event.id for m in got] == expected
    cursors = [int(m.cursor) for m in got]
    assert cursors == sorted(cursors) and int(subscription.start_cursor) < cursors[0]
    assert got[1].event.domain == f"{root}/sub1/sub11" and got[1].event.tenant_id == "acme"
    assert [m.event.id for m in alarms.events(1)] == [alarm]
    subscription.cancel()
    alarms.cancel()


def test_reconnect_with_last_cursor_gets_exactly_the_missed_events(
    channel: grpc.Channel, keys: Keys
) -> None:
    root, writer = fresh_root(), keys.writer
    first = Subscription(channel, writer, domain=root)
    before = [create(channel, writer, description=f"b{n}", domain=root).id for n in range(5)]
    received = first.events(3)  # the client goes away after three, mid-stream
    first.cancel()
    missed = [create(channel, writer, description=f"m{n}", domain=root).id for n in range(7)]

    again = Subscription(channel, writer, domain=root, cursor=received[-1].cursor)
    after_reconnect = [m.event.id for m in again.events(2 + 7)]
    assert after_reconnect == before[3:] + missed
    live = create(channel, writer, description="live", domain=root).id
    assert [m.event.id for m in again.events(1)] == [live]
    delivered = [m.event.id for m in received] + after_reconnect + [live]
    assert len(delivered) == len(set(delivered)) == 13
    again.cancel()


def test_subscriptions_respect_tenant_domain_and_input_rules(
    service: Service, channel: grpc.Channel, keys: Keys
) -> None:
    stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)

    def first_error(key: str | None, **request: Any) -> grpc.RpcError:
        call = stub.SubscribeEvents(
            event_stream_service_pb2.SubscribeEventsRequest(**request),
            metadata=auth(key) if key else (),
            timeout=WAIT,
        )
        with pytest.raises(grpc.RpcError) as error:
            next(iter(call))
        return error.value

    outside = first_error(keys.sub1_writer, domain="/root")
    assert outside.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(outside) == "NOT_AUTHORIZED_DOMAIN"
    assert first_error(None).code() == grpc.StatusCode.UNAUTHENTICATED
    for request in ({"cursor": "abc"}, {"cursor": "999999999999"}, {"heartbeat_seconds": 900}):
        assert first_error(keys.read, **request).code() == grpc.StatusCode.INVALID_ARGUMENT

    # A key limited to /root/sub1 gets its subtree by default, and nothing outside it.
    scoped = Subscription(channel, keys.sub1_writer)
    create(channel, keys.other_tenant, description="another tenant", domain="/root/sub1")
    create(channel, keys.writer, description="outside", domain="/root/sub2")
    inside = create(channel, keys.writer, description="inside", domain="/root/sub1/sub11").id
    assert [m.event.id for m in scoped.events(1)] == [inside]
    scoped.cancel()


def test_idle_subscription_sends_heartbeats_with_a_resumable_cursor(
    channel: grpc.Channel, keys: Keys
) -> None:
    subscription = Subscription(channel, keys.read, domain=fresh_root(), heartbeat_seconds=1)
    beat = subscription.next()
    assert beat.WhichOneof("kind") == "heartbeat"
    assert int(beat.cursor) >= int(subscription.start_cursor)
    subscription.cancel()


# --- the REST stream through Envoy -----------------------------------------------------------


class EventStream:
    """`GET /liveEvents` through the gateway, read as server-sent events."""

    def __init__(self, service: Service, key: str, query: str = "", **headers: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", service.rest_port, timeout=WAIT)
        self.connection.request(
            "GET", f"/liveEvents?{query}", headers={"x-api-key": key, **headers}
        )
        self.response = self.connection.getresponse()

    def next(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if not line:
                if fields:
                    fields["data"] = json.loads(fields["data"])
                    return fields
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    def events(self, count: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            message = self.next()
            if message["event"] == "event":
                found.append(message)
        return found

    def close(self) -> None:
        self.connection.close()


def test_rest_stream_delivers_sse_and_resumes_with_last_event_id(
    service: Service, keys: Keys
) -> None:
    root, key = fresh_root(), keys.writer

    def post(description: str, **fields: Any) -> str:
        body = {"description": description, "entityId": "e-1", **fields}
        answer = service.request("POST", "/events", body, key)
        assert answer.status == 201, answer.body
        return str(answer.json()["id"])

    stream = EventStream(
        service, key, f"domain={root}&severities=2&severities=3&heartbeatSeconds=1"
    )
    assert stream.response.status == 200
    assert stream.response.getheader("content-type", "").startswith("text/event-stream")
    hello = stream.next()
    assert hello["event"] == "heartbeat" and hello["id"] == hello["data"]["cursor"]

    first = post("first", domain=f"{root}/a", severity=2, source={"thingName": "000001"})
    post("filtered out", domain=f"{root}/a", severity=5)
    second = post("second", domain=root, severity=3)
    got = stream.events(2)
    assert [m["data"]["id"] for m in got] == [first, second]
    assert got[0]["data"]["source"] == {"thingName": "000001"}  # the REST shape, exactly
    assert got[0]["data"]["_links"]["self"]["href"].endswith(f"/events/{first}")
    stream.close()

    missed = [post(f"missed {n}", domain=f"{root}/b", severity=2) for n in range(3)]
    resumed = EventStream(
        service, key, f"domain={root}&severities=2&severities=3", **{"Last-Event-ID": got[0]["id"]}
    )
    assert [m["data"]["id"] for m in resumed.events(4)] == [second, *missed]
    resumed.close()


def test_rest_stream_errors_are_json(service: Service, keys: Keys) -> None:
    answer = service.request("GET", "/liveEvents?domain=/root", key=keys.sub1_writer)
    assert answer.status == 403
    assert answer.json()["details"][0]["reason"] == "NOT_AUTHORIZED_DOMAIN"
    assert service.request("GET", "/liveEvents").status == 401
    assert service.request("GET", "/liveEvents?cursor=x", key=keys.read).status == 400


# --- streamed ingest -------------------------------------------------------------------------


def ingest_request(*items: tuple[str, event_pb2.Event]) -> Any:
    return event_stream_service_pb2.IngestEventsRequest(
        items=[event_stream_service_pb2.IngestItem(idempotency_key=k, event=e) for k, e in items]
    )


def test_ingest_answers_each_event_and_keeps_the_stream_open_on_errors(
    channel: grpc.Channel, keys: Keys
) -> None:
    key, tag = keys.writer, uuid.uuid4().hex
    stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
    requests: queue.Queue[Any] = queue.Queue()
    call = stub.IngestEvents(iter(requests.get, None), metadata=auth(key), timeout=WAIT * 2)
    answers = iter(call)

    requests.put(
        ingest_request(
            (
                f"{tag}:k1",
                event_pb2.Event(entity_id="gw-1", description="ok 1", domain="/root/gw1"),
            ),
            (f"{tag}:k2", event_pb2.Event(entity_id="gw-1", description="bad", severity=101)),
            (
                f"{tag}:k3",
                event_pb2.Event(entity_id="gw-1", description="bad domain", domain="nope"),
            ),
            ("", event_pb2.Event(entity_id="gw-1", description="no key")),
        )
    )
    first = next(answers).results
    assert [r.idempotency_key for r in first] == [f"{tag}:k{n}" for n in (1, 2, 3)] + [""]
    assert first[0].id and not first[0].HasField("error") and first[3].id
    assert first[1].error.code == code_pb2.INVALID_ARGUMENT and not first[1].id
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in first[1].error.details)
    assert bad.field_violations[0].field == "severity"
    assert first[2].error.code == code_pb2.INVALID_ARGUMENT

    # The stream is still open: the next batch, with a key repeated inside it.
    requests.put(
        ingest_request(
            (f"{tag}:k4", event_pb2.Event(entity_id="gw-1", description="ok 4")),
            (f"{tag}:k4", event_pb2.Event(entity_id="gw-1", description="ok 4 again")),
        )
    )
    second = next(answers).results
    assert second[0].id and not second[0].duplicate
    assert second[1].duplicate and second[1].id == second[0].id
    requests.put(None)
    assert list(answers) == []

    events = event_service_pb2_grpc.EventServiceStub(channel)
    stored = events.GetEvent(event_service_pb2.GetEventRequest(id=first[0].id), metadata=auth(key))
    assert stored.event.description == "ok 1" and stored.event.domain == "/root/gw1"


def test_resend_after_a_broken_stream_stores_nothing_twice(
    channel: grpc.Channel, keys: Keys
) -> None:
    key, tag = keys.writer, uuid.uuid4().hex
    events = event_service_pb2_grpc.EventServiceStub(channel)

    def stored() -> int:
        everything = event_service_pb2.ListEventsRequest(page_size=1)
        return int(events.ListEvents(everything, metadata=auth(key)).total_size)

    before = stored()
    stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
    batch = [
        (f"{tag}:{n}", event_pb2.Event(entity_id="gw-1", description=f"reading {n}"))
        for n in range(50)
    ]
    requests: queue.Queue[Any] = queue.Queue()
    broken = stub.IngestEvents(iter(requests.get, None), metadata=auth(key), timeout=WAIT * 2)
    requests.put(ingest_request(*batch[:30]))
    first_ids = [r.id for r in next(iter(broken)).results]
    broken.cancel()  # the link drops before the gateway learns the fate of what follows

    again = list(stub.IngestEvents(iter([ingest_request(*batch)]), metadata=auth(key)))
    results = again[0].results
    assert [r.id for r in results[:30]] == first_ids and all(r.duplicate for r in results[:30])
    assert not any(r.duplicate for r in results[30:]) and all(r.id for r in results)

    assert stored() == before + 50


def test_ingested_events_reach_subscribers(channel: grpc.Channel, keys: Keys) -> None:
    root, key = fresh_root(), keys.writer
    subscription = Subscription(channel, key, domain=root)
    stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
    batch = [
        (f"{root}:{n}", event_pb2.Event(entity_id="gw-1", description=f"e{n}", domain=root))
        for n in range(100)
    ]
    answer = list(stub.IngestEvents(iter([ingest_request(*batch)]), metadata=auth(key)))
    assert [m.event.id for m in subscription.events(100)] == [r.id for r in answer[0].results]
    subscription.cancel()


def test_more_concurrent_ingest_streams_than_batches_in_flight_all_store_every_event(
    channel: grpc.Channel, keys: Keys
) -> None:
    """Streams beyond the process-wide bound on batches in flight wait their turn: every
    stream gets an answer for every batch, in order, and every event is stored once."""
    root, key = fresh_root(), keys.writer
    streams, batches, size = INGEST_BATCHES_IN_FLIGHT + 16, 3, 20
    stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
    sent = {
        s: [
            ingest_request(
                *(
                    (
                        f"{root}:{s}:{b}:{n}",
                        event_pb2.Event(entity_id=f"gw-{s}", description=f"{b}:{n}", domain=root),
                    )
                    for n in range(size)
                )
            )
            for b in range(batches)
        ]
        for s in range(streams)
    }
    # Every call is open, and sending, before any answer is read.
    calls = {
        s: stub.IngestEvents(iter(requests), metadata=auth(key), timeout=WAIT * 4)
        for s, requests in sent.items()
    }
    ids = set()
    for s, call in calls.items():
        answers = list(call)
        assert [[r.idempotency_key for r in a.results] for a in answers] == [
            [i.idempotency_key for i in request.items] for request in sent[s]
        ]
        assert all(
            r.id and not r.duplicate and not r.HasField("error") for a in answers for r in a.results
        )
        ids.update(r.id for a in answers for r in a.results)
    assert len(ids) == streams * batches * size

    events = event_service_pb2_grpc.EventServiceStub(channel)
    listed = events.ListEvents(
        event_service_pb2.ListEventsRequest(page_size=1, filter=json.dumps({"domain": root})),
        metadata=auth(key),
    )
    assert listed.total_size == streams * batches * size


def test_events_of_a_bulk_create_job_reach_subscribers(
    service: Service, channel: grpc.Channel, keys: Keys
) -> None:
    root = fresh_root()
    subscription = Subscription(channel, keys.read, domain=root)
    body = {
        "events": [{"description": f"job {n}", "entityId": "e", "domain": root} for n in range(20)]
    }
    answer = service.request("POST", "/createEventsJobs", body, key=keys.writer)
    assert answer.status == 201, answer.body
    got = subscription.events(20)
    assert sorted(m.event.description for m in got) == sorted(
        e["description"] for e in body["events"]
    )
    subscription.cancel()


# --- a slow subscriber -----------------------------------------------------------------------


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


def test_slow_subscriber_is_told_and_resumes_without_a_gap(small_buffer_service: Service) -> None:
    key = small_buffer_service.create_key("slow", "ReadWrite")
    big = event_pb2.Payload(content_type="application/octet-stream", data=b"x" * 200_000)
    with grpc.insecure_channel(small_buffer_service.grpc_target) as channel:
        stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
        # Read by hand, and not at all while the writes happen: the server's sends stall.
        call = stub.SubscribeEvents(
            event_stream_service_pb2.SubscribeEventsRequest(), metadata=auth(key), timeout=120
        )
        stream = iter(call)
        assert next(stream).WhichOneof("kind") == "heartbeat"
        ids = [create(channel, key, description=f"e{n}", payload=big).id for n in range(120)]

        delivered, ending = [], None
        with pytest.raises(grpc.RpcError) as ended:
            for message in stream:
                if message.WhichOneof("kind") == "event":
                    delivered.append(message.event.id)
                elif message.WhichOneof("kind") == "fell_behind":
                    ending = message
        assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ending is not None and ending.fell_behind.reason == "SUBSCRIBER_TOO_SLOW"
        assert delivered == ids[: len(delivered)] and len(delivered) < len(ids)

        resumed = Subscription(channel, key, cursor=ending.cursor)
        rest = [m.event.id for m in resumed.events(len(ids) - len(delivered))]
        assert delivered + rest == ids
        resumed.cancel()


def test_a_quiet_subscriber_stays_live_while_other_domains_fill_memory(
    small_buffer_service: Service,
) -> None:
    """A caught-up subscriber waits for its own subtree only; commits elsewhere that push
    memory (20 positions here) past its cursor many times over do not make it fall behind."""
    key = small_buffer_service.create_key("quiet", "ReadWrite")
    with grpc.insecure_channel(small_buffer_service.grpc_target) as channel:
        quiet = Subscription(channel, key, domain="/plant/quiet")
        busy = Subscription(channel, key, domain="/plant/busy")
        noisy = [
            create(channel, key, description=f"n{n}", domain="/plant/busy/line").id
            for n in range(80)
        ]
        mine = create(channel, key, description="mine", domain="/plant/quiet/line").id
        assert [m.event.id for m in busy.events(len(noisy))] == noisy
        got = quiet.events(1)
        assert [m.event.id for m in got] == [mine]
        assert int(got[0].cursor) > int(quiet.start_cursor) + len(noisy)
        quiet.cancel()
        busy.cancel()


# --- several server processes on one database ---------------------------------------------


def test_subscriber_on_one_replica_gets_events_written_through_another(
    replicas: Callable[..., Replicas],
) -> None:
    running = replicas()
    key = running.create_key("replicated", "ReadWrite")
    one, two = running.channels
    subscription = Subscription(one, key)
    written = []
    for n in range(10):  # alternate processes: one commit order across both
        written.append(create(two if n % 2 else one, key, description=f"r{n}").id)
    assert [m.event.id for m in subscription.events(10)] == written
    subscription.cancel()
    again = Subscription(two, key, cursor=subscription.start_cursor)
    assert [m.event.id for m in again.events(10)] == written
    again.cancel()


# --- MQTT ------------------------------------------------------------------------------------


class MqttInbox:
    """A paho subscriber on the test broker collecting (topic, JSON payload) pairs."""

    def __init__(self, url: str, topic: str) -> None:
        from urllib.parse import urlparse

        import paho.mqtt.client as mqtt

        parsed = urlparse(url)
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
        self.client.loop_start()
        assert subscribed.wait(WAIT)

    def take(self, count: int) -> list[tuple[str, Any]]:
        return [self.messages.get(timeout=WAIT) for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # Closes the loop's wake-up socket pair, which loop_stop leaves open: collected with
        # the inbox (the callbacks refer to it) it would warn as unclosed.
        self.client.reinitialise()


def test_committed_events_are_published_to_mqtt_by_domain_topic(mqtt_service: Service) -> None:
    from helpers import mqtt_broker_url

    tenant = f"mqtt-{uuid.uuid4().hex[:8]}"
    key = mqtt_service.create_key(tenant, "ReadWrite")
    inbox = MqttInbox(mqtt_broker_url(), f"event/{tenant}/root/sub1/#")
    try:
        with grpc.insecure_channel(mqtt_service.grpc_target) as channel:
            create(channel, key, description="elsewhere", domain="/root/sub2")
            one = create(channel, key, description="one", domain="/root/sub1", severity=2)
            two = create(channel, key, description="two", domain="/root/sub1/sub11", type_id="")
        got = inbox.take(2)
        assert [topic for topic, _ in got] == [
            f"event/{tenant}/root/sub1/{STANDARD_EVENT_ID}",
            f"event/{tenant}/root/sub1/sub11/{STANDARD_EVENT_ID}",
        ]
        assert [payload["id"] for _, payload in got] == [one.id, two.id]
        assert got[0][1]["severity"] == 2 and got[0][1]["tenantId"] == tenant
    finally:
        inbox.close()


def test_server_with_an_unreachable_broker_keeps_serving(tmp_path: Path) -> None:
    dead_port = free_port()
    running = Service(
        f"sqlite:///{tmp_path / 'events.db'}",
        tmp_path,
        gateway=False,
        serve_args=("--mqtt-url", f"mqtt://127.0.0.1:{dead_port}"),
    )
    running.start()
    try:
        key = running.create_key("nobroker", "ReadWrite")
        with grpc.insecure_channel(running.grpc_target) as channel:
            ids = [create(channel, key, description=f"e{n}").id for n in range(5)]
            assert all(ids)
        assert running.process is not None and running.process.poll() is None
    finally:
        assert running.stop() == 0
