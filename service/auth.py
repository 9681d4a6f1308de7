"""Authentication and authorisation: the guard around each method's handler that resolves the
caller's principal once per call, checks the privileges its method declares
(service.privileges), ends the open streams of credentials that are revoked, and turns every
failure of the call into a gRPC status (through service.errors). Logging and metrics wrap it
(service.observability)."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from service.call_limits import CallLimiter
from service.domain.access import API_KEY_PREFIX, Principal
from service.domain.errors import DomainError, PermissionDenied, Unauthenticated
from service.errors import abort
from service.privileges import Access, access_for
from service.request_checks import checked_deserializer

log = logging.getLogger(__name__)
# A method that answers its own failures (the device path has its own error body,
# docs/errors.md#device-path)
# turns an error into its response instead of a gRPC status.
ErrorAnswer = Callable[[BaseException, grpc.aio.ServicerContext], Awaitable[Any]]
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
# Health checks and reflection answer without credentials (they are PUBLIC in the table) and
# need no error mapping: their handlers run unwrapped.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# How often open streams are re-checked on SQLite, where other processes (such as `eventmgmt
# admin revoke-key`) cannot notify this one; on PostgreSQL a NOTIFY triggers the re-check.
STREAM_CHECK_SECONDS = 0.25


def current_principal() -> Principal:
    """The principal of the call being served; set by PrincipalGuard."""
    return _principal.get()


class Credentials(NamedTuple):
    """What a call presents: an API key (`x-api-key`) and a signed-in user's token
    (`Authorization: Bearer <token>`); either or both."""

    api_key: str | None
    token: str | None


def credentials_from(metadata: Any) -> Credentials:
    """Reads `x-api-key` and `Authorization` (`Bearer <token>`, or the bare token as the find
    API's clients send it). An API key in `Authorization` still counts as the key."""
    api_key: str | None = None
    authorization: str | None = None
    for key, value in metadata or ():
        if key == "x-api-key":
            api_key = str(value).strip()
        elif key == "authorization":
            authorization = str(value).strip()
    token = None
    if authorization:
        if authorization[:7].lower() == "bearer ":
            authorization = authorization[7:].strip()
        if authorization.startswith(API_KEY_PREFIX) and api_key in (None, authorization):
            api_key = authorization
        else:
            token = authorization or None
    return Credentials(api_key or None, token)


LookupKey = Callable[[str], Awaitable[Principal | None]]
VerifyToken = Callable[[str], Awaitable[Principal]]


def combine(user: Principal, app: Principal) -> Principal:
    """A signed-in user calling through an app's key: the user acts, with no more than the
    key allows (both must belong to the same tenant; the narrower domain applies)."""
    if user.tenant_id != app.tenant_id:
        raise Unauthenticated(
            "the token and the API key belong to different tenants",
            reason="CREDENTIALS_TENANT_MISMATCH",
        )
    if app.covers(user.domain):
        domain = user.domain
    elif user.covers(app.domain):
        domain = app.domain
    else:
        raise PermissionDenied(
            f"the user's domain {user.domain} and the API key's domain {app.domain} are disjoint",
            reason="NOT_AUTHORIZED_DOMAIN",
        )
    return Principal(
        tenant_id=user.tenant_id,
        key_id=app.key_id,
        name=user.name,
        role=min(user.role, app.role),
        domain=domain,
        granted=user.privileges & app.privileges,
        user_id=user.user_id,
        token_id=user.token_id,
        expires_us=user.expires_us,
    )


@dataclass(eq=False)
class OpenStream:
    """A streaming call in progress, ended when its credentials stop being valid."""

    credentials: Credentials
    access: Access
    task: asyncio.Task[Any] | None
    # True while the call waits inside its own code (not in gRPC's write): then a
    # cancellation lands where the guard can turn it into the revocation's status.
    inside: bool = False
    ended: DomainError | None = None
    # Ends the stream when its token expires.
    expiry: asyncio.TimerHandle | None = None


@dataclass
class CredentialResolver:
    """Finds the principal of a call's credentials and remembers it until credentials change
    anywhere (`invalidate`, called on every replica by a NOTIFY, or per call on SQLite by
    `check`), so that a busy client costs one lookup, yet a revocation counts at once."""

    lookup_key: LookupKey
    verify_token: VerifyToken | None = None
    # SQLite: reads the credential version and invalidates when it moved.
    check: Callable[[], bool] | None = None
    max_entries: int = 10_000
    _cache: dict[tuple[str, str], Principal | DomainError] = field(default_factory=dict)
    _streams: set[OpenStream] = field(default_factory=set)
    _revalidating: asyncio.Task[None] | None = None
    _stale: bool = False
    _watcher: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def resolve(self, credentials: Credentials) -> Principal:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self.check is not None:
            self.check()
        api_key, token = credentials
        if not api_key and not token:
            raise Unauthenticated(
                "an API key (x-api-key) or a token (Authorization: Bearer) is required",
                reason="API_KEY_MISSING",
            )
        cache_key = (_digest(api_key), _digest(token))
        cached = self._cache.get(cache_key)
        if cached is None:
            try:
                cached = await self._resolve(api_key, token)
            except DomainError as error:
                cached = error
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[cache_key] = cached
        if isinstance(cached, DomainError):
            raise cached
        if cached.expires_us and cached.expires_us <= time.time_ns() // 1000:
            del self._cache[cache_key]
            raise _expired()
        return cached

    async def _resolve(self, api_key: str | None, token: str | None) -> Principal:
        app = None
        if api_key:
            app = await self.lookup_key(api_key)
            if app is None:
                raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        if not token:
            assert app is not None
            return app
        if self.verify_token is None:
            raise Unauthenticated("the token is not valid", reason="TOKEN_INVALID")
        user = await self.verify_token(token)
        return user if app is None else combine(user, app)

    def invalidate(self) -> None:
        """Credentials changed somewhere: forget every answer and re-check open streams."""
        self._cache.clear()
        self._stale = True
        if self._streams and self._revalidating is None and self._loop is not None:
            self._revalidating = self._loop.create_task(self._revalidate())

    def invalidate_threadsafe(self) -> None:
        """`invalidate` from any thread (a LISTEN connection, or the loop's own)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._loop:
            self.invalidate()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self.invalidate)

    async def _revalidate(self) -> None:
        try:
            while self._stale:
                self._stale = False
                verdicts: dict[tuple[Credentials, Access], DomainError | None] = {}
                for stream in list(self._streams):
                    if stream.ended is not None:
                        continue
                    seen = (stream.credentials, stream.access)
                    if seen not in verdicts:
                        verdicts[seen] = await self._verdict(stream)
                    verdict = verdicts[seen]
                    if verdict is not None:
                        self._end(stream, verdict)
        except Exception:
            log.exception("re-checking the credentials of open streams failed")
        finally:
            self._revalidating = None

    async def _verdict(self, stream: OpenStream) -> DomainError | None:
        try:
            principal = await self.resolve(stream.credentials)
            for privilege in stream.access.privileges:
                principal.require(privilege)
        except DomainError as error:
            return error
        return None

    def _end(self, stream: OpenStream, error: DomainError) -> None:
        stream.ended = error
        if stream.inside and stream.task is not None:
            stream.task.cancel()

    def open_stream(
        self, credentials: Credentials, access: Access, expires_us: int = 0
    ) -> OpenStream:
        stream = OpenStream(credentials, access, asyncio.current_task())
        self._streams.add(stream)
        if expires_us:
            delay = max(0.0, expires_us / 1e6 - time.time())
            stream.expiry = asyncio.get_running_loop().call_later(
                delay, lambda: self._end(stream, _expired()) if stream.ended is None else None
            )
        if self.check is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return stream

    def close_stream(self, stream: OpenStream) -> None:
        self._streams.discard(stream)
        if stream.expiry is not None:
            stream.expiry.cancel()

    async def _watch(self) -> None:
        """SQLite: notices credential changes made by other processes while streams are
        open and no call would notice them."""
        try:
            while self._streams:
                await asyncio.sleep(STREAM_CHECK_SECONDS)
                if self.check is not None:
                    self.check()
        except Exception:
            log.exception("watching credential changes failed")
        finally:
            self._watcher = None


def _expired() -> Unauthenticated:
    return Unauthenticated(
        "the token expired; sign in again (POST /auth/login)", reason="TOKEN_EXPIRED"
    )


def _digest(secret: str | None) -> str:
    # Secrets stay out of the cache's keys (a heap dump shows digests only).
    return hashlib.sha256(secret.encode()).hexdigest() if secret else ""


class _Caller(NamedTuple):
    """What the guard found for this call."""

    principal: Principal | None
    failure: DomainError | None
    credentials: Credentials
    access: Access | None


_caller: contextvars.ContextVar[_Caller] = contextvars.ContextVar("caller")


def _parser(handler: grpc.RpcMethodHandler) -> Callable[[Any], Any]:
    """Turns the raw request (bytes, or a stream of them) into checked messages; grpc hands
    the bytes over, so that a corrupt message fails inside the call as INVALID_ARGUMENT,
    where grpc's own parsing would answer UNKNOWN or INTERNAL."""
    if handler.request_deserializer is None:
        return lambda request: request
    parse = checked_deserializer(handler.request_deserializer)
    if not handler.request_streaming:
        return parse

    def each(raw_requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async def parsed() -> AsyncIterator[Any]:
            async for raw in raw_requests:
                yield parse(raw)

        return parsed()

    return each


def current_caller() -> Principal | None:
    """The principal resolved for the call being served; None when there is none (yet)."""
    caller = _caller.get(None)
    return None if caller is None else caller.principal


class PrincipalGuard:
    """Wraps each method's handler, once, so that every call resolves its principal before the
    servicer runs, is checked for what the method needs, and has its failures mapped.

    The principal (or the reason there is none) goes into a context variable, which the
    servicer (current_principal) and the request log (current_caller) read in the call's task.
    Work per call is the guard's alone: grpc.aio's interceptors would add a chain of
    coroutines to every call."""

    def __init__(
        self,
        resolver: CredentialResolver,
        error_answers: dict[str, ErrorAnswer] | None = None,
        limiter: CallLimiter | None = None,
    ) -> None:
        self._resolver = resolver
        self._error_answers = error_answers or {}
        self._limiter = limiter

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` guarded; health checks and reflection (no credentials) as they are."""
        if method.startswith(OPEN_SERVICES):
            return handler
        return self._guard(method, handler, self._error_answers.get(method))

    async def _authorise(
        self, method: str, access: Access | None, credentials: Credentials
    ) -> _Caller:
        if access is None:  # fail closed: an rpc nobody declared is refused to everyone
            refusal = PermissionDenied(
                f"{method} declares no privilege", reason="PRIVILEGE_NOT_DECLARED"
            )
            return _Caller(None, refusal, credentials, access)
        if not access.credentials:
            return _Caller(None, None, credentials, access)
        try:
            principal = await self._resolver.resolve(credentials)
            for privilege in access.privileges:
                principal.require(privilege)
            if self._limiter is not None:  # refused before the call did anything
                await self._limiter.admit(method, access, principal)
        except DomainError as error:
            return _Caller(None, error, credentials, access)
        return _Caller(principal, None, credentials, access)

    def _guard(
        self, method: str, handler: grpc.RpcMethodHandler, answer_error: ErrorAnswer | None
    ) -> grpc.RpcMethodHandler:
        """Wraps a method's behaviour: authenticate from the context, parse and check the
        request (service.request_checks), map every failure."""
        resolver = self._resolver
        parse = _parser(handler)
        access = access_for(method)

        async def admit(context: grpc.aio.ServicerContext) -> _Caller:
            credentials = credentials_from(context.invocation_metadata())
            caller = await self._authorise(method, access, credentials)
            _caller.set(caller)
            return caller

        async def enter(context: grpc.aio.ServicerContext) -> _Caller:
            caller = await admit(context)
            if caller.failure is not None:
                await abort(context, caller.failure)
            if caller.principal is not None:
                _principal.set(caller.principal)
            return caller

        def answering(behavior: Callable[..., Any], answer: ErrorAnswer) -> Callable[..., Any]:
            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                caller = await admit(context)
                if caller.failure is not None:
                    return await answer(caller.failure, context)
                if caller.principal is not None:
                    _principal.set(caller.principal)
                try:
                    return await behavior(parse(request), context)
                except grpc.aio.AbortError:
                    raise
                except Exception as error:
                    return await answer(error, context)

            return guarded

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if answer_error is not None:
                return answering(behavior, answer_error)

            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await enter(context)
                try:
                    return await behavior(parse(request), context)
                except Exception as error:
                    await abort(context, error)

            return guarded

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                caller = await enter(context)
                assert caller.access is not None
                expires = 0 if caller.principal is None else caller.principal.expires_us
                stream = resolver.open_stream(caller.credentials, caller.access, expires)
                responses: Any = None
                try:
                    responses = behavior(parse(request), context).__aiter__()
                    while stream.ended is None:
                        stream.inside = True
                        try:
                            response = await responses.__anext__()
                        except StopAsyncIteration:
                            return
                        except asyncio.CancelledError:
                            task = asyncio.current_task()
                            if stream.ended is None or task is None:
                                raise
                            task.uncancel()  # our own cancellation: end with its reason
                            break
                        finally:
                            stream.inside = False
                        yield response
                    assert stream.ended is not None
                    raise stream.ended
                except Exception as error:
                    await abort(context, error)
                finally:
                    resolver.close_stream(stream)
                    close = getattr(responses, "aclose", None)
                    if close is not None:
                        await close()

            return guarded

        serializers = (None, handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), *serializers)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream), *serializers
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), *serializers)
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), *serializers)
