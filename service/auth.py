"""Authentication: the interceptor that resolves the caller's principal once per call and
turns every failure of the call into a gRPC status (through service.errors)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from persistence.keys import hash_api_key
from service.domain.access import Principal
from service.domain.errors import Unauthenticated
from service.errors import to_status

# A method that answers its own failures (seed 000's device path has its own error body)
# turns an error into its response instead of a gRPC status.
ErrorAnswer = Callable[[BaseException, grpc.aio.ServicerContext], Awaitable[Any]]
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
# What the interceptor found for this call: a principal, or why there is none.
_caller: contextvars.ContextVar[Principal | Unauthenticated] = contextvars.ContextVar("caller")
# Health checks and reflection answer without credentials.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def current_principal() -> Principal:
    """The principal of the call being served; set by PrincipalInterceptor."""
    return _principal.get()


class KeyResolver:
    """Finds the principal of an API key, remembering answers for `ttl` seconds so that a
    busy client costs one lookup per key and interval (a revoked key stops within `ttl`)."""

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Principal | None]],
        ttl: float = 10.0,
        max_entries: int = 10_000,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def resolve(self, key: str | None) -> Principal:
        if not key:
            raise Unauthenticated(
                "an API key is required in the x-api-key header", reason="API_KEY_MISSING"
            )
        cache_key = hash_api_key(key)
        now = time.monotonic()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._lookup(key)
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
            self._cache[cache_key] = (now + self._ttl, principal)
        if principal is None:
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        return principal


def _api_key(metadata: Any) -> str | None:
    for entry in metadata or ():
        key, value = entry
        if key == "x-api-key":
            return str(value)
        if key == "authorization" and str(value).lower().startswith("bearer "):
            return str(value)[7:].strip()
    return None


class PrincipalInterceptor(grpc.aio.ServerInterceptor):
    """Resolves the principal before the servicer runs and maps the call's failures.

    The principal (or the reason there is none) goes into a context variable: the servicer
    runs in the same task, so the guarded handler, built once per method, reads it there."""

    def __init__(
        self, resolver: KeyResolver, error_answers: dict[str, ErrorAnswer] | None = None
    ) -> None:
        self._resolver = resolver
        self._error_answers = error_answers or {}
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        try:
            _caller.set(
                await self._resolver.resolve(_api_key(handler_call_details.invocation_metadata))
            )
        except Unauthenticated as error:
            _caller.set(error)
        guarded = self._guarded.get(method)
        if guarded is None:
            guarded = self._guarded[method] = _guard(handler, self._error_answers.get(method))
        return guarded


async def _enter(context: grpc.aio.ServicerContext) -> None:
    caller = _caller.get()
    if isinstance(caller, BaseException):
        await context.abort_with_status(to_status(caller))
    _principal.set(caller)


def _guard(
    handler: grpc.RpcMethodHandler, answer_error: ErrorAnswer | None = None
) -> grpc.RpcMethodHandler:
    """Wraps a method's behaviour: authenticate from the context, map every failure."""

    def answering(behavior: Callable[..., Any], answer: ErrorAnswer) -> Callable[..., Any]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            caller = _caller.get()
            if isinstance(caller, BaseException):
                return await answer(caller, context)
            _principal.set(caller)
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                return await answer(error, context)

        return guarded

    def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if answer_error is not None:
            return answering(behavior, answer_error)

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _enter(context)
            try:
                return await behavior(request, context)
            except Exception as error:
                await context.abort_with_status(to_status(error))

        return guarded

    def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _enter(context)
            try:
                async for item in behavior(request, context):
                    yield item
            except Exception as error:
                await context.abort_with_status(to_status(error))

        return guarded

    serializers = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), *serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), *serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), *serializers)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), *serializers)
