import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntityShare(_message.Message):
    __slots__ = ("entity_id", "tenant_id", "owner_tenant_id", "create_time", "domain")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    tenant_id: str
    owner_tenant_id: str
    create_time: _timestamp_pb2.Timestamp
    domain: str
    def __init__(self, entity_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., owner_tenant_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., domain: _Optional[str] = ...) -> None: ...

class ShareEntityRequest(_message.Message):
    __slots__ = ("share", "body")
    SHARE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    share: EntityShare
    body: _httpbody_pb2.HttpBody
    def __init__(self, share: _Optional[_Union[EntityShare, _Mapping]] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class ShareEntityResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: EntityShare
    def __init__(self, share: _Optional[_Union[EntityShare, _Mapping]] = ...) -> None: ...

class ListEntitySharesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEntitySharesResponse(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[EntityShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[EntityShare, _Mapping]]] = ...) -> None: ...

class UnshareEntityRequest(_message.Message):
    __slots__ = ("entity_id", "tenant_id")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    tenant_id: str
    def __init__(self, entity_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class UnshareEntityResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
