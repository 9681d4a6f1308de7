import datetime

from service.v1 import event_pb2 as _event_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TotalSizeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOTAL_SIZE_MODE_UNSPECIFIED: _ClassVar[TotalSizeMode]
    TOTAL_SIZE_MODE_CAPPED: _ClassVar[TotalSizeMode]
    TOTAL_SIZE_MODE_EXACT: _ClassVar[TotalSizeMode]

class TotalSizeRelation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOTAL_SIZE_RELATION_UNSPECIFIED: _ClassVar[TotalSizeRelation]
    TOTAL_SIZE_RELATION_EQ: _ClassVar[TotalSizeRelation]
    TOTAL_SIZE_RELATION_GTE: _ClassVar[TotalSizeRelation]
TOTAL_SIZE_MODE_UNSPECIFIED: TotalSizeMode
TOTAL_SIZE_MODE_CAPPED: TotalSizeMode
TOTAL_SIZE_MODE_EXACT: TotalSizeMode
TOTAL_SIZE_RELATION_UNSPECIFIED: TotalSizeRelation
TOTAL_SIZE_RELATION_EQ: TotalSizeRelation
TOTAL_SIZE_RELATION_GTE: TotalSizeRelation

class CreateEventRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class CreateEventResponse(_message.Message):
    __slots__ = ("event", "deduplicated")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    deduplicated: bool
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., deduplicated: _Optional[bool] = ...) -> None: ...

class GetEventRequest(_message.Message):
    __slots__ = ("id", "include_shared")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SHARED_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_shared: bool
    def __init__(self, id: _Optional[str] = ..., include_shared: _Optional[bool] = ...) -> None: ...

class GetEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "order_by", "filter", "start_time", "end_time", "severities", "code", "entity_id", "entity_type", "include_shared", "history", "total_size_mode")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SHARED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_MODE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    order_by: str
    filter: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    severities: _containers.RepeatedScalarFieldContainer[_event_pb2.Severity]
    code: str
    entity_id: str
    entity_type: str
    include_shared: bool
    history: bool
    total_size_mode: TotalSizeMode
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_by: _Optional[str] = ..., filter: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severities: _Optional[_Iterable[_Union[_event_pb2.Severity, str]]] = ..., code: _Optional[str] = ..., entity_id: _Optional[str] = ..., entity_type: _Optional[str] = ..., include_shared: _Optional[bool] = ..., history: _Optional[bool] = ..., total_size_mode: _Optional[_Union[TotalSizeMode, str]] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token", "total_size", "total_size_relation")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_RELATION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    next_page_token: str
    total_size: int
    total_size_relation: TotalSizeRelation
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_relation: _Optional[_Union[TotalSizeRelation, str]] = ...) -> None: ...

class UpdateEventRequest(_message.Message):
    __slots__ = ("id", "event", "update_fields")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    event: _event_pb2.Event
    update_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., update_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class AcknowledgeEventRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class AcknowledgeEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class ClearEventRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ClearEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...
