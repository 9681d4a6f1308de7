"""EventService: the typed gRPC API. Translates messages; the rules live in the domain."""

from __future__ import annotations

import base64
import json

import grpc

from eventmgmt.auth import current_principal
from eventmgmt.convert import event_to_proto, fields_from_proto
from eventmgmt.domain.errors import invalid
from eventmgmt.domain.events import EventManager, EventQuery, check_page_size, parse_sort
from eventmgmt.servicers import kept_warning
from eventmgmt.v1 import event_service_pb2 as pb
from eventmgmt.v1 import event_service_pb2_grpc


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise invalid("page_token", "is not a token returned by ListEvents") from None
    if not isinstance(offset, int) or offset < 0:
        raise invalid("page_token", "is not a token returned by ListEvents")
    return offset


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
        event = await self._events.create(current_principal(), fields_from_proto(request.event))
        return pb.CreateEventResponse(event=event_to_proto(event))

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
        query = EventQuery(
            sort=parse_sort(_parse_order_by(request.order_by)),
            offset=_decode_token(request.page_token),
            limit=check_page_size(request.page_size, "page_size"),
        )
        page = await self._events.list(current_principal(), query)
        end = query.offset + len(page.events)
        return pb.ListEventsResponse(
            events=[event_to_proto(e) for e in page.events],
            total_size=page.total,
            next_page_token=_encode_token(end) if end < page.total else "",
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
