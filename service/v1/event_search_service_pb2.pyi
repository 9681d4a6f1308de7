from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FindEventsRequest(_message.Message):
    __slots__ = ("query_json", "include_shared")
    QUERY_JSON_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SHARED_FIELD_NUMBER: _ClassVar[int]
    query_json: str
    include_shared: bool
    def __init__(self, query_json: _Optional[str] = ..., include_shared: _Optional[bool] = ...) -> None: ...

class FindEventsResponse(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class RestFindEventsRequest(_message.Message):
    __slots__ = ("body", "include_shared")
    BODY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SHARED_FIELD_NUMBER: _ClassVar[int]
    body: _httpbody_pb2.HttpBody
    include_shared: bool
    def __init__(self, body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., include_shared: _Optional[bool] = ...) -> None: ...
