from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RestGetApiRootRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestCreateEventRequest(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: _httpbody_pb2.HttpBody
    def __init__(self, body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class RestGetEventRequest(_message.Message):
    __slots__ = ("id", "include_shared")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SHARED_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_shared: bool
    def __init__(self, id: _Optional[str] = ..., include_shared: _Optional[bool] = ...) -> None: ...

class RestListEventsRequest(_message.Message):
    __slots__ = ("page", "size", "sort", "filter", "start_time", "end_time", "severity", "code", "entity_id", "entity_type", "include_shared", "history", "page_token", "count")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SHARED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    page: int
    size: int
    sort: _containers.RepeatedScalarFieldContainer[str]
    filter: str
    start_time: str
    end_time: str
    severity: _containers.RepeatedScalarFieldContainer[int]
    code: str
    entity_id: str
    entity_type: str
    include_shared: bool
    history: bool
    page_token: str
    count: str
    def __init__(self, page: _Optional[int] = ..., size: _Optional[int] = ..., sort: _Optional[_Iterable[str]] = ..., filter: _Optional[str] = ..., start_time: _Optional[str] = ..., end_time: _Optional[str] = ..., severity: _Optional[_Iterable[int]] = ..., code: _Optional[str] = ..., entity_id: _Optional[str] = ..., entity_type: _Optional[str] = ..., include_shared: _Optional[bool] = ..., history: _Optional[bool] = ..., page_token: _Optional[str] = ..., count: _Optional[str] = ...) -> None: ...

class RestUpdateEventRequest(_message.Message):
    __slots__ = ("id", "body")
    ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    id: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, id: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class RestAcknowledgeEventRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RestClearEventRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RestSubscribeEventsRequest(_message.Message):
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
    severities: _containers.RepeatedScalarFieldContainer[int]
    classifications: _containers.RepeatedScalarFieldContainer[str]
    entity_type: str
    entity_id: str
    heartbeat_seconds: int
    format: str
    statuses: _containers.RepeatedScalarFieldContainer[str]
    filter: str
    def __init__(self, cursor: _Optional[str] = ..., domain: _Optional[str] = ..., type_ids: _Optional[_Iterable[str]] = ..., severities: _Optional[_Iterable[int]] = ..., classifications: _Optional[_Iterable[str]] = ..., entity_type: _Optional[str] = ..., entity_id: _Optional[str] = ..., heartbeat_seconds: _Optional[int] = ..., format: _Optional[str] = ..., statuses: _Optional[_Iterable[str]] = ..., filter: _Optional[str] = ...) -> None: ...
