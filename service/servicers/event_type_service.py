"""EventTypeService: one rpc per operation for gRPC and REST. REST bodies arrive raw in
`body` and are parsed strictly here; answers are typed and printed by the gateway."""

from __future__ import annotations

import base64
import json

import grpc
from google.api import httpbody_pb2

from eventmgmt import proto_json
from eventmgmt.auth import current_principal
from eventmgmt.convert import event_type_to_proto, spec_from_proto
from eventmgmt.domain.errors import invalid
from eventmgmt.domain.event_types import EventTypeManager
from eventmgmt.servicers.event_rest_service import _expected_etag, base_url
from eventmgmt.v1 import event_type_pb2, event_type_service_pb2_grpc
from eventmgmt.v1 import event_type_service_pb2 as pb


def _definition(
    typed: event_type_pb2.EventType, has_typed: bool, body: httpbody_pb2.HttpBody
) -> tuple[event_type_pb2.EventType, bool]:
    """The EventType the caller sent, and whether it came as REST JSON."""
    if body.data:
        if has_typed:
            raise invalid("event_type", "send either event_type (gRPC) or a JSON body, not both")
        return proto_json.parse(body.data, event_type_pb2.EventType()), True
    if not has_typed:
        raise invalid("event_type", "required")
    return typed, False


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise invalid("page_token", "is not a token returned by ListEventTypes") from None
    if not isinstance(offset, int) or offset < 0:
        raise invalid("page_token", "is not a token returned by ListEventTypes")
    return offset


class EventTypeServicer(event_type_service_pb2_grpc.EventTypeServiceServicer):
    def __init__(self, types: EventTypeManager) -> None:
        self._types = types

    async def CreateEventType(
        self, request: pb.CreateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateEventTypeResponse:
        message, rest = _definition(
            request.event_type, request.HasField("event_type"), request.body
        )
        if message.etag:
            raise invalid("etag", "output only on create")
        created = await self._types.create(current_principal(), spec_from_proto(message))
        if rest:
            location = f"{base_url(context)}/eventTypes/{created.id}"
            await context.send_initial_metadata([("x-http-code", "201"), ("location", location)])
        return pb.CreateEventTypeResponse(event_type=event_type_to_proto(created))

    async def GetEventType(
        self, request: pb.GetEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEventTypeResponse:
        found = await self._types.get(current_principal(), request.id)
        return pb.GetEventTypeResponse(event_type=event_type_to_proto(found))

    async def ListEventTypes(
        self, request: pb.ListEventTypesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEventTypesResponse:
        offset = _decode_token(request.page_token)
        found, total = await self._types.list(current_principal(), offset, request.page_size)
        end = offset + len(found)
        return pb.ListEventTypesResponse(
            event_types=[event_type_to_proto(t) for t in found],
            next_page_token=_encode_token(end) if end < total else "",
            total_size=total,
        )

    async def UpdateEventType(
        self, request: pb.UpdateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateEventTypeResponse:
        message, _ = _definition(request.event_type, request.HasField("event_type"), request.body)
        expected = _expected_etag(context, message.etag or None)
        updated = await self._types.update(
            current_principal(), request.id, spec_from_proto(message), expected
        )
        return pb.UpdateEventTypeResponse(event_type=event_type_to_proto(updated))

    async def DeleteEventType(
        self, request: pb.DeleteEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEventTypeResponse:
        expected = _expected_etag(context, request.etag or None)
        await self._types.delete(current_principal(), request.id, expected)
        return pb.DeleteEventTypeResponse()
