import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FieldType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_TYPE_UNSPECIFIED: _ClassVar[FieldType]
    STRING: _ClassVar[FieldType]
    INTEGER: _ClassVar[FieldType]
    DOUBLE: _ClassVar[FieldType]
    BOOLEAN: _ClassVar[FieldType]
    TIMESTAMP: _ClassVar[FieldType]
    ENUM: _ClassVar[FieldType]

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_UNSPECIFIED: _ClassVar[Scope]
    LOCAL: _ClassVar[Scope]
    GLOBAL: _ClassVar[Scope]
FIELD_TYPE_UNSPECIFIED: FieldType
STRING: FieldType
INTEGER: FieldType
DOUBLE: FieldType
BOOLEAN: FieldType
TIMESTAMP: FieldType
ENUM: FieldType
SCOPE_UNSPECIFIED: Scope
LOCAL: Scope
GLOBAL: Scope

class FieldDefinition(_message.Message):
    __slots__ = ("name", "type", "values", "required", "filterable", "updatable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    FILTERABLE_FIELD_NUMBER: _ClassVar[int]
    UPDATABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FieldType
    values: _containers.RepeatedScalarFieldContainer[str]
    required: bool
    filterable: bool
    updatable: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FieldType, str]] = ..., values: _Optional[_Iterable[str]] = ..., required: _Optional[bool] = ..., filterable: _Optional[bool] = ..., updatable: _Optional[bool] = ...) -> None: ...

class EventType(_message.Message):
    __slots__ = ("id", "name", "parent_id", "fields", "scope", "ttl", "etag", "tenant_id", "create_time", "update_time", "deduplicate_alarms")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATE_ALARMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    parent_id: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldDefinition]
    scope: Scope
    ttl: int
    etag: int
    tenant_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    deduplicate_alarms: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., parent_id: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldDefinition, _Mapping]]] = ..., scope: _Optional[_Union[Scope, str]] = ..., ttl: _Optional[int] = ..., etag: _Optional[int] = ..., tenant_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deduplicate_alarms: _Optional[bool] = ...) -> None: ...
