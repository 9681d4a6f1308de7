"""What every REST servicer behind the gateway shares: the headers it reads (origin, base
path, conditional requests) and the answers it shapes (status, ETag, 304, 412)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from service import rest_json
from service.domain.errors import PreconditionFailed, invalid
from service.errors import abort, to_status_proto
from service.rest_headers import HTTP_CODE, content_type_with

JSON = "application/json"
HAL_JSON = "application/hal+json"
# The base path of the platform's Event Management API, which its existing clients address;
# every v3 path is also served without it (docs/rest-v3.md#base-path).
API_BASE_PATH = "/api/eventmanagement/v3"
# The REST writes that may carry a precondition (If-Match or a body etag).
CONDITIONAL_WRITES = (
    "/eventmgmt.v1.EventRestService/RestUpdateEvent",
    "/eventmgmt.v1.EventTypeRestService/RestUpdateEventType",
    "/eventmgmt.v1.EventTypeRestService/RestPatchEventType",
    "/eventmgmt.v1.EventTypeRestService/RestDeleteEventType",
)
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def metadata(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return str(value)
    return None


_BASE_URL_HEADERS = frozenset(("x-forwarded-host", "x-forwarded-proto", "x-envoy-original-path"))


def base_url(context: grpc.aio.ServicerContext) -> str:
    """The client-facing origin and base path, from the headers the gateway adds: links and
    Location use `/api/eventmanagement/v3` when the request came in under it."""
    # One pass over the metadata for the three headers (the first of each name counts).
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in _BASE_URL_HEADERS and key not in found:
            found[key] = str(value)
    host = found.get("x-forwarded-host") or "localhost"
    scheme = found.get("x-forwarded-proto") or "http"
    # Set by the transcoder to the client's path, overwriting any header the client sent.
    path = found.get("x-envoy-original-path", "").partition("?")[0]
    prefix = API_BASE_PATH if (path + "/").startswith(API_BASE_PATH + "/") else ""
    return f"{scheme}://{host}{prefix}"


def expected_etag(context: grpc.aio.ServicerContext, body_etag: Any) -> int | None:
    """The etag a write is conditional on: `If-Match` (`3`, `"3"` or `W/"3"`; `*` is any
    version) or the body's `etag`; None when unconditional."""
    header = metadata(context, "if-match")
    from_header = None
    if header is not None and header.strip() != "*":
        match = _ETAG.match(header.strip())
        if match is None:
            raise invalid("If-Match", 'must be the integer etag, such as 3 or "3"')
        from_header = int(match.group(1))
    if body_etag is not None and (isinstance(body_etag, bool) or not isinstance(body_etag, int)):
        raise invalid("etag", "must be an integer")
    if from_header is not None and body_etag is not None and from_header != body_etag:
        raise invalid("etag", "differs from the If-Match header; send one or make them equal")
    return from_header if from_header is not None else body_etag


def _none_match(context: grpc.aio.ServicerContext, etag: int) -> bool:
    """Whether `If-None-Match` names the current version (or is `*`)."""
    for tag in (metadata(context, "if-none-match") or "").split(","):
        match = _ETAG.match(tag.strip())
        if tag.strip() == "*" or (match is not None and int(match.group(1)) == etag):
            return True
    return False


def etag_header(etag: int) -> tuple[str, str]:
    """RFC 9110's strong entity tag: the version, quoted."""
    return ("etag", f'"{etag}"')


def proto_document(message: Message) -> Any:
    """A typed message's proto3 JSON as the gateway prints typed answers: every field, zero
    values included, lowerCamelCase names."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


async def answer(
    context: grpc.aio.ServicerContext,
    document: Any,
    *,
    etag: int | None = None,
    read: bool = False,
    status: int | None = None,
    headers: Iterable[tuple[str, str]] = (),
    content_type: str = JSON,
) -> httpbody_pb2.HttpBody:
    """A REST answer: the JSON document, with its status and headers (the resource's `etag`
    as the ETag header) in its content type for the gateway (service.rest_headers). A `read`
    whose `If-None-Match` names the current version answers 304 with no body."""
    sent = list(headers)
    if etag is not None:
        sent.append(etag_header(etag))
        if read and _none_match(context, etag):
            await context.send_initial_metadata([(HTTP_CODE, "304"), *sent])
            return httpbody_pb2.HttpBody()
    if status is not None:
        sent.append((HTTP_CODE, str(status)))
    return rest_json.json_body(document, content_type_with(content_type, sent))


async def answer_rest_error(
    error: BaseException, context: grpc.aio.ServicerContext
) -> httpbody_pb2.HttpBody:
    """Failures of conditional writes: a precondition that failed is 412 (RFC 9110), which no
    gRPC code maps to, so the body is the error JSON the gateway would print; every other
    failure is the usual gRPC status."""
    if not isinstance(error, PreconditionFailed):
        await abort(context, error)
    await context.send_initial_metadata([(HTTP_CODE, "412")])
    status = json_format.MessageToDict(to_status_proto(error))
    return rest_json.json_body(status)
