import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]
    SEVERITY_HIGH: _ClassVar[Severity]
    SEVERITY_MEDIUM: _ClassVar[Severity]
    SEVERITY_LOW: _ClassVar[Severity]
    SEVERITY_TRIVIAL: _ClassVar[Severity]

class Classification(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLASSIFICATION_UNSPECIFIED: _ClassVar[Classification]
    CLASSIFICATION_INTERNAL: _ClassVar[Classification]
    CLASSIFICATION_ALARM: _ClassVar[Classification]
    CLASSIFICATION_WARNING: _ClassVar[Classification]
    CLASSIFICATION_NOTIFICATION: _ClassVar[Classification]

class AlarmStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALARM_STATUS_UNSPECIFIED: _ClassVar[AlarmStatus]
    ALARM_STATUS_ACTIVE: _ClassVar[AlarmStatus]
    ALARM_STATUS_ACKNOWLEDGED: _ClassVar[AlarmStatus]
    ALARM_STATUS_CLEARED: _ClassVar[AlarmStatus]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_CRITICAL: Severity
SEVERITY_HIGH: Severity
SEVERITY_MEDIUM: Severity
SEVERITY_LOW: Severity
SEVERITY_TRIVIAL: Severity
CLASSIFICATION_UNSPECIFIED: Classification
CLASSIFICATION_INTERNAL: Classification
CLASSIFICATION_ALARM: Classification
CLASSIFICATION_WARNING: Classification
CLASSIFICATION_NOTIFICATION: Classification
ALARM_STATUS_UNSPECIFIED: AlarmStatus
ALARM_STATUS_ACTIVE: AlarmStatus
ALARM_STATUS_ACKNOWLEDGED: AlarmStatus
ALARM_STATUS_CLEARED: AlarmStatus

class Payload(_message.Message):
    __slots__ = ("content_type", "data")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    data: bytes
    def __init__(self, content_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class FieldValue(_message.Message):
    __slots__ = ("string_value", "integer_value", "double_value", "boolean_value", "timestamp_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INTEGER_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOLEAN_VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    integer_value: int
    double_value: float
    boolean_value: bool
    timestamp_value: _timestamp_pb2.Timestamp
    def __init__(self, string_value: _Optional[str] = ..., integer_value: _Optional[int] = ..., double_value: _Optional[float] = ..., boolean_value: _Optional[bool] = ..., timestamp_value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "tenant_id", "type_id", "correlation_id", "entity_type", "entity_id", "domain", "timestamp", "create_time", "update_time", "etag", "severity", "code", "description", "source_text", "source_object", "classification", "category", "acknowledgement_required", "acknowledged", "acknowledged_at", "acknowledged_by", "app_id", "internal", "payload", "custom_fields", "status", "cleared_at", "cleared_by", "count", "first_occurrence_time", "last_occurrence_time")
    class CustomFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FieldValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FieldValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OBJECT_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGEMENT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_BY_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELDS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CLEARED_AT_FIELD_NUMBER: _ClassVar[int]
    CLEARED_BY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_OCCURRENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_OCCURRENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    type_id: str
    correlation_id: str
    entity_type: str
    entity_id: str
    domain: str
    timestamp: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: int
    severity: Severity
    code: str
    description: str
    source_text: str
    source_object: _struct_pb2.Struct
    classification: Classification
    category: str
    acknowledgement_required: bool
    acknowledged: bool
    acknowledged_at: _timestamp_pb2.Timestamp
    acknowledged_by: str
    app_id: str
    internal: bool
    payload: Payload
    custom_fields: _containers.MessageMap[str, FieldValue]
    status: AlarmStatus
    cleared_at: _timestamp_pb2.Timestamp
    cleared_by: str
    count: int
    first_occurrence_time: _timestamp_pb2.Timestamp
    last_occurrence_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., type_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., entity_type: _Optional[str] = ..., entity_id: _Optional[str] = ..., domain: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[int] = ..., severity: _Optional[_Union[Severity, str]] = ..., code: _Optional[str] = ..., description: _Optional[str] = ..., source_text: _Optional[str] = ..., source_object: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., classification: _Optional[_Union[Classification, str]] = ..., category: _Optional[str] = ..., acknowledgement_required: _Optional[bool] = ..., acknowledged: _Optional[bool] = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acknowledged_by: _Optional[str] = ..., app_id: _Optional[str] = ..., internal: _Optional[bool] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., custom_fields: _Optional[_Mapping[str, FieldValue]] = ..., status: _Optional[_Union[AlarmStatus, str]] = ..., cleared_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cleared_by: _Optional[str] = ..., count: _Optional[int] = ..., first_occurrence_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_occurrence_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("change", "from_status", "to_status", "by", "time", "event")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    change: str
    from_status: AlarmStatus
    to_status: AlarmStatus
    by: str
    time: _timestamp_pb2.Timestamp
    event: Event
    def __init__(self, change: _Optional[str] = ..., from_status: _Optional[_Union[AlarmStatus, str]] = ..., to_status: _Optional[_Union[AlarmStatus, str]] = ..., by: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...
