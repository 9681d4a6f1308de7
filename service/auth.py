"""Authentication: the interceptor that resolves the caller's principal once per call and
turns every failure of the call into a gRPC status (through eventmgmt.errors)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from eventmgmt.domain.access import Principal
from eventmgmt.domain.errors import Unauthenticated
from eventmgmt.errors import to_status
from eventmgmt.persistence.store import hash_api_key

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
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
    """Resolves the principal before the servicer runs and maps the call's failures."""

    def __init__(self, resolver: KeyResolver) -> None:
        self._resolver = resolver

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        try:
            principal: Principal | BaseException = await self._resolver.resolve(
                _api_key(handler_call_details.invocation_metadata)
            )
        except Unauthenticated as error:
            principal = error
        return _wrap(handler, principal)


def _wrap(
    handler: grpc.RpcMethodHandler, principal: Principal | BaseException
) -> grpc.RpcMethodHandler:
    def guard(behavior: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
        if streaming_response:

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(principal, BaseException):
                    await context.abort_with_status(to_status(principal))
                _principal.set(principal)  # type: ignore[arg-type]
                try:
                    async for item in behavior(request, context):
                        yield item
                except Exception as error:
                    await context.abort_with_status(to_status(error))

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(principal, BaseException):
                await context.abort_with_status(to_status(principal))
            _principal.set(principal)  # type: ignore[arg-type]
            try:
                return await behavior(request, context)
            except Exception as error:
                await context.abort_with_status(to_status(error))

        return unary

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            guard(handler.unary_unary, False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            guard(handler.unary_stream, True),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            guard(handler.stream_unary, False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        guard(handler.stream_stream, True),
        handler.request_deserializer,
        handler.response_serializer,
    )
