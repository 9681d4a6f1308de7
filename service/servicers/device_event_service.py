"""DeviceEventService (typed gRPC) and DeviceEventRestService (docs/device-api.md)."""

from __future__ import annotations

import grpc
from google.api import httpbody_pb2

from service import rest_json
from service.auth import current_principal
from service.convert import event_to_proto, report_fields_from_proto
from service.domain.device_events import DeviceEventReporter
from service.domain.errors import AlreadyExists
from service.errors import retry_after_header, to_device_error
from service.servicers.rest import JSON, base_url
from service.v1 import (
    device_event_rest_service_pb2,
    device_event_rest_service_pb2_grpc,
    device_event_service_pb2,
    device_event_service_pb2_grpc,
)

REST_REPORT_METHOD = "/eventmgmt.v1.DeviceEventRestService/RestReportDeviceEvent"


def _prefer(context: grpc.aio.ServicerContext) -> str:
    return ",".join(str(v) for k, v in context.invocation_metadata() or () if k == "prefer")


def wants_async(prefer: str | None) -> bool:
    """True when an RFC 7240 `Prefer` header asks for `respond-async`."""
    if not prefer:
        return False
    tokens = (p.split(";")[0].strip().lower() for p in prefer.split(","))
    return "respond-async" in tokens


class DeviceEventServicer(device_event_service_pb2_grpc.DeviceEventServiceServicer):
    def __init__(self, reporter: DeviceEventReporter) -> None:
        self._reporter = reporter

    async def ReportDeviceEvent(
        self,
        request: device_event_service_pb2.ReportDeviceEventRequest,
        context: grpc.aio.ServicerContext,
    ) -> device_event_service_pb2.ReportDeviceEventResponse:
        principal = current_principal()
        device = await self._reporter.check_access(principal, request.tenant_id, request.device_id)
        fields = report_fields_from_proto(request)
        event, pending = await self._reporter.report(
            principal, device, fields, respond_async=request.respond_async
        )
        return device_event_service_pb2.ReportDeviceEventResponse(
            event=event_to_proto(event), pending=pending
        )


class DeviceEventRestServicer(device_event_rest_service_pb2_grpc.DeviceEventRestServiceServicer):
    def __init__(self, reporter: DeviceEventReporter) -> None:
        self._reporter = reporter

    async def RestReportDeviceEvent(
        self,
        request: device_event_rest_service_pb2.RestReportDeviceEventRequest,
        context: grpc.aio.ServicerContext,
    ) -> httpbody_pb2.HttpBody:
        principal = current_principal()
        # The path's ids are checked before the body: a report for a tenant or device that
        # does not exist is a 404 whatever it contains.
        device = await self._reporter.check_access(principal, request.tenant_id, request.device_id)
        fields, violations = rest_json.parse_device_report(request.body.data)
        event, pending = await self._reporter.report(
            principal,
            device,
            fields,
            respond_async=wants_async(_prefer(context)),
            syntax_violations=violations,
        )
        base = base_url(context)
        headers = [("x-http-code", "202" if pending else "201")]
        headers.append(("location", f"{base}/events/{event.id}"))
        if pending:
            headers.append(("preference-applied", "respond-async"))
        await context.send_initial_metadata(headers)
        return httpbody_pb2.HttpBody(
            content_type=JSON, data=rest_json.dumps(rest_json.device_event_document(event, base))
        )


async def answer_device_error(
    error: BaseException, context: grpc.aio.ServicerContext
) -> httpbody_pb2.HttpBody:
    """The device path's failure answer: its status through `x-http-code`, its body exactly."""
    status, code, message = to_device_error(error)
    headers = [("x-http-code", str(status))]
    if isinstance(error, AlreadyExists) and error.existing_id:
        headers.append(("location", f"{base_url(context)}/events/{error.existing_id}"))
    retry = retry_after_header(error)
    if retry is not None:
        headers.append(retry)
    await context.send_initial_metadata(headers)
    return rest_json.json_body(rest_json.device_error_document(code, message))
