"""The id of the call being served, for log lines and error bodies. It is Envoy's
`x-request-id` for REST calls (Envoy also returns it to the client) and one made here for
gRPC callers that send none; service.observability sets it and returns it in the metadata."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Sequence
from typing import Any

REQUEST_ID = "x-request-id"
# A client's id is echoed back and logged, so it must stay a short printable token.
MAX_REQUEST_ID = 128
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def current_request_id() -> str:
    """The id of the call being served; empty outside a call."""
    return _request_id.get()


def begin_request(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """Sets (and returns) the call's id: the client's `x-request-id`, else a new one."""
    request_id = ""
    for key, value in metadata or ():
        if key == REQUEST_ID:
            text = str(value)
            if 0 < len(text) <= MAX_REQUEST_ID and text.isascii() and text.isprintable():
                request_id = text
            break
    request_id = request_id or str(uuid.uuid4())
    _request_id.set(request_id)
    return request_id
