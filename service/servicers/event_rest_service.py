"""EventRestService: the documented REST paths behind Envoy. Parses the client's raw JSON
strictly, calls the domain, and answers with the documented JSON and HTTP status."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import grpc
from google.api import httpbody_pb2

from service import cloudevents, rest_json
from service.auth import current_principal
from service.domain.errors import invalid
from service.domain.events import Event, EventManager, check_page_size, parse_sort
from service.domain.filters import parse_time
from service.domain.listing import ListRequest
from service.domain.live import (
    Changed,
    Delivery,
    FellBehind,
    LiveFeed,
    check_heartbeat,
    parse_cursor,
)
from service.domain.parsing import is_digits, parse_digits
from service.servicers import kept_warning
from service.servicers.rest import HAL_JSON, answer, base_url, expected_etag, metadata
from service.v1 import event_rest_service_pb2 as pb
from service.v1 import event_rest_service_pb2_grpc

EVENT_STREAM = "text/event-stream"


def _sse(cursor: int, kind: str, document: Any) -> httpbody_pb2.HttpBody:
    """One server-sent event: the cursor as its id, so EventSource resumes by itself."""
    data = b"id: %d\nevent: %s\ndata: %s\n\n" % (cursor, kind.encode(), rest_json.dumps(document))
    return httpbody_pb2.HttpBody(content_type=EVENT_STREAM, data=data)


def _time_param(text: str, field: str) -> int | None:
    """A time query parameter: ISO-8601 with a zone, or epoch milliseconds as digits."""
    if not text:
        return None
    if is_digits(text):
        return parse_time(parse_digits(text, field, "must be epoch milliseconds"), field)
    return parse_time(text, field)


# Every /liveEvents subscriber that gets an event gets the same bytes for its format and base
# URL: build and serialize them once (the method table sends bytes as they are).
_MESSAGE_CACHE_SIZE = 4096


class EventRestServicer(event_rest_service_pb2_grpc.EventRestServiceServicer):
    def __init__(self, events: EventManager, feed: LiveFeed) -> None:
        self._events = events
        self._feed = feed
        # By feed position, format (CloudEvent or not) and base URL.
        self._messages: OrderedDict[tuple[int, bool, str], bytes] = OrderedDict()

    def _event_message(self, event: Event, as_cloud_event: bool, base: str) -> bytes:
        key = (event.seq, as_cloud_event, base)
        message = self._messages.get(key)
        if message is None:
            data = rest_json.event_document(event, base)
            if as_cloud_event:
                data = cloudevents.structured(event, data)
            message = self._messages[key] = _sse(event.seq, "event", data).SerializeToString()
            if len(self._messages) > _MESSAGE_CACHE_SIZE:
                self._messages.popitem(last=False)
        return message

    async def RestCreateEvent(
        self, request: pb.RestCreateEventRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        fields, _ = rest_json.parse_event(request.body.data)
        created = await self._events.record(current_principal(), fields, entity_required=True)
        event = created.event
        base = base_url(context)
        location = ("location", f"{base}/events/{event.id}")
        document = rest_json.event_document(event, base)
        # A de-duplicated alarm created nothing: 200 with the open alarm it was counted into.
        status = 200 if created.deduplicated else 201
        return await answer(context, document, etag=event.etag, status=status, headers=[location])

    async def RestGetEvent(
        self, request: pb.RestGetEventRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        event = await self._events.get(
            current_principal(), request.id, include_shared=request.include_shared
        )
        document = rest_json.event_document(event, base_url(context))
        return await answer(context, document, etag=event.etag, read=True)

    async def RestListEvents(
        self, request: pb.RestListEventsRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        size = check_page_size(request.size, "size")
        keys = [
            (name.strip(), direction.strip())
            for name, _, direction in (s.partition(",") for s in request.sort if s)
        ]
        list_request = ListRequest(
            sort=parse_sort(keys),
            size=size,
            page=request.page,
            page_token=request.page_token,
            filter=request.filter,
            start_time=_time_param(request.start_time, "startTime"),
            end_time=_time_param(request.end_time, "endTime"),
            severities=tuple(request.severity),
            code=request.code,
            entity_id=request.entity_id,
            entity_type=request.entity_type,
            history=request.history,
            include_shared=request.include_shared,
            count=request.count,
        )
        page = await self._events.list_events(current_principal(), list_request)
        # The links repeat every parameter but the position, so each one lists the same query.
        params: list[tuple[str, Any]] = [("size", size)]
        params += [("sort", s) for s in request.sort]
        for name, value in (
            ("filter", request.filter),
            ("startTime", request.start_time),
            ("endTime", request.end_time),
            ("code", request.code),
            ("entityId", request.entity_id),
            ("entityType", request.entity_type),
            ("count", request.count),
        ):
            if value:
                params.append((name, value))
        params += [("severity", s) for s in request.severity]
        if request.history:
            params.append(("history", "true"))
        if request.include_shared:
            params.append(("includeShared", "true"))

        def query_string(number: int | None, token: str = "") -> str:
            position = [("pageToken", token)] if token else [("page", number)]
            # %20, not `+`, for a space: the gateway keeps `+` a plus, so a link with a
            # filter such as {"entityId": "x"} would come back as invalid JSON.
            return urlencode(position + params, quote_via=quote)

        document = rest_json.page_document(page, base_url(context), query_string)
        return rest_json.json_body(document, HAL_JSON)

    async def RestUpdateEvent(
        self, request: pb.RestUpdateEventRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        fields, extras = rest_json.parse_event(
            request.body.data, extra=("id", "etag", *rest_json.SERVER_OWNED)
        )
        if extras.get("id") not in (None, request.id):
            raise invalid("id", "differs from the id in the path")
        expected = expected_etag(context, extras.get("etag"))
        principal = current_principal()
        if any(name in extras for name in rest_json.COMPARED_SERVER_OWNED):
            # A document read, changed and sent back (AIP-203): what the server owns must be
            # as it was read, else the client believes in a change that cannot happen.
            stored = await self._events.get(principal, request.id, whole_tenant=True)
            rest_json.check_server_owned(extras, rest_json.event_document(stored, ""))
        event, kept = await self._events.update(principal, request.id, fields, expected)
        headers = [("warning", kept_warning(kept))] if kept else []
        document = rest_json.event_document(event, base_url(context))
        return await answer(context, document, etag=event.etag, headers=headers)

    async def RestAcknowledgeEvent(
        self, request: pb.RestAcknowledgeEventRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        event = await self._events.acknowledge(current_principal(), request.id)
        return rest_json.json_body(rest_json.acknowledge_document(event))

    async def RestClearEvent(
        self, request: pb.RestClearEventRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        event = await self._events.clear(current_principal(), request.id)
        document = rest_json.event_document(event, base_url(context))
        return await answer(context, document, etag=event.etag)

    async def RestSubscribeEvents(
        self, request: pb.RestSubscribeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody | bytes]:
        principal = current_principal()
        event_filter = await self._events.live_filter(
            principal,
            request.filter,
            domain=request.domain,
            type_ids=request.type_ids,
            severities=request.severities,
            classifications=request.classifications,
            entity_type=request.entity_type,
            entity_id=request.entity_id,
            statuses=request.statuses,
        )
        last_event_id = metadata(context, "last-event-id")
        if last_event_id is not None:
            after = parse_cursor(last_event_id.strip(), "Last-Event-ID")
        else:
            after = parse_cursor(request.cursor)
        heartbeat = check_heartbeat(request.heartbeat_seconds)
        as_cloud_event = cloudevents.check_format(request.format)
        base = base_url(context)
        notices = self._feed.subscribe(principal, event_filter, after, heartbeat)
        async for notice in notices:
            if isinstance(notice, Delivery):
                yield self._event_message(notice.event, as_cloud_event, base)
            elif isinstance(notice, Changed):
                document = rest_json.transition_document(notice.transition, base)
                yield _sse(notice.cursor, "transition", document)
            elif isinstance(notice, FellBehind):
                # The end of the body is all an HTTP/1.1 client would see of an error status,
                # so the reason travels in the stream itself.
                document = {"reason": notice.reason, "message": notice.message}
                yield _sse(notice.cursor, "fell-behind", {**document, "cursor": str(notice.cursor)})
                return
            else:
                yield _sse(notice.cursor, "heartbeat", {"cursor": str(notice.cursor)})

    async def RestGetApiRoot(
        self, request: pb.RestGetApiRootRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        return rest_json.json_body(rest_json.billboard_document(base_url(context)), HAL_JSON)
