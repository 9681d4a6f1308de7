"""Publishes every committed event to an MQTT broker (docs/find-api.md#realtime).

Topic: `event/<tenantId><domain>/<typeId>`, for example `event/acme/root/sub1/<typeId>`
(an event of domain `/` goes to `event/acme/<typeId>`), so `event/acme/root/sub1/#`
receives the events of `/root/sub1` and all its subdomains. QoS 1; the payload is the event's
REST JSON document, or with `--mqtt-format cloudevents` a CloudEvents 1.0 structured-mode
JSON document with it as `data` (service.cloudevents).

Alarm transitions (acknowledged, cleared) go to `transition/<tenantId><domain>/<typeId>` with
the alarm's topic path, as `{change, fromStatus, toStatus, by, time, cursor, event}` with the
alarm's JSON (and its tenant) as `event`. The write path only appends to a
bounded queue after commit; a thread publishes, and a broker that goes away is reconnected
to with back-off while the queue holds what it can (the oldest events are dropped, and
counted in the log, when it is full).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from service import cloudevents, rest_json
from service.domain.alarm_status import Transition
from service.domain.events import Event

log = logging.getLogger(__name__)
QOS = 1
MAX_QUEUED = 100_000


def event_topic(event: Event) -> str:
    domain = "" if event.domain == "/" else event.domain
    return f"event/{event.tenant_id}{domain}/{event.type_id}"


def transition_topic(transition: Transition) -> str:
    return "transition/" + event_topic(transition.subject).removeprefix("event/")


def transition_payload(transition: Transition) -> bytes:
    """The transition's live feed document, with the alarm as its MQTT event payload and
    the feed position (a cursor of GET /liveEvents and SubscribeEvents)."""
    document = rest_json.transition_document(transition, "")
    del document["event"]["_links"]
    document["event"]["tenantId"] = transition.tenant_id
    document["cursor"] = str(transition.seq)
    return rest_json.dumps(document)


def event_payload(event: Event, as_cloud_event: bool = False) -> bytes:
    """The event's REST JSON with its tenant, or (opt-in) that JSON as the data of a
    CloudEvents 1.0 structured-mode document."""
    document = rest_json.event_document(event, "")
    del document["_links"]
    document["tenantId"] = event.tenant_id
    if as_cloud_event:
        document = cloudevents.structured(event, document)
    return rest_json.dumps(document)


class MqttPublisher:
    """One broker connection and a publishing thread, fed by `offer` after each commit."""

    def __init__(
        self,
        url: str,
        client_id: str = "",
        max_queued: int = MAX_QUEUED,
        payload_format: str = "",
    ) -> None:
        self._as_cloud_event = cloudevents.check_format(payload_format, "--mqtt-format")
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "tcp", ""):
            raise ValueError(f"unsupported MQTT URL {url!r}: use mqtt://host:port")
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 1883
        self._queue: deque[Event | Transition] = deque(maxlen=max_queued)
        self._wake = threading.Condition()
        self._connected = threading.Event()
        self._stopping = False
        self._retry = threading.Event()  # set by stop(): a retry sleep that stopping cuts short
        self.dropped = 0
        self.published = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
        )
        if parsed.username:
            self._client.username_pw_set(parsed.username, parsed.password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_inflight_messages_set(1000)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt", daemon=True)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        # connect_async + loop_start: a broker that is down at start is retried in the
        # background instead of failing the server.
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._retry.set()
            self._wake.notify_all()
        self._thread.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()

    def offer(self, events: list[Event | Transition]) -> None:
        """Queues committed events for publishing; never blocks the caller."""
        with self._wake:
            room = self._queue.maxlen - len(self._queue) if self._queue.maxlen else len(events)
            if len(events) > room:
                self.dropped += len(events) - room
                log.warning("MQTT queue full: dropped %s events so far", self.dropped)
            self._queue.extend(events)
            self._wake.notify()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        log.info("MQTT connected to %s:%s (%s)", self._host, self._port, reason)
        self._connected.set()
        with self._wake:
            self._wake.notify()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        self._connected.clear()
        if not self._stopping:
            log.warning(
                "MQTT disconnected from %s:%s (%s); reconnecting", self._host, self._port, reason
            )

    def _publish_loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not (self._queue and self._connected.is_set()):
                    self._wake.wait(1.0)
                if self._stopping:
                    return
                event = self._queue[0]
            try:
                if isinstance(event, Transition):
                    topic, payload = transition_topic(event), transition_payload(event)
                else:
                    topic, payload = event_topic(event), event_payload(event, self._as_cloud_event)
                info = self._client.publish(topic, payload, qos=QOS)
            except Exception:
                log.exception("publishing feed position %s failed", event.seq)
                info = None
            if info is not None and info.rc == mqtt.MQTT_ERR_SUCCESS:
                with self._wake:
                    if self._queue and self._queue[0] is event:
                        self._queue.popleft()
                        self.published += 1
            else:  # the connection dropped under us: keep the event, retry shortly
                self._retry.wait(0.5)
