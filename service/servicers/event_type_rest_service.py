"""EventTypeRestService: the `/eventTypes` paths (docs/rest-v3.md#event-types) behind Envoy. Parses
the raw JSON strictly into an EventType message, calls the domain, answers with its proto3 JSON plus
the platform's `owner` and `_links`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import grpc
import jsonpatch
from google.api import httpbody_pb2

from service import proto_json, rest_json
from service.auth import current_principal
from service.convert import event_type_to_proto, spec_from_proto
from service.domain.errors import FieldViolation, InvalidInput, invalid
from service.domain.event_types import (
    EventType,
    EventTypeManager,
    TypeQuery,
    parse_type_sort,
)
from service.domain.events import check_page_size
from service.servicers import decode_offset_token
from service.servicers.rest import HAL_JSON, answer, base_url, expected_etag, proto_document
from service.v1 import event_type_pb2, event_type_rest_service_pb2_grpc
from service.v1 import event_type_rest_service_pb2 as pb

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
# Server-owned fields of a type's JSON: a client that sends back what it read (GET, modify,
# PUT) has them accepted and ignored; a changed value is refused by name. `_links` is never
# compared: it depends on the base path a request came in on.
_SERVER_OWNED = ("tenantId", "owner", "createTime", "updateTime")


def type_document(event_type: EventType, base: str) -> dict[str, Any]:
    """The type as the platform serves it: its proto3 JSON, `owner` (the owner tenant) and
    `_links.self`."""
    document = proto_document(event_type_to_proto(event_type))
    document["owner"] = event_type.tenant_id
    document["_links"] = {"self": {"href": f"{base}/eventTypes/{event_type.id}"}}
    return document


def _default_updatable(document: dict[str, Any]) -> None:
    """Fields the client declares without `updatable` are updatable, as the platform says."""
    fields = document.get("fields")
    if isinstance(fields, list):
        for definition in fields:
            if isinstance(definition, dict) and definition.get("updatable") is None:
                definition["updatable"] = True


def _drop_server_owned(document: dict[str, Any], stored: dict[str, Any]) -> None:
    document.pop("_links", None)
    changed = [
        FieldViolation(name, "output only: send the value as read, or leave it out")
        for name in _SERVER_OWNED
        if name in document and document.pop(name) != stored.get(name)
    ]
    if changed:
        raise InvalidInput(changed)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(stored: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """The type's JSON after a JSON Patch (an array) or a JSON Merge Patch (an object)."""
    media = content_type.split(";")[0].strip().lower()
    if isinstance(patch, list) and media in (JSON_PATCH, "application/json", ""):
        try:
            patched = jsonpatch.JsonPatch(patch).apply(stored)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            raise invalid("body", f"the JSON Patch does not apply: {error}") from None
        except (TypeError, KeyError, AttributeError):
            raise invalid("body", "must be a JSON Patch: an array of {op, path, ...}") from None
    elif isinstance(patch, dict) and media in (MERGE_PATCH, "application/json", ""):
        patched = merge_patch(stored, patch)
    else:
        raise invalid(
            "body",
            f"a JSON Patch array ({JSON_PATCH}) or a JSON Merge Patch object ({MERGE_PATCH})",
        )
    if not isinstance(patched, dict):
        raise invalid("body", "the patched event type must be a JSON object")
    # What the patch removed is gone, not "left as stored" as in a PUT.
    patched.setdefault("parentId", "")
    patched.setdefault("fields", [])
    return patched


class EventTypeRestServicer(event_type_rest_service_pb2_grpc.EventTypeRestServiceServicer):
    def __init__(self, types: EventTypeManager) -> None:
        self._types = types

    async def RestCreateEventType(
        self, request: pb.RestCreateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        document = rest_json.loads(request.body.data)
        if isinstance(document, dict):
            _default_updatable(document)
        message, _ = proto_json.parse_document(document, event_type_pb2.EventType())
        if message.etag:
            raise invalid("etag", "output only on create")
        created = await self._types.create(current_principal(), spec_from_proto(message))
        base = base_url(context)
        location = ("location", f"{base}/eventTypes/{created.id}")
        return await answer(
            context, type_document(created, base), etag=created.etag, status=201, headers=[location]
        )

    async def RestGetEventType(
        self, request: pb.RestGetEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        found = await self._types.get(current_principal(), request.id)
        return await answer(
            context, type_document(found, base_url(context)), etag=found.etag, read=True
        )

    async def RestListEventTypes(
        self, request: pb.RestListEventTypesRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        # `pageSize` and `pageToken` are the older spellings of `size` and `page`.
        size = check_page_size(request.size or request.page_size, "size")
        offset = decode_offset_token(request.page_token, "pageToken")
        number = offset // size if request.page_token else request.page
        keys = [
            (name.strip(), direction.strip())
            for name, _, direction in (s.partition(",") for s in request.sort if s)
        ]
        query = TypeQuery(request.filter, parse_type_sort(keys), number, size)
        found = await self._types.search_types(current_principal(), query)
        base = base_url(context)
        params: list[tuple[str, Any]] = [("size", size), *(("sort", s) for s in request.sort)]
        if request.filter:
            params.append(("filter", request.filter))
        total_pages = (found.total + size - 1) // size

        def link(page: int) -> dict[str, str]:
            return {"href": f"{base}/eventTypes?{urlencode([('page', page), *params])}"}

        links = {"self": link(number), "first": link(0)}
        if number > 0:
            links["prev"] = link(number - 1)
        if number + 1 < total_pages:
            links["next"] = link(number + 1)
        if total_pages:
            links["last"] = link(total_pages - 1)
        document = {
            "_embedded": {"eventTypes": [type_document(t, base) for t in found.types]},
            "_links": links,
            "page": {
                "size": size,
                "totalElements": found.total,
                "totalPages": total_pages,
                "number": number,
            },
        }
        return await answer(context, document, content_type=HAL_JSON)

    async def RestUpdateEventType(
        self, request: pb.RestUpdateEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        body = rest_json.loads(request.body.data)
        if isinstance(body, list):  # existing clients PUT a JSON Patch
            return await self._patch(request.id, body, JSON_PATCH, context)
        return await self._replace(request.id, body, context, patched=False)

    async def RestPatchEventType(
        self, request: pb.RestPatchEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        patch = rest_json.loads(request.body.data)
        return await self._patch(request.id, patch, request.body.content_type, context)

    async def _patch(
        self, type_id: str, patch: Any, content_type: str, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        stored = type_document(await self._types.get(current_principal(), type_id), "")
        patched = apply_patch(stored, patch, content_type)
        if patched.get("etag") == stored["etag"]:
            patched.pop("etag")  # the version read for the patch; If-Match is the condition
        return await self._replace(type_id, patched, context, patched=True, read=stored)

    async def _replace(
        self,
        type_id: str,
        document: Any,
        context: grpc.aio.ServicerContext,
        *,
        patched: bool,
        read: dict[str, Any] | None = None,
    ) -> httpbody_pb2.HttpBody:
        if not isinstance(document, dict):
            raise invalid("body", "must be a JSON object (or a JSON Patch array)")
        principal = current_principal()
        if read is None and any(name in document for name in (*_SERVER_OWNED, "_links")):
            read = type_document(await self._types.get(principal, type_id), "")
        if read is not None:
            _drop_server_owned(document, read)
        _default_updatable(document)
        message, sent = proto_json.parse_document(document, event_type_pb2.EventType())
        expected = expected_etag(context, message.etag or None)
        if patched and expected is None and read is not None:
            expected = read["etag"]  # nothing may slip in between the read and the write
        spec = spec_from_proto(message, fields_given="fields" in sent)
        updated = await self._types.update(principal, type_id, spec, expected)
        return await answer(context, type_document(updated, base_url(context)), etag=updated.etag)

    async def RestDeleteEventType(
        self, request: pb.RestDeleteEventTypeRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        expected = expected_etag(context, request.etag or None)
        await self._types.delete(current_principal(), request.id, expected)
        return rest_json.json_body({})
