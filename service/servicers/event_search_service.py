"""EventSearchService: seed 002's find for gRPC (JSON text in and out) and for REST (the raw
body in, Elasticsearch's response document out)."""

from __future__ import annotations

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
from service.v1 import event_search_service_pb2 as pb
from service.v1 import event_search_service_pb2_grpc


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
        document = rest_json.loads(request.body.data) if request.body.data else {}
        answer = await self._finder.find(
            current_principal(), document, include_shared=request.include_shared
        )
        data = rest_json.dumps(answer)
        check_answer_size(len(data), MAX_REST_ANSWER_BYTES)
        return httpbody_pb2.HttpBody(content_type="application/json", data=data)
