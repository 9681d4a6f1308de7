from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RestShareEntityRequest(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: _httpbody_pb2.HttpBody
    def __init__(self, body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class RestListEntitySharesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestUnshareEntityRequest(_message.Message):
    __slots__ = ("entity_id", "tenant_id")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    tenant_id: str
    def __init__(self, entity_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...
