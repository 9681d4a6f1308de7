"""EventSearchService, find (docs/find-api.md#find) for gRPC with JSON text in and out, and
its REST twin EventSearchRestService: the raw body in, Elasticsearch's response document
out."""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2

from service import rest_json
from service.auth import current_principal
from service.domain.find import EventFinder
from service.domain.find_answer import (
    MAX_GRPC_ANSWER_BYTES,
    MAX_REST_ANSWER_BYTES,
    check_answer_size,
)
from service.v1 import event_search_rest_service_pb2_grpc, event_search_service_pb2_grpc
from service.v1 import event_search_service_pb2 as pb


async def _find_rest(
    finder: EventFinder, request: pb.RestFindEventsRequest
) -> httpbody_pb2.HttpBody:
    document: Any = rest_json.loads(request.body.data) if request.body.data else {}
    answer = await finder.find(current_principal(), document, include_shared=request.include_shared)
    data = rest_json.dumps(answer)
    check_answer_size(len(data), MAX_REST_ANSWER_BYTES)
    return httpbody_pb2.HttpBody(content_type="application/json", data=data)


class EventSearchServicer(event_search_service_pb2_grpc.EventSearchServiceServicer):
    def __init__(self, finder: EventFinder) -> None:
        self._finder = finder

    async def FindEvents(
        self, request: pb.FindEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindEventsResponse:
        # No query at all is PROPERTY_REQUIRED, as over REST, not malformed JSON.
        text = request.query_json.encode()
        document = rest_json.loads(text, "queryJson") if text.strip() else {}
        answer = await self._finder.find(
            current_principal(), document, include_shared=request.include_shared
        )
        text = rest_json.dumps(answer)
        check_answer_size(len(text), MAX_GRPC_ANSWER_BYTES)
        return pb.FindEventsResponse(result_json=text.decode())

    async def RestFindEvents(
        self, request: pb.RestFindEventsRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        """Deprecated: EventSearchRestService.RestFindEvents (docs/api-conventions.md)."""
        return await _find_rest(self._finder, request)


class EventSearchRestServicer(event_search_rest_service_pb2_grpc.EventSearchRestServiceServicer):
    def __init__(self, finder: EventFinder) -> None:
        self._finder = finder

    async def RestFindEvents(
        self, request: pb.RestFindEventsRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        return await _find_rest(self._finder, request)
