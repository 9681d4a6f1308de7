"""Per-call observability: the request id, one structured log line per call, and the rpc
metrics. It wraps each method's handler once, outside the auth guard (service.auth), so that
it also sees calls that authentication refuses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.api.httpbody_pb2 import HttpBody

from service import metrics
from service.auth import current_caller
from service.request_context import REQUEST_ID, begin_request, current_request_id
from service.rest_headers import HTTP_CODE, http_status_of

log = logging.getLogger("eventmgmt.requests")
_OK = grpc.StatusCode.OK.name


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return grpc.StatusCode.UNKNOWN.name


class _CallContext:
    """The servicer context of one call, which adds the request id to the initial metadata
    the servicer sends (as some REST answers do), to the initial metadata of a failure or a
    stream, and otherwise to the trailing metadata of a unary answer; and remembers the
    status and HTTP status the call ends with (from its metadata, or from the content type
    of a REST answer, service.rest_headers). Everything else is the real context."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        # grpc builds the metadata's tuples anew on every read: read once, for the request
        # id here and the credentials in the guard.
        self._metadata = context.invocation_metadata()
        # Set before the auth guard runs, so that its failures carry it too.
        self._request_id = begin_request(self._metadata)
        self._metadata_sent = False
        self._trailing_metadata: tuple[tuple[str, Any], ...] = ()
        self.code = _OK
        self.http_status = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def invocation_metadata(self) -> Any:
        return self._metadata

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._metadata_sent = True
        for key, value in metadata:
            if key == HTTP_CODE:
                self.http_status = str(value)
        await self._context.send_initial_metadata([*metadata, (REQUEST_ID, self._request_id)])

    async def ensure_metadata(self) -> None:
        if not self._metadata_sent:
            await self.send_initial_metadata(())

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing_metadata = tuple(metadata)
        self._context.set_trailing_metadata(self._trailing_metadata)

    def answered(self) -> None:
        """A unary call that answers with no initial metadata of its own carries the request
        id in its trailing metadata, which goes out with the answer and its status: initial
        metadata sent apart costs a batch of its own per call."""
        if not self._metadata_sent:
            self._context.set_trailing_metadata(
                (*self._trailing_metadata, (REQUEST_ID, self._request_id))
            )

    async def abort(self, code: grpc.StatusCode, details: str = "", *args: Any) -> Any:
        self.code = _code_name(code)
        await self.ensure_metadata()
        return await self._context.abort(code, details, *args)

    async def abort_with_status(self, status: grpc.Status) -> Any:
        self.code = _code_name(status.code)
        await self.ensure_metadata()
        return await self._context.abort_with_status(status)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = _code_name(code)
        self._context.set_code(code)


def observed(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` giving every call a request id, then counting, timing and logging it when it
    ends (health checks run as they are: load balancers call them often, for nothing)."""
    if method.startswith("/grpc.health.v1.Health/"):
        return handler
    return _observe(handler, method)


def _finish(method: str, started: float, context: _CallContext, code: str) -> None:
    seconds = time.perf_counter() - started
    metrics.observe_call(method, code, seconds)
    if not log.isEnabledFor(logging.INFO):  # the line's fields cost more than the metrics
        return
    caller = current_caller()
    tenant = key_id = user_id = ""
    if caller is not None:
        tenant, key_id, user_id = caller.tenant_id, caller.key_id, caller.user_id
    duration_ms = round(seconds * 1000, 2)
    request_id = current_request_id()
    log.info(
        "%s %s%s %.1f ms tenant=%s key=%s user=%s request=%s",
        method,
        code,
        f" http={context.http_status}" if context.http_status else "",
        duration_ms,
        tenant or "-",
        key_id or "-",
        user_id or "-",
        request_id,
        extra={
            "rpc": method,
            "status": code,
            "http_status": int(context.http_status) if context.http_status.isdigit() else None,
            "tenant": tenant or None,
            "key_id": key_id or None,
            "user_id": user_id or None,
            "duration_ms": duration_ms,
            "request_id": request_id,
        },
    )


def _failure_code(error: BaseException) -> str:
    # A client that goes away cancels its call: that is how most streams end.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


def _observe(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            call = _CallContext(context)
            code = _OK
            try:
                response = await behavior(request, call)
                if not call.http_status and type(response) is HttpBody:
                    call.http_status = http_status_of(response.content_type)
                call.answered()
                code = call.code
                return response
            except grpc.aio.AbortError:
                code = call.code
                raise
            except BaseException as error:
                code = _failure_code(error)
                raise
            finally:
                _finish(method, started, call, code)

        return observed

    def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            call = _CallContext(context)
            code = _OK
            try:
                async for item in behavior(request, call):
                    await call.ensure_metadata()
                    yield item
                code = call.code
            except grpc.aio.AbortError:
                code = call.code
                raise
            except BaseException as error:
                code = _failure_code(error)
                raise
            finally:
                _finish(method, started, call, code)

        return observed

    serializers = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), *serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), *serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), *serializers)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), *serializers)
