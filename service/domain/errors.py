"""The domain's own failures. One layer (service.errors) turns them into gRPC statuses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class DomainError(Exception):
    """Base of every failure the domain reports to callers; `reason` is stable UPPER_SNAKE."""

    reason = "UNKNOWN"
    # Stable facts for machines beside the reason, such as the privilege a call lacks.
    metadata: dict[str, str] = {}  # noqa: RUF012 - replaced per instance, never mutated

    def __init__(
        self, message: str, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if metadata:
            self.metadata = metadata


@dataclass(frozen=True)
class FieldViolation:
    """One broken rule: the field (its REST JSON name, dotted for nested fields) and the rule."""

    field: str
    rule: str


class InvalidInput(DomainError):
    """The request breaks one or more input rules; nothing was changed."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Iterable[FieldViolation],
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        self.violations = tuple(violations)
        message = message or "; ".join(f"{v.field}: {v.rule}" for v in self.violations)
        super().__init__(message or "invalid request", reason)


def invalid(field: str, rule: str, reason: str | None = None) -> InvalidInput:
    return InvalidInput([FieldViolation(field, rule)], reason)


class NotFound(DomainError):
    """The thing does not exist, or the caller may not know that it does."""

    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The thing to create exists already; nothing was changed. `existing_id` names it
    when the caller may know it (such as the event a duplicate report repeats)."""

    reason = "ALREADY_EXISTS"

    def __init__(self, message: str, reason: str | None = None, existing_id: str = "") -> None:
        super().__init__(message, reason)
        self.existing_id = existing_id


class FailedPrecondition(DomainError):
    """The request is valid, but the current state forbids it (the message says why)."""

    reason = "FAILED_PRECONDITION"


class StaleEtag(DomainError):
    """The caller's etag is not the stored one; nothing was changed."""

    reason = "ETAG_MISMATCH"


class PreconditionFailed(StaleEtag):
    """The write was conditional on an etag (`If-Match`) that is not the stored one: HTTP 412
    (RFC 9110) over REST, ABORTED over gRPC like any stale etag."""


def stale(expected_etag: int | None, message: str) -> StaleEtag:
    """The error of a write that lost to another: a failed precondition when it had one."""
    return PreconditionFailed(message) if expected_etag is not None else StaleEtag(message)


class Unauthenticated(DomainError):
    """No credentials, or credentials that match no active key."""

    reason = "API_KEY_INVALID"


class PermissionDenied(DomainError):
    """Valid credentials that do not allow this call."""

    reason = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    """A size or rate limit was reached; `retry_after` (seconds) when waiting helps."""

    reason = "RESOURCE_EXHAUSTED"
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason, metadata)
        self.retry_after = retry_after
