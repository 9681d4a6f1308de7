"""EventTypeRestService: seed 003's `/eventTypes` paths behind Envoy. Parses the raw JSON
strictly into an EventType message, calls the domain, answers with its proto3 JSON."""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from service import proto_json, rest_json
from service.auth import current_principal
from service.convert import event_type_to_proto, spec_from_proto
from service.domain.errors import invalid
from service.domain.event_types import EventTypeManager
from service.servicers import decode_offset_token, encode_offset_token
from service.servicers.event_rest_service import _expected_etag, base_url
from service.v1 import event_type_pb2, event_type_rest_service_pb2_grpc
from service.v1 import event_type_rest_service_pb2 as pb


def _json(message: Message) -> Any:
    # Every field printed, zero values included, as the gateway prints typed answers.
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


class EventTypeRestServicer(event_type_rest_service_pb2_grpc.EventTypeRestServiceServicer):
    def __init__(self, types: EventTypeManager) -> None:
        self._types = types

    async def RestCreateEventType(
        self, request: pb.RestCreateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        message, _ = proto_json.parse(request.body.data, event_type_pb2.EventType())
        if message.etag:
            raise invalid("etag", "output only on create")
        created = await self._types.create(current_principal(), spec_from_proto(message))
        location = f"{base_url(context)}/eventTypes/{created.id}"
        await context.send_initial_metadata([("x-http-code", "201"), ("location", location)])
        return rest_json.json_body(_json(event_type_to_proto(created)))

    async def RestGetEventType(
        self, request: pb.RestGetEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        found = await self._types.get(current_principal(), request.id)
        return rest_json.json_body(_json(event_type_to_proto(found)))

    async def RestListEventTypes(
        self, request: pb.RestListEventTypesRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        offset = decode_offset_token(request.page_token, "pageToken")
        found, total = await self._types.list_types(current_principal(), offset, request.page_size)
        end = offset + len(found)
        return rest_json.json_body(
            {
                "eventTypes": [_json(event_type_to_proto(t)) for t in found],
                "nextPageToken": encode_offset_token(end) if end < total else "",
                "totalSize": total,
            }
        )

    async def RestUpdateEventType(
        self, request: pb.RestUpdateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        message, sent = proto_json.parse(request.body.data, event_type_pb2.EventType())
        expected = _expected_etag(context, message.etag or None)
        spec = spec_from_proto(message, fields_given="fields" in sent)
        updated = await self._types.update(current_principal(), request.id, spec, expected)
        return rest_json.json_body(_json(event_type_to_proto(updated)))

    async def RestDeleteEventType(
        self, request: pb.RestDeleteEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        expected = _expected_etag(context, request.etag or None)
        await self._types.delete(current_principal(), request.id, expected)
        return rest_json.json_body({})
