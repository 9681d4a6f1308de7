from service.v1 import cloudevent_pb2 as _cloudevent_pb2
from service.v1 import event_pb2 as _event_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_FORMAT_UNSPECIFIED: _ClassVar[EventFormat]
    EVENT_FORMAT_CLOUDEVENTS: _ClassVar[EventFormat]
EVENT_FORMAT_UNSPECIFIED: EventFormat
EVENT_FORMAT_CLOUDEVENTS: EventFormat

class SubscribeEventsRequest(_message.Message):
    __slots__ = ("cursor", "domain", "type_ids", "severities", "classifications", "entity_type", "entity_id", "heartbeat_seconds", "format", "statuses", "filter")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    domain: str
    type_ids: _containers.RepeatedScalarFieldContainer[str]
    severities: _containers.RepeatedScalarFieldContainer[_event_pb2.Severity]
    classifications: _containers.RepeatedScalarFieldContainer[_event_pb2.Classification]
    entity_type: str
    entity_id: str
    heartbeat_seconds: int
    format: EventFormat
    statuses: _containers.RepeatedScalarFieldContainer[_event_pb2.AlarmStatus]
    filter: str
    def __init__(self, cursor: _Optional[str] = ..., domain: _Optional[str] = ..., type_ids: _Optional[_Iterable[str]] = ..., severities: _Optional[_Iterable[_Union[_event_pb2.Severity, str]]] = ..., classifications: _Optional[_Iterable[_Union[_event_pb2.Classification, str]]] = ..., entity_type: _Optional[str] = ..., entity_id: _Optional[str] = ..., heartbeat_seconds: _Optional[int] = ..., format: _Optional[_Union[EventFormat, str]] = ..., statuses: _Optional[_Iterable[_Union[_event_pb2.AlarmStatus, str]]] = ..., filter: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FellBehind(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SubscribeEventsResponse(_message.Message):
    __slots__ = ("cursor", "event", "heartbeat", "fell_behind", "cloud_event", "transition")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    FELL_BEHIND_FIELD_NUMBER: _ClassVar[int]
    CLOUD_EVENT_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    event: _event_pb2.Event
    heartbeat: Heartbeat
    fell_behind: FellBehind
    cloud_event: _cloudevent_pb2.CloudEvent
    transition: _event_pb2.Transition
    def __init__(self, cursor: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., fell_behind: _Optional[_Union[FellBehind, _Mapping]] = ..., cloud_event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ..., transition: _Optional[_Union[_event_pb2.Transition, _Mapping]] = ...) -> None: ...

class IngestItem(_message.Message):
    __slots__ = ("idempotency_key", "event")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    event: _event_pb2.Event
    def __init__(self, idempotency_key: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class IngestEventsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[IngestItem]
    def __init__(self, items: _Optional[_Iterable[_Union[IngestItem, _Mapping]]] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("idempotency_key", "id", "duplicate", "error", "deduplicated")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    id: str
    duplicate: bool
    error: _status_pb2.Status
    deduplicated: bool
    def __init__(self, idempotency_key: _Optional[str] = ..., id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., deduplicated: _Optional[bool] = ...) -> None: ...

class IngestEventsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IngestResult]
    def __init__(self, results: _Optional[_Iterable[_Union[IngestResult, _Mapping]]] = ...) -> None: ...
