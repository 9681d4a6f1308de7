"""The event loop the server runs on: uvloop's where it is installed (it is a dependency on
every platform it supports), else asyncio's own.

grpc.aio's per-call work (its tasks, futures and wake-ups) runs on the loop, and asyncio's own
loop does its scheduling in Python; uvloop's, in C, measured 9-12% more unary calls per second
of one process (the README, "Operating it"). `EVENTMGMT_EVENT_LOOP=asyncio` chooses asyncio's loop,
to compare or to rule the loop out when something misbehaves.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("uvloop", "asyncio")


def chosen() -> str:
    """The loop `run` uses: EVENTMGMT_EVENT_LOOP, or uvloop when it can be imported."""
    wanted = os.environ.get("EVENTMGMT_EVENT_LOOP", "uvloop")
    if wanted not in CHOICES:
        raise SystemExit(f"EVENTMGMT_EVENT_LOOP must be one of {', '.join(CHOICES)}: {wanted!r}")
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
    return wanted


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs `main` to completion on a new loop of the chosen kind, as asyncio.run does."""
    if chosen() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
