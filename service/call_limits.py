"""Which calls the rate limits count, and how much (README "Rate limits"): derived from what each
rpc needs (service.privileges), so that a new rpc is counted without being named here.

- `create`: a call that needs Events.CREATE (and not Jobs.WRITE) creates one event: REST and
  gRPC creates and device reports, counted here. Calls that carry many events count each
  event where it is stored: streamed ingest per event (EventStreamService), create jobs per
  event as the job runner stores them (service.domain.jobs).
- `read`: a call that needs only READ privileges (or no privilege): gets, lists, searches,
  job status, opening a subscription.
- `write`: every other call: updates, acknowledgements, job submissions, event types,
  shares, devices and apps.

Health checks and reflection (no credentials) are never counted."""

from __future__ import annotations

from service.domain.access import Principal, Privilege
from service.domain.rate_limits import Operation, RateLimits
from service.privileges import Access

_READS = frozenset({Privilege.EVENTS_READ, Privilege.EVENT_TYPES_READ})
# Counted per event by the servicer, not per call.
PER_EVENT_METHODS = frozenset({"/eventmgmt.v1.EventStreamService/IngestEvents"})


def operation_of(method: str, access: Access) -> Operation | None:
    """What one call of `method` counts against; None when the call itself counts nothing."""
    if not access.credentials or method in PER_EVENT_METHODS:
        return None
    needed = set(access.privileges)
    if Privilege.EVENTS_CREATE in needed and Privilege.JOBS_WRITE not in needed:
        return Operation.CREATE
    if needed <= _READS:
        return Operation.READ
    return Operation.WRITE


class CallLimiter:
    """Counts each call against the limits of its operation, for the interceptor."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._operations: dict[str, Operation | None] = {}

    async def admit(self, method: str, access: Access, principal: Principal) -> None:
        """Raises ResourceExhausted (with when to retry) when the call is over a limit."""
        try:
            operation = self._operations[method]
        except KeyError:
            operation = self._operations[method] = operation_of(method, access)
        if operation is not None:
            await self.limits.check(principal, operation)
