from service.v1 import event_type_pb2 as _event_type_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateEventTypeRequest(_message.Message):
    __slots__ = ("event_type",)
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    event_type: _event_type_pb2.EventType
    def __init__(self, event_type: _Optional[_Union[_event_type_pb2.EventType, _Mapping]] = ...) -> None: ...

class CreateEventTypeResponse(_message.Message):
    __slots__ = ("event_type",)
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    event_type: _event_type_pb2.EventType
    def __init__(self, event_type: _Optional[_Union[_event_type_pb2.EventType, _Mapping]] = ...) -> None: ...

class GetEventTypeRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetEventTypeResponse(_message.Message):
    __slots__ = ("event_type",)
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    event_type: _event_type_pb2.EventType
    def __init__(self, event_type: _Optional[_Union[_event_type_pb2.EventType, _Mapping]] = ...) -> None: ...

class ListEventTypesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEventTypesResponse(_message.Message):
    __slots__ = ("event_types", "next_page_token", "total_size")
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedCompositeFieldContainer[_event_type_pb2.EventType]
    next_page_token: str
    total_size: int
    def __init__(self, event_types: _Optional[_Iterable[_Union[_event_type_pb2.EventType, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class UpdateEventTypeRequest(_message.Message):
    __slots__ = ("id", "event_type")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    event_type: _event_type_pb2.EventType
    def __init__(self, id: _Optional[str] = ..., event_type: _Optional[_Union[_event_type_pb2.EventType, _Mapping]] = ...) -> None: ...

class UpdateEventTypeResponse(_message.Message):
    __slots__ = ("event_type",)
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    event_type: _event_type_pb2.EventType
    def __init__(self, event_type: _Optional[_Union[_event_type_pb2.EventType, _Mapping]] = ...) -> None: ...

class DeleteEventTypeRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: int
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[int] = ...) -> None: ...

class DeleteEventTypeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
