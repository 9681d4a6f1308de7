"""The one place where failures become gRPC statuses: google.rpc.Status with ErrorInfo (a
stable reason) and BadRequest field violations, which Envoy renders as JSON for REST."""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from eventmgmt.domain import errors

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


def to_status(error: BaseException) -> grpc.Status:
    """Maps a domain error to its status; anything else is an internal error whose details
    stay in the log (under an incident id), never in the answer."""
    if isinstance(error, errors.DomainError):
        code = next((c for kind, c in _CODES if isinstance(error, kind)), code_pb2.UNKNOWN)
        message, reason = error.message, error.reason
    else:
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error, incident %s", incident)
        code, reason = code_pb2.INTERNAL, "INTERNAL"
        message = f"internal error (incident {incident})"
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))]
    if isinstance(error, errors.InvalidInput):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.rule
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))
