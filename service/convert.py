"""The gRPC view of events: domain events to and from service.v1.Event messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from service.domain.alarm_status import STATUSES, Transition
from service.domain.custom_fields import FieldDefinition, FieldType, Instant
from service.domain.errors import FieldViolation, InvalidInput, invalid
from service.domain.event_fields import FIELDS, SETTABLE, Kind
from service.domain.event_types import EventType, EventTypeSpec, Scope
from service.domain.events import CLASSIFICATIONS, Event, Payload
from service.domain.registry import App, Device
from service.request_checks import Listed
from service.rest_json import loads
from service.v1 import device_event_service_pb2, event_pb2, event_type_pb2, registry_pb2

_CLASSIFICATION_TO_PROTO = {name: index for index, name in enumerate(CLASSIFICATIONS, start=1)}
_CLASSIFICATION_FROM_PROTO = {v: k for k, v in _CLASSIFICATION_TO_PROTO.items()}
_STATUS_TO_PROTO = {name: index for index, name in enumerate(STATUSES, start=1)}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}


def status_name(value: int) -> str:
    """ACTIVE, ACKNOWLEDGED or CLEARED for an AlarmStatus value; "" for unspecified."""
    return _STATUS_FROM_PROTO.get(value, "")


def classification_name(value: int) -> str:
    """INTERNAL, ALARM, ... for a Classification enum value; "" for unspecified or unknown."""
    return _CLASSIFICATION_FROM_PROTO.get(value, "")


def _to_timestamp(micros: int) -> Timestamp:
    seconds, fraction = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=fraction * 1000)


def _from_timestamp(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def timestamp_micros(message: Any, name: str) -> int | None:
    """A Timestamp field of `message` in epoch microseconds, or None when unset."""
    return _from_timestamp(getattr(message, name)) if message.HasField(name) else None


# The standard fields by how they reach the message: as they are, as a Timestamp (set only
# when present, for the optional ones), or by a rule of their own below. Pairs of (Event
# attribute, proto field), computed once: this is every answer's hot path.
_AS_IS = tuple(
    (f.attribute, f.proto)
    for f in FIELDS
    if f.kind in (Kind.TEXT, Kind.INTEGER, Kind.BOOLEAN)
    and f.attribute not in ("classification", "status")
)
_TIMES = tuple((f.attribute, f.proto) for f in FIELDS if f.kind is Kind.TIME and not f.optional)
_OPTIONAL_TIMES = tuple(
    (f.attribute, f.proto) for f in FIELDS if f.kind is Kind.TIME and f.optional
)


def _set_timestamp(field: Timestamp, micros: int) -> None:
    seconds, fraction = divmod(micros, 1_000_000)
    field.seconds = seconds
    field.nanos = fraction * 1000


def event_to_proto(event: Event) -> event_pb2.Event:
    # Only values that differ from proto3's defaults are passed (the message is the same),
    # and Timestamps are filled in place rather than built and copied: about three times
    # faster than passing every field.
    values: dict[str, Any] = {}
    for attribute, proto in _AS_IS:
        value = getattr(event, attribute)
        if value:
            values[proto] = value
    classification = _CLASSIFICATION_TO_PROTO.get(event.classification, 0)
    if classification:
        values["classification"] = classification
    status = _STATUS_TO_PROTO.get(event.status, 0)
    if status:
        values["status"] = status
    message = event_pb2.Event(**values)
    for attribute, proto in _TIMES:
        _set_timestamp(getattr(message, proto), getattr(event, attribute))
    for attribute, proto in _OPTIONAL_TIMES:
        moment = getattr(event, attribute)
        if moment is not None:
            _set_timestamp(getattr(message, proto), moment)
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
        _set_custom_value(message.custom_fields[name], value)
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
    if name == "status":
        return _STATUS_FROM_PROTO.get(message.status, "")
    if name == "payload":
        return Payload(
            message.payload.content_type or "application/octet-stream", message.payload.data
        )
    if name == "severity":
        return int(message.severity)
    return getattr(message, name)


_SETTABLE_NAMES = frozenset(SETTABLE)
_SOURCE_FIELDS = frozenset({"source_text", "source_object"})


def _set_fields(message: event_pb2.Event, listed: Listed | None = None) -> dict[str, Any]:
    """Every settable field that is set, from ListFields: the hot path of streamed ingest,
    which asks each field once instead of probing every field by name."""
    fields: dict[str, Any] = {}
    for descriptor, value in message.ListFields() if listed is None else listed:
        name = descriptor.name
        if name in _SOURCE_FIELDS:
            fields["source"] = _field_value(message, "source")
        elif name in ("acknowledged", "internal"):
            fields[name] = True  # refused by the domain with its own rule
        elif name == "status":  # refused by the domain on create, compared on update
            fields[name] = _STATUS_FROM_PROTO.get(value, str(value))
        elif name == "custom_fields":
            fields[name] = {key: _custom_value(v) for key, v in message.custom_fields.items()}
        elif name in _SETTABLE_NAMES:
            fields[name] = value if type(value) is str else _field_value(message, name)
    return fields


def fields_from_proto(
    message: event_pb2.Event, only: Iterable[str] = (), listed: Listed | None = None
) -> dict[str, Any]:
    """The canonical fields a caller set: those named in `only`, else every non-default one
    (`listed`: the message's ListFields(), when the caller has it). Setting output-only
    fields (other than etag, read by update) is refused, never ignored."""
    requested = list(only)
    if not requested:
        return _set_fields(message, listed)
    fields: dict[str, Any] = {}
    # `custom_fields` names the whole map: its values change as the event's type allows.
    with_custom = "custom_fields" in requested
    names = [n for n in requested if n != "custom_fields"]
    for name in names:
        if name not in SETTABLE:
            raise invalid("update_fields", f"{name!r} is not a settable Event field")
    for name in names:
        fields[name] = _field_value(message, name)
    for name in ("acknowledged", "internal"):
        if getattr(message, name):
            fields[name] = True  # refused by the domain with its own rule
    if message.status:
        fields["status"] = _STATUS_FROM_PROTO.get(message.status, str(message.status))
    if message.custom_fields and with_custom:
        fields["custom_fields"] = {
            name: _custom_value(value) for name, value in message.custom_fields.items()
        }
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


def _custom_value(value: event_pb2.FieldValue) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "timestamp_value":
        return Instant(_from_timestamp(value.timestamp_value))
    return None if kind is None else getattr(value, kind)


def event_type_to_proto(event_type: EventType) -> event_type_pb2.EventType:
    return event_type_pb2.EventType(
        id=event_type.id,
        name=event_type.name,
        parent_id=event_type.parent_id,
        fields=[
            event_type_pb2.FieldDefinition(
                name=d.name,
                type=event_type_pb2.FieldType.Value(d.type.value),  # type: ignore[arg-type]
                values=d.values,
                required=d.required,
                filterable=d.filterable,
                updatable=d.updatable,
            )
            for d in event_type.fields
        ],
        scope=event_type_pb2.Scope.Value(event_type.scope.value),  # type: ignore[arg-type]
        ttl=event_type.ttl_days,
        deduplicate_alarms=event_type.deduplicate_alarms,
        etag=event_type.etag,
        tenant_id=event_type.tenant_id,
        create_time=_to_timestamp(event_type.create_time),
        update_time=_to_timestamp(event_type.update_time),
    )


def spec_from_proto(message: event_type_pb2.EventType, fields_given: bool = False) -> EventTypeSpec:
    """What the caller asks for; output-only fields are refused, never ignored. An empty
    `fields` list means "not given" unless `fields_given` (REST knows a sent `[]`)."""
    violations = [
        FieldViolation(json_name, "output only")
        for name, json_name in (
            ("tenant_id", "tenantId"),
            ("create_time", "createTime"),
            ("update_time", "updateTime"),
        )
        if (message.HasField(name) if name != "tenant_id" else message.tenant_id)
    ]
    fields = []
    for index, d in enumerate(message.fields):
        if d.type == event_type_pb2.FIELD_TYPE_UNSPECIFIED:
            violations.append(
                FieldViolation(f"fields[{index}].type", f"required: one of {', '.join(FieldType)}")
            )
            continue
        fields.append(
            FieldDefinition(
                name=d.name,
                type=FieldType(event_type_pb2.FieldType.Name(d.type)),
                values=tuple(d.values),
                required=d.required,
                filterable=d.filterable,
                updatable=d.updatable,
            )
        )
    if violations:
        raise InvalidInput(violations)
    return EventTypeSpec(
        id=message.id,
        name=message.name,
        parent_id=message.parent_id,
        fields=tuple(fields) if fields or fields_given else None,
        scope=Scope(event_type_pb2.Scope.Name(message.scope)) if message.scope else None,
        ttl_days=message.ttl,
        deduplicate_alarms=message.deduplicate_alarms
        if message.HasField("deduplicate_alarms")
        else None,
    )


def _set_custom_value(field: event_pb2.FieldValue, value: Any) -> None:
    if isinstance(value, Instant):
        field.timestamp_value.CopyFrom(_to_timestamp(value.micros))
    elif isinstance(value, bool):
        field.boolean_value = value
    elif isinstance(value, int):
        field.integer_value = value
    elif isinstance(value, float):
        field.double_value = value
    else:
        field.string_value = str(value)


def fields_to_proto(fields: dict[str, Any]) -> event_pb2.Event:
    """The message a gRPC client sends for canonical fields (as rest_json parses them): the
    inverse of fields_from_proto, so that the command line reads the REST JSON of events."""
    message = event_pb2.Event()
    for name, value in fields.items():
        if name == "timestamp":
            message.timestamp.CopyFrom(_to_timestamp(value))
        elif name == "source":
            if isinstance(value, dict):
                message.source_object.update(value)
            else:
                message.source_text = value
        elif name == "classification":
            if value not in _CLASSIFICATION_TO_PROTO:
                raise invalid("classification", f"must be one of {', '.join(CLASSIFICATIONS)}")
            message.classification = _CLASSIFICATION_TO_PROTO[value]  # type: ignore[assignment]
        elif name == "payload":
            message.payload.content_type = value.content_type
            message.payload.data = value.data
        elif name == "custom_fields":
            for key, item in value.items():
                _set_custom_value(message.custom_fields[key], item)
        else:
            setattr(message, name, value)
    return message


def event_from_proto(message: event_pb2.Event) -> Event:
    """A stored event as a gRPC client receives it, for the REST JSON views of rest_json."""
    fields = {name: _field_value(message, name) for name in SETTABLE if name != "payload"}
    return Event(
        id=message.id,
        tenant_id=message.tenant_id,
        create_time=_from_timestamp(message.create_time),
        update_time=_from_timestamp(message.update_time),
        etag=message.etag,
        acknowledged=message.acknowledged,
        acknowledged_at=timestamp_micros(message, "acknowledged_at"),
        acknowledged_by=message.acknowledged_by,
        status=_STATUS_FROM_PROTO.get(message.status, ""),
        cleared_at=timestamp_micros(message, "cleared_at"),
        cleared_by=message.cleared_by,
        internal=message.internal,
        payload=_field_value(message, "payload") if message.HasField("payload") else None,
        custom_fields={k: _custom_value(v) for k, v in message.custom_fields.items()},
        **fields,
    )


def transition_to_proto(transition: Transition) -> event_pb2.Transition:
    message = event_pb2.Transition(
        change=transition.change,
        from_status=_STATUS_TO_PROTO.get(transition.from_status, 0),  # type: ignore[arg-type]
        to_status=_STATUS_TO_PROTO.get(transition.to_status, 0),  # type: ignore[arg-type]
        by=transition.by,
        event=event_to_proto(transition.subject),
    )
    _set_timestamp(message.time, transition.at)
    return message
