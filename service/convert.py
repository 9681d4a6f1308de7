"""The gRPC view of events: domain events to and from eventmgmt.v1.Event messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from eventmgmt.domain.errors import invalid
from eventmgmt.domain.events import CLASSIFICATIONS, Event, Payload
from eventmgmt.domain.registry import App, Device
from eventmgmt.rest_json import loads
from eventmgmt.v1 import device_event_service_pb2, event_pb2, registry_pb2

_CLASSIFICATION_TO_PROTO = {name: index for index, name in enumerate(CLASSIFICATIONS, start=1)}
_CLASSIFICATION_FROM_PROTO = {v: k for k, v in _CLASSIFICATION_TO_PROTO.items()}
# Proto field name -> canonical attribute, for the fields a caller may send.
_SETTABLE = (
    "type_id",
    "correlation_id",
    "entity_type",
    "entity_id",
    "domain",
    "timestamp",
    "severity",
    "code",
    "description",
    "source",
    "classification",
    "category",
    "acknowledgement_required",
    "app_id",
    "payload",
)


def _to_timestamp(micros: int) -> Timestamp:
    seconds, fraction = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=fraction * 1000)


def _from_timestamp(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def event_to_proto(event: Event) -> event_pb2.Event:
    message = event_pb2.Event(
        id=event.id,
        tenant_id=event.tenant_id,
        type_id=event.type_id,
        correlation_id=event.correlation_id,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        domain=event.domain,
        timestamp=_to_timestamp(event.timestamp),
        create_time=_to_timestamp(event.create_time),
        update_time=_to_timestamp(event.update_time),
        etag=event.etag,
        severity=event.severity,
        code=event.code,
        description=event.description,  # type: ignore[arg-type]
        classification=_CLASSIFICATION_TO_PROTO.get(event.classification, 0),  # type: ignore[arg-type]
        category=event.category,
        acknowledgement_required=event.acknowledgement_required,
        acknowledged=event.acknowledged,
        acknowledged_by=event.acknowledged_by,
        app_id=event.app_id,
        internal=event.internal,
    )
    if event.acknowledged_at is not None:
        message.acknowledged_at.CopyFrom(_to_timestamp(event.acknowledged_at))
    if isinstance(event.source, str):
        message.source_text = event.source
    elif isinstance(event.source, dict):
        message.source_object.update(event.source)
    elif event.source is not None:  # a JSON array or scalar sent over REST
        message.source_text = json.dumps(event.source)
    if event.payload is not None:
        message.payload.content_type = event.payload.content_type
        message.payload.data = event.payload.data
    for name, value in event.custom_fields.items():
        field = message.custom_fields[name]
        if isinstance(value, bool):
            field.boolean_value = value
        elif isinstance(value, int):
            field.integer_value = value
        elif isinstance(value, float):
            field.double_value = value
        else:
            field.string_value = str(value)
    return message


def _field_value(message: event_pb2.Event, name: str) -> Any:
    if name == "timestamp":
        return _from_timestamp(message.timestamp)
    if name == "source":
        kind = message.WhichOneof("source")
        if kind == "source_object":
            return json_format.MessageToDict(message.source_object)
        return message.source_text if kind == "source_text" else None
    if name == "classification":
        return _CLASSIFICATION_FROM_PROTO.get(message.classification, "")
    if name == "payload":
        return Payload(
            message.payload.content_type or "application/octet-stream", message.payload.data
        )
    if name == "severity":
        return int(message.severity)
    return getattr(message, name)


def _is_set(message: event_pb2.Event, name: str) -> bool:
    if name in ("timestamp", "payload"):
        return message.HasField(name)
    if name == "source":
        return message.WhichOneof("source") is not None
    return bool(getattr(message, name))


def fields_from_proto(message: event_pb2.Event, only: Iterable[str] = ()) -> dict[str, Any]:
    """The canonical fields a caller set: those named in `only`, else every non-default one.
    Setting output-only fields (other than etag, read by update) is refused, never ignored."""
    fields: dict[str, Any] = {}
    names = list(only)
    for name in names:
        if name not in _SETTABLE:
            raise invalid("update_fields", f"{name!r} is not a settable Event field")
    for name in names or _SETTABLE:
        if names or _is_set(message, name):
            fields[name] = _field_value(message, name)
    for name in ("acknowledged", "internal"):
        if getattr(message, name):
            fields[name] = True  # refused by the domain with its own rule
    if message.custom_fields:
        raise invalid("custom_fields", "the standard event has no custom fields")
    return fields


def device_to_proto(device: Device) -> registry_pb2.Device:
    return registry_pb2.Device(
        id=device.id,
        tenant_id=device.tenant_id,
        domain=device.domain,
        entity_type=device.entity_type,
        enabled=device.enabled,
        create_time=_to_timestamp(device.create_time),
        update_time=_to_timestamp(device.update_time),
    )


def app_to_proto(app: App) -> registry_pb2.App:
    return registry_pb2.App(
        id=app.id,
        tenant_id=app.tenant_id,
        name=app.name,
        licence_active=app.licence_active,
        create_time=_to_timestamp(app.create_time),
        update_time=_to_timestamp(app.update_time),
    )


def report_fields_from_proto(
    request: device_event_service_pb2.ReportDeviceEventRequest,
) -> dict[str, Any]:
    """A typed report's fields by REST JSON name; unset fields are left out (missing)."""
    fields: dict[str, Any] = {
        "typeId": request.type_id,
        "description": request.description,
        "appId": request.app_id,
    }
    if request.severity:
        fields["severity"] = int(request.severity)
    if request.HasField("timestamp"):
        fields["timestamp"] = _from_timestamp(request.timestamp)
    if request.data_json:
        fields["data"] = loads(request.data_json.encode(), "data_json")
    return fields
