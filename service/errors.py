"""The one place where failures become gRPC statuses: google.rpc.Status with ErrorInfo (a
stable reason) and BadRequest field violations, which Envoy renders as JSON for REST."""

from __future__ import annotations

import logging
import math
import uuid
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service import metrics
from service.domain import errors
from service.domain.access import Privilege
from service.domain.rate_limits import RATE_LIMITED
from service.domain.storms import ALARM_STORM
from service.request_context import current_request_id

log = logging.getLogger(__name__)
DOMAIN = "eventmgmt.io"

_CODES: list[tuple[type[errors.DomainError], int]] = [
    (errors.InvalidInput, code_pb2.INVALID_ARGUMENT),
    (errors.NotFound, code_pb2.NOT_FOUND),
    (errors.AlreadyExists, code_pb2.ALREADY_EXISTS),
    (errors.StaleEtag, code_pb2.ABORTED),
    (errors.FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (errors.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (errors.PermissionDenied, code_pb2.PERMISSION_DENIED),
    (errors.ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _internal_message() -> str:
    """Logs the error being handled under its incident id, the call's request id (a new one
    outside a call); the answer shows only the id."""
    incident = current_request_id() or str(uuid.uuid4())
    log.exception("internal error, incident %s", incident)
    return f"internal error (incident {incident})"


def to_status(error: BaseException) -> grpc.Status:
    """Maps a domain error to its status; anything else is an internal error whose details
    stay in the log (under an incident id), never in the answer."""
    return rpc_status.to_status(to_status_proto(error))


def retry_after_header(error: BaseException) -> tuple[str, str] | None:
    """`Retry-After` (RFC 9110, whole seconds) for an error that says when to retry."""
    if isinstance(error, errors.ResourceExhausted) and error.retry_after is not None:
        return ("retry-after", str(math.ceil(error.retry_after)))
    return None


async def abort(context: grpc.aio.ServicerContext, error: BaseException) -> NoReturn:
    """Ends the call with the error's status. A refusal that says when to retry sends
    Retry-After first, as initial metadata: the gateway hands those to REST clients as
    headers (trailers it drops); gRPC clients read RetryInfo."""
    retry = retry_after_header(error)
    if retry is not None:
        try:
            await context.send_initial_metadata((retry,))
        except Exception:  # a stream that answered before: RetryInfo in the status only
            log.debug("initial metadata already sent; no retry-after header")
    await context.abort_with_status(to_status(error))
    raise AssertionError("abort_with_status returns only by raising")


def _printable(text: str) -> str:
    """Text for a protobuf string, which must be valid UTF-8: an echoed client value that
    holds a lone surrogate is shown escaped rather than failing the whole answer."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _count_refusal(error: BaseException) -> None:
    """Every answer that refuses for a limit (RESOURCE_EXHAUSTED) goes through here once."""
    if isinstance(error, errors.ResourceExhausted):
        metrics.count_refusal(error.reason, error.metadata.get("limit", ""))


def to_status_proto(error: BaseException) -> status_pb2.Status:
    """The google.rpc.Status of a failure, for answers that carry one per item."""
    if isinstance(error, errors.DomainError):
        code = next((c for kind, c in _CODES if isinstance(error, kind)), code_pb2.UNKNOWN)
        message, reason = error.message, error.reason
    else:
        code, reason = code_pb2.INTERNAL, "INTERNAL"
        message = _internal_message()
    metadata = error.metadata if isinstance(error, errors.DomainError) else {}
    _count_refusal(error)
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))]
    if isinstance(error, errors.ResourceExhausted) and error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(error.retry_after * 1000)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(error, errors.InvalidInput):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_printable(v.field), description=_printable(v.rule)
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=code, message=_printable(message), details=details)


# The device path's failure answers (docs/device-api.md#errors): the HTTP status by kind of
# error, and its error code by reason
# (-1 unknown server error, 0 invalid licence, 4 invalid tenant id, 5 invalid device id,
# 6 validation error). A key that is missing or unknown gives no access to the tenant: 4.
UNKNOWN_SERVER_ERROR = -1
_DEVICE_STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.InvalidInput, 400),
    (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403),
    (errors.NotFound, 404),
    (errors.AlreadyExists, 409),
    (errors.StaleEtag, 409),
    (errors.ResourceExhausted, 413),
]
_DEVICE_ERROR_CODES = {
    "APP_NOT_REGISTERED": 0,
    "LICENCE_INACTIVE": 0,
    "API_KEY_MISSING": 4,
    "API_KEY_INVALID": 4,
    "TENANT_NOT_FOUND": 4,
    "TENANT_ACCESS_DENIED": 4,
    **{p.reason: 4 for p in Privilege},
    "DEVICE_NOT_FOUND": 5,
    "DEVICE_DISABLED": 5,
    "NOT_AUTHORIZED_DOMAIN": 5,
}
DEVICE_VALIDATION_ERROR = 6


def to_device_error(error: BaseException) -> tuple[int, int, str]:
    """The device path's failure answer for an error: (HTTP status, error code, message)."""
    _count_refusal(error)
    if isinstance(error, errors.DomainError):
        if error.reason in (RATE_LIMITED, ALARM_STORM):
            # Seed 000 names no code for it; the status and Retry-After say what to do.
            return 429, UNKNOWN_SERVER_ERROR, error.message
        status = next((s for kind, s in _DEVICE_STATUS if isinstance(error, kind)), 500)
        if status == 500:
            return status, UNKNOWN_SERVER_ERROR, error.message
        return status, _DEVICE_ERROR_CODES.get(error.reason, DEVICE_VALIDATION_ERROR), error.message
    return 500, UNKNOWN_SERVER_ERROR, _internal_message()
