"""EventTypeService: the typed gRPC API for event types. Translates messages; the rules live
in the domain (service.domain.event_types)."""

from __future__ import annotations

import grpc

from service.auth import current_principal
from service.convert import event_type_to_proto, spec_from_proto
from service.domain.errors import invalid
from service.domain.event_types import EventTypeManager
from service.servicers import decode_offset_token, encode_offset_token
from service.v1 import event_type_service_pb2 as pb
from service.v1 import event_type_service_pb2_grpc


class EventTypeServicer(event_type_service_pb2_grpc.EventTypeServiceServicer):
    def __init__(self, types: EventTypeManager) -> None:
        self._types = types

    async def CreateEventType(
        self, request: pb.CreateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateEventTypeResponse:
        if request.event_type.etag:
            raise invalid("etag", "output only on create")
        created = await self._types.create(current_principal(), spec_from_proto(request.event_type))
        return pb.CreateEventTypeResponse(event_type=event_type_to_proto(created))

    async def GetEventType(
        self, request: pb.GetEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEventTypeResponse:
        found = await self._types.get(current_principal(), request.id)
        return pb.GetEventTypeResponse(event_type=event_type_to_proto(found))

    async def ListEventTypes(
        self, request: pb.ListEventTypesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEventTypesResponse:
        offset = decode_offset_token(request.page_token, "page_token")
        found, total = await self._types.list_types(current_principal(), offset, request.page_size)
        end = offset + len(found)
        return pb.ListEventTypesResponse(
            event_types=[event_type_to_proto(t) for t in found],
            next_page_token=encode_offset_token(end) if end < total else "",
            total_size=total,
        )

    async def UpdateEventType(
        self, request: pb.UpdateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateEventTypeResponse:
        updated = await self._types.update(
            current_principal(),
            request.id,
            spec_from_proto(request.event_type),
            request.event_type.etag or None,
        )
        return pb.UpdateEventTypeResponse(event_type=event_type_to_proto(updated))

    async def DeleteEventType(
        self, request: pb.DeleteEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEventTypeResponse:
        await self._types.delete(current_principal(), request.id, request.etag or None)
        return pb.DeleteEventTypeResponse()
