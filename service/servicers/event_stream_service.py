"""EventStreamService: live subscriptions and streamed ingest. Translates messages; the rules
live in service.domain.live and EventManager."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

import grpc

from service import cloudevents
from service.auth import current_principal
from service.convert import (
    classification_name,
    event_to_proto,
    fields_from_proto,
    status_name,
    transition_to_proto,
)
from service.domain.access import Principal
from service.domain.errors import DomainError, ResourceExhausted
from service.domain.events import Draft, Event, EventManager, IngestOutcome
from service.domain.live import (
    Changed,
    Delivery,
    FellBehind,
    LiveFeed,
    check_heartbeat,
    format_cursor,
    parse_cursor,
)
from service.domain.rate_limits import Operation, RateLimits
from service.errors import to_status_proto
from service.request_checks import check_request
from service.v1 import event_stream_service_pb2 as pb
from service.v1 import event_stream_service_pb2_grpc

MAX_INGEST_BATCH = 1000
INGEST_WINDOW = 8
# Batches read and not yet committed, over every IngestEvents stream of the process: memory
# stays bounded however many streams are open. A stream beyond it waits before reading its
# next batch (HTTP/2 flow control then holds the client's data back); nothing is dropped.
INGEST_BATCHES_IN_FLIGHT = 32
# Every subscriber that gets an event gets the same message: convert and serialize it once
# (the method table sends bytes as they are).
_MESSAGE_CACHE_SIZE = 4096


class EventStreamServicer(event_stream_service_pb2_grpc.EventStreamServiceServicer):
    def __init__(
        self, events: EventManager, feed: LiveFeed, limits: RateLimits | None = None
    ) -> None:
        self._events = events
        self._feed = feed
        self._limits = limits
        self._ingest_budget = asyncio.Semaphore(INGEST_BATCHES_IN_FLIGHT)
        # By feed position and format (CloudEvent or not).
        self._messages: OrderedDict[tuple[int, bool], bytes] = OrderedDict()

    def _event_message(self, event: Event, as_cloud_event: bool) -> bytes:
        key = (event.seq, as_cloud_event)
        message = self._messages.get(key)
        if message is None:
            cursor = format_cursor(event.seq)
            proto = event_to_proto(event)
            if as_cloud_event:
                response = pb.SubscribeEventsResponse(
                    cursor=cursor, cloud_event=cloudevents.to_proto(event, proto)
                )
            else:
                response = pb.SubscribeEventsResponse(cursor=cursor, event=proto)
            message = self._messages[key] = response.SerializeToString()
            if len(self._messages) > _MESSAGE_CACHE_SIZE:
                self._messages.popitem(last=False)
        return message

    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubscribeEventsResponse | bytes]:
        principal = current_principal()
        event_filter = await self._events.live_filter(
            principal,
            request.filter,
            domain=request.domain,
            type_ids=request.type_ids,
            severities=request.severities,
            classifications=[classification_name(c) for c in request.classifications],
            entity_type=request.entity_type,
            entity_id=request.entity_id,
            statuses=[status_name(s) or str(s) for s in request.statuses],
        )
        after = parse_cursor(request.cursor)
        heartbeat = check_heartbeat(request.heartbeat_seconds)
        as_cloud_event = request.format == pb.EVENT_FORMAT_CLOUDEVENTS
        async for notice in self._feed.subscribe(principal, event_filter, after, heartbeat):
            if isinstance(notice, Delivery):
                yield self._event_message(notice.event, as_cloud_event)
            elif isinstance(notice, Changed):
                yield pb.SubscribeEventsResponse(
                    cursor=format_cursor(notice.cursor),
                    transition=transition_to_proto(notice.transition),
                )
            elif isinstance(notice, FellBehind):
                yield pb.SubscribeEventsResponse(
                    cursor=format_cursor(notice.cursor),
                    fell_behind=pb.FellBehind(reason=notice.reason, message=notice.message),
                )
                raise ResourceExhausted(notice.message, reason=notice.reason)
            else:
                yield pb.SubscribeEventsResponse(
                    cursor=format_cursor(notice.cursor), heartbeat=pb.Heartbeat()
                )

    async def IngestEvents(
        self,
        request_iterator: AsyncIterator[pb.IngestEventsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.IngestEventsResponse]:
        principal = current_principal()
        # Batches are read and validated while earlier ones commit (a few in flight per
        # stream, answered in order), so that concurrent commits can share a transaction.
        answers: asyncio.Queue[asyncio.Task[pb.IngestEventsResponse] | None] = asyncio.Queue(
            INGEST_WINDOW
        )

        async def read_requests() -> None:
            requests = aiter(request_iterator)
            try:
                while True:
                    # A batch's share of the process-wide budget is taken before it is read
                    # and given back once it committed (its answer is small).
                    await self._ingest_budget.acquire()
                    try:
                        request = await anext(requests)
                    except BaseException:
                        self._ingest_budget.release()
                        raise
                    task = asyncio.create_task(self._ingest(principal, request))
                    task.add_done_callback(lambda _: self._ingest_budget.release())
                    await answers.put(task)
            except StopAsyncIteration:
                pass
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read_requests())
        try:
            while (answer := await answers.get()) is not None:
                yield await answer
            await reader  # a failed read (a broken stream) ends the call with its error
        finally:
            reader.cancel()
            while not answers.empty():
                pending = answers.get_nowait()
                if pending is not None:
                    pending.cancel()

    async def _ingest(
        self, principal: Principal, request: pb.IngestEventsRequest
    ) -> pb.IngestEventsResponse:
        items = request.items
        if len(items) > MAX_INGEST_BATCH:
            error = to_status_proto(
                ResourceExhausted(
                    f"a batch holds at most {MAX_INGEST_BATCH} events; this one {len(items)}",
                    reason="BATCH_TOO_LARGE",
                )
            )
            return pb.IngestEventsResponse(
                results=[
                    pb.IngestResult(idempotency_key=i.idempotency_key, error=error) for i in items
                ]
            )
        outcomes: list[IngestOutcome | None] = []
        drafts: list[Draft] = []
        for item in items:
            event = item.event
            listed = event.ListFields()  # asked once, for the check and the conversion
            try:
                check_request(event, listed=listed)
                fields = fields_from_proto(event, listed=listed)
            except DomainError as error:
                outcomes.append(IngestOutcome(error=error))
                continue
            outcomes.append(None)
            drafts.append(Draft(fields, item.idempotency_key or None))
        if self._limits is not None and drafts:
            # Each event counts against the create limits; those beyond fail alone.
            granted, refusal = await self._limits.grant(principal, Operation.CREATE, len(drafts))
            if refusal is not None:
                waiting = [i for i, outcome in enumerate(outcomes) if outcome is None]
                for index in waiting[granted:]:
                    outcomes[index] = IngestOutcome(error=refusal)
                drafts = drafts[:granted]
        stored = iter(await self._events.create_many(principal, drafts))
        response = pb.IngestEventsResponse()
        add = response.results.add  # built in place: no result message copied
        for item, outcome in zip(items, outcomes, strict=True):
            done = outcome or next(stored)
            if done.event is not None:
                add(
                    idempotency_key=item.idempotency_key,
                    id=done.event.id,
                    deduplicated=done.deduplicated,
                )
            elif done.duplicate_of is not None:
                add(idempotency_key=item.idempotency_key, id=done.duplicate_of, duplicate=True)
            else:
                assert done.error is not None
                add(idempotency_key=item.idempotency_key, error=to_status_proto(done.error))
        return response
