"""EventService: the typed gRPC API. Translates messages; the rules live in the domain."""

from __future__ import annotations

import grpc

from service.auth import current_principal
from service.convert import event_to_proto, fields_from_proto, timestamp_micros
from service.domain.events import EventManager, check_page_size, parse_sort
from service.domain.listing import ListRequest
from service.servicers import kept_warning
from service.v1 import event_service_pb2 as pb
from service.v1 import event_service_pb2_grpc

# The domain's count modes (service/domain/listing.py) by their gRPC enum.
_COUNT_MODES = {
    pb.TOTAL_SIZE_MODE_UNSPECIFIED: "capped",
    pb.TOTAL_SIZE_MODE_CAPPED: "capped",
    pb.TOTAL_SIZE_MODE_EXACT: "exact",
}


def _parse_order_by(order_by: str) -> list[tuple[str, str]]:
    keys = []
    for part in filter(None, (p.strip() for p in order_by.split(","))):
        name, _, direction = part.partition(" ")
        keys.append((name, direction.strip()))
    return keys


class EventServicer(event_service_pb2_grpc.EventServiceServicer):
    def __init__(self, events: EventManager) -> None:
        self._events = events

    async def CreateEvent(
        self, request: pb.CreateEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateEventResponse:
        created = await self._events.record(current_principal(), fields_from_proto(request.event))
        return pb.CreateEventResponse(
            event=event_to_proto(created.event), deduplicated=created.deduplicated
        )

    async def GetEvent(
        self, request: pb.GetEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEventResponse:
        event = await self._events.get(
            current_principal(), request.id, include_shared=request.include_shared
        )
        return pb.GetEventResponse(event=event_to_proto(event))

    async def ListEvents(
        self, request: pb.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEventsResponse:
        list_request = ListRequest(
            sort=parse_sort(_parse_order_by(request.order_by)),
            size=check_page_size(request.page_size, "page_size"),
            page_token=request.page_token,
            filter=request.filter,
            start_time=timestamp_micros(request, "start_time"),
            end_time=timestamp_micros(request, "end_time"),
            severities=tuple(int(s) for s in request.severities),
            code=request.code,
            entity_id=request.entity_id,
            entity_type=request.entity_type,
            history=request.history,
            include_shared=request.include_shared,
            token_field="page_token",
            count=_COUNT_MODES[request.total_size_mode],
            count_field="total_size_mode",
        )
        page = await self._events.list_events(current_principal(), list_request)
        return pb.ListEventsResponse(
            events=[event_to_proto(e) for e in page.events],
            total_size=page.total,
            next_page_token=page.next_token,
            total_size_relation=pb.TOTAL_SIZE_RELATION_EQ
            if page.total_exact
            else pb.TOTAL_SIZE_RELATION_GTE,
        )

    async def UpdateEvent(
        self, request: pb.UpdateEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateEventResponse:
        fields = fields_from_proto(request.event, request.update_fields)
        event, kept = await self._events.update(
            current_principal(), request.id, fields, request.event.etag or None
        )
        if kept:
            await context.send_initial_metadata([("warning", kept_warning(kept))])
        return pb.UpdateEventResponse(event=event_to_proto(event))

    async def AcknowledgeEvent(
        self, request: pb.AcknowledgeEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcknowledgeEventResponse:
        event = await self._events.acknowledge(current_principal(), request.id)
        return pb.AcknowledgeEventResponse(event=event_to_proto(event))

    async def ClearEvent(
        self, request: pb.ClearEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClearEventResponse:
        event = await self._events.clear(current_principal(), request.id)
        return pb.ClearEventResponse(event=event_to_proto(event))
