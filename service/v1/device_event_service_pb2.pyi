import datetime

from service.v1 import event_pb2 as _event_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportDeviceEventRequest(_message.Message):
    __slots__ = ("tenant_id", "device_id", "type_id", "description", "app_id", "severity", "data_json", "timestamp", "respond_async")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RESPOND_ASYNC_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    device_id: str
    type_id: str
    description: str
    app_id: str
    severity: _event_pb2.Severity
    data_json: str
    timestamp: _timestamp_pb2.Timestamp
    respond_async: bool
    def __init__(self, tenant_id: _Optional[str] = ..., device_id: _Optional[str] = ..., type_id: _Optional[str] = ..., description: _Optional[str] = ..., app_id: _Optional[str] = ..., severity: _Optional[_Union[_event_pb2.Severity, str]] = ..., data_json: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., respond_async: _Optional[bool] = ...) -> None: ...

class ReportDeviceEventResponse(_message.Message):
    __slots__ = ("event", "pending")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    pending: bool
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., pending: _Optional[bool] = ...) -> None: ...
