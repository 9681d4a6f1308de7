"""CloudEvents 1.0 views of an event, opt-in for live subscribers (SSE `?format=cloudevents`,
MQTT `--mqtt-format cloudevents`, gRPC EVENT_FORMAT_CLOUDEVENTS). One mapping for every
format: `id` is the event id, `source` names the tenant and domain, `type` is the type id,
`time` the timestamp, `subject` the entity id (left out when empty), and the event is `data`.
"""

from __future__ import annotations

from typing import Any

from service.domain import times
from service.domain.errors import invalid
from service.domain.events import Event
from service.v1 import cloudevent_pb2, event_pb2

SPEC_VERSION = "1.0"
FORMAT = "cloudevents"
# Structured mode (JSON event format) media type, for transports that carry one.
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


def source(event: Event) -> str:
    """A URI reference: `/tenants/acme/domains/root/sub1` (`.../domains/` for the root)."""
    return f"/tenants/{event.tenant_id}/domains{event.domain}"


def check_format(text: str, field: str = "format") -> bool:
    """True for `cloudevents`, False for the default (empty); anything else is refused."""
    if not text:
        return False
    if text.lower() != FORMAT:
        raise invalid(field, f"must be {FORMAT} or left out, not {text!r}")
    return True


def structured(event: Event, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON event format (structured mode) with the event's JSON document as data."""
    document: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event.id,
        "source": source(event),
        "type": event.type_id,
        "time": times.format_micros(event.timestamp),
    }
    if event.entity_id:
        document["subject"] = event.entity_id
    document["datacontenttype"] = "application/json"
    document["data"] = data
    return document


def to_proto(event: Event, message: event_pb2.Event) -> cloudevent_pb2.CloudEvent:
    """The protobuf format, with the Event message as `proto_data`."""
    cloud_event = cloudevent_pb2.CloudEvent(
        id=event.id, source=source(event), spec_version=SPEC_VERSION, type=event.type_id
    )
    cloud_event.attributes["time"].ce_timestamp.CopyFrom(message.timestamp)
    if event.entity_id:
        cloud_event.attributes["subject"].ce_string = event.entity_id
    cloud_event.attributes["datacontenttype"].ce_string = "application/protobuf"
    cloud_event.proto_data.Pack(message)
    return cloud_event
