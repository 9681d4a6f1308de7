"""The headers of a REST answer (its status, Location, ETag, Warning) as the service hands them
to the gateway: parameters of the answer's content type, `; x-eventmgmt-<header>=<value>`
with the value percent-encoded, which the gateway's Lua filter (gateway/http_status.lua)
turns back into headers before the answer leaves it. Initial metadata would carry them too,
but grpc.aio sends a unary call's own initial metadata as a batch of its own, ahead of the
message: a second write to the gateway per call. Here they travel inside the message."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

PARAMETER = "; x-eventmgmt-"
# The header the gateway takes the HTTP status from (absent: 200).
HTTP_CODE = "x-http-code"


# Values of only these characters (URLs, quoted etags) go as they are; others percent-encoded.
_AS_IS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,=\"-]*")


def _encoded(value: str) -> str:
    return value if _AS_IS.fullmatch(value) else quote(value, safe="")


def content_type_with(content_type: str, headers: Iterable[tuple[str, str]]) -> str:
    """`content_type` carrying `headers` (lowercase names) to the gateway."""
    return content_type + "".join(f"{PARAMETER}{name}={_encoded(value)}" for name, value in headers)


def http_status_of(content_type: str) -> str:
    """The HTTP status a content type made by `content_type_with` carries; empty if none."""
    start = content_type.find(f"{PARAMETER}{HTTP_CODE}=")
    if start < 0:
        return ""
    value = content_type[start + len(PARAMETER) + len(HTTP_CODE) + 1 :]
    return value.partition(";")[0]
