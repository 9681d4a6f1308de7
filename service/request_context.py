"""The id of the call being served, for log lines and error bodies. It is Envoy's
`x-request-id` for REST calls (Envoy also returns it to the client) and one made here for
gRPC callers that send none; service.observability sets it and returns it in the metadata."""

from __future__ import annotations

import contextvars
import os
import random
from collections.abc import Iterable
from typing import Any

REQUEST_ID = "x-request-id"
# A client's id is echoed back and logged, so it must stay a short printable token.
MAX_REQUEST_ID = 128
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# Request ids name calls in logs; they guard nothing. uuid.uuid4() asks the kernel for 16 random
# bytes on every call (a system call, then a UUID object); a generator seeded once from it
# makes the same random version-4 UUIDs for a few hundred nanoseconds.
_random = random.Random(os.urandom(32))
_random_bits = _random.getrandbits
# A forked worker must not repeat its parent's ids.
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))
_VARIANTS = "89ab"


def new_request_id() -> str:
    """A random (version 4) UUID in its canonical text form."""
    digits = f"{_random_bits(128):032x}"
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{_VARIANTS[int(digits[16], 16) & 3]}{digits[17:20]}-{digits[20:]}"
    )


def current_request_id() -> str:
    """The id of the call being served; empty outside a call."""
    return _request_id.get()


def begin_request(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """Sets (and returns) the call's id: the client's `x-request-id`, else a new one."""
    request_id = ""
    for key, value in metadata or ():
        if key == REQUEST_ID:
            text = str(value)
            if 0 < len(text) <= MAX_REQUEST_ID and text.isascii() and text.isprintable():
                request_id = text
            break
    request_id = request_id or new_request_id()
    _request_id.set(request_id)
    return request_id
