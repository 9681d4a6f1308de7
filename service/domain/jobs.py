"""Bulk jobs (docs/rest-v3.md#create-jobs): create many events, or delete the events that match a
filter; and acknowledge or clear the alarms that match one (README: Alarms).

A job is stored before it is acknowledged and runs in the background under a lease, in
chunks; each chunk's events, results and progress commit together, so a job resumed after a
crash continues where its last commit ended: no event is stored twice and none is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from service.domain.access import Principal
from service.domain.alarm_status import ACKNOWLEDGED, ACTIVE, Transition
from service.domain.conditions import Compare, Condition, FieldRef, FieldType, all_of
from service.domain.custom_fields import STANDARD_EVENT
from service.domain.errors import DomainError, FieldViolation, InvalidInput, NotFound, invalid
from service.domain.events import (
    MAX_SEVERITY,
    Event,
    EventManager,
    acknowledged,
    cleared,
    new_event_id,
    now_us,
)
from service.domain.filters import CustomFieldType, compile_document, no_custom_fields
from service.domain.rate_limits import Operation, RateLimits

log = logging.getLogger(__name__)

MAX_CREATE_JOB_EVENTS = 10_000
# Platform event codes (0-9999 are reserved for internal events, docs/event.md#codes).
CODE_CREATE_JOB_FINISHED = "1101"
CODE_DELETE_JOB_FINISHED = "1102"
CODE_ACKNOWLEDGE_JOB_FINISHED = "1103"
CODE_CLEAR_JOB_FINISHED = "1104"
# The custom fields a delete filter names that the owner's event types declare filterable
# (name -> filter type), resolved when the job is submitted.
CustomFieldsOf = Callable[[Principal, str], Awaitable[dict[str, FieldType]]]


class JobKind(StrEnum):
    CREATE_EVENTS = "createEvents"
    DELETE_EVENTS = "deleteEvents"
    ACKNOWLEDGE_EVENTS = "acknowledgeEvents"
    CLEAR_EVENTS = "clearEvents"


# The alarm jobs: the statuses of the alarms each one changes, and what it does to one.
_STATUS = FieldRef("status", "string")
_CHANGES_FROM: dict[JobKind, tuple[str, ...]] = {
    JobKind.ACKNOWLEDGE_EVENTS: (ACTIVE,),
    JobKind.CLEAR_EVENTS: (ACTIVE, ACKNOWLEDGED),
}


class JobState(StrEnum):
    ACCEPTED = "ACCEPTED"
    IN_PROGRESS = "IN_PROGRESS"
    FINISHED = "FINISHED"
    FINISHED_WITH_ERROR = "FINISHED_WITH_ERROR"


# The result of an ALARM that was counted into an open alarm (service/domain/alarms.py), as
# a REST create answers it; its event id is the alarm's.
RESULT_DEDUPLICATED = 200


@dataclass(slots=True)
class JobResult:
    """The outcome of one submitted event: 201 with its id (200 with the id of the open alarm
    it was counted into), or an error code and message."""

    item: int
    result_code: int
    event_id: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.result_code in (201, RESULT_DEDUPLICATED)


@dataclass(slots=True)
class Job:
    id: str
    tenant_id: str
    kind: JobKind
    state: JobState
    owner: Principal
    # Create jobs: {"format": "rest" | "grpc", "events": [...]}; delete jobs: {"filter": {...}}.
    request: dict[str, Any]
    total: int
    done: int = 0
    failed: int = 0
    create_time: int = 0
    update_time: int = 0
    expire_time: int | None = None
    results: list[JobResult] = field(default_factory=list)


class JobRepository(Protocol):
    async def insert(self, job: Job) -> None: ...

    async def get(self, principal: Principal, kind: JobKind, job_id: str) -> Job | None: ...

    async def claim(self, owner: str, lease_us: int) -> Job | None: ...

    async def commit_chunk(
        self,
        job: Job,
        owner: str,
        lease_us: int,
        events: list[tuple[Event, str | None]],
        results: list[JobResult],
    ) -> None:
        """Stores the events (each with its de-duplication key) and results; a result whose
        event was counted into an open alarm becomes RESULT_DEDUPLICATED, the alarm's id."""
        ...

    async def delete_batch(
        self, job: Job, owner: str, lease_us: int, condition: Condition | None, limit: int
    ) -> int: ...

    async def count_matching(self, principal: Principal, condition: Condition | None) -> int: ...

    async def change_status_batch(
        self,
        job: Job,
        owner: str,
        lease_us: int,
        condition: Condition | None,
        change: Callable[[Event], tuple[Event, Transition]],
        limit: int,
    ) -> tuple[int, int]:
        """Applies `change` to up to `limit` matching events with their transitions and the
        progress, in one transaction; (events read, events changed)."""
        ...

    async def finish(
        self, job: Job, owner: str, state: JobState, audit: Event, kept_us: int
    ) -> None: ...

    async def purge_expired(self, now: int) -> int: ...


class LeaseLost(DomainError):
    """Another process took the job over; this one must stop working on it."""

    reason = "JOB_LEASE_LOST"


def parse_delete_filter(
    document: Any, custom_field_type: CustomFieldType = no_custom_fields
) -> Condition | None:
    """A delete filter is a list filter (README: List filters), over every event the job's
    owner may see, of any time (no 7-day window); `{}` matches every event. Severities
    outside 0 to MAX_SEVERITY are refused when the job is submitted, as no event has one."""
    return compile_document(
        document, custom_field_type, value_ranges={"severity": (0, MAX_SEVERITY)}
    )


def check_job_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise invalid("id", "must be a job id (a UUID)") from None


class JobManager:
    """Accepts jobs and reads their status; `wake` tells the local runner there is work."""

    def __init__(
        self,
        repository: JobRepository,
        wake: Callable[[], None] = lambda: None,
        custom_fields_of: CustomFieldsOf | None = None,
    ) -> None:
        self._repository = repository
        self._wake = wake
        self._custom_fields_of = custom_fields_of

    async def submit_create(self, principal: Principal, events: Any, source: str) -> Job:
        if not isinstance(events, list) or not events:
            raise invalid("events", "must be a non-empty list of events")
        if len(events) > MAX_CREATE_JOB_EVENTS:
            raise invalid(
                "events",
                f"at most {MAX_CREATE_JOB_EVENTS} events per job",
                reason="TOO_MANY_EVENTS",
            )
        bad = [i for i, e in enumerate(events) if not isinstance(e, dict)]
        if bad:
            raise InvalidInput(
                [FieldViolation(f"events[{i}]", "must be a JSON object") for i in bad[:20]]
            )
        request = {"format": source, "events": events}
        return await self._submit(principal, JobKind.CREATE_EVENTS, request, len(events))

    async def submit_delete(self, principal: Principal, filter_document: Any) -> Job:
        custom: dict[str, FieldType] = {}
        if self._custom_fields_of is not None and isinstance(filter_document, dict):
            custom = await self._custom_fields_of(principal, json.dumps(filter_document))
        # A bad filter fails now, not in the background; the job keeps the custom fields'
        # types, so that it deletes what the filter meant when it was accepted.
        parse_delete_filter(filter_document, custom.get)
        request = {"filter": filter_document, "customFields": custom}
        return await self._submit(principal, JobKind.DELETE_EVENTS, request, 0)

    async def submit_status_change(
        self, principal: Principal, kind: JobKind, filter_document: Any
    ) -> Job:
        """A job that acknowledges (ACTIVE ones) or clears (ACTIVE and ACKNOWLEDGED ones)
        the alarms that match a list filter, inside the submitter's tenant and subtree."""
        if kind not in _CHANGES_FROM:
            raise ValueError(f"{kind} changes no status")
        custom: dict[str, FieldType] = {}
        if self._custom_fields_of is not None and isinstance(filter_document, dict):
            custom = await self._custom_fields_of(principal, json.dumps(filter_document))
        parse_delete_filter(filter_document, custom.get)
        request = {"filter": filter_document, "customFields": custom}
        return await self._submit(principal, kind, request, 0)

    async def _submit(
        self, principal: Principal, kind: JobKind, request: dict[str, Any], total: int
    ) -> Job:
        now = now_us()
        job = Job(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            kind=kind,
            state=JobState.ACCEPTED,
            owner=principal,
            request=request,
            total=total,
            create_time=now,
            update_time=now,
        )
        await self._repository.insert(job)
        self._wake()
        return job

    async def get(self, principal: Principal, kind: JobKind, job_id: str) -> Job:
        job = await self._repository.get(principal, kind, check_job_id(job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found", reason="JOB_NOT_FOUND")
        return job


# Turns one submitted event (in the job's source format) into canonical event fields.
ItemParser = Callable[[str, dict[str, Any]], Mapping[str, Any]]


@dataclass
class RunnerSettings:
    lease_us: int = int(float(os.environ.get("EVENTMGMT_JOB_LEASE_S", "30")) * 1_000_000)
    chunk: int = int(os.environ.get("EVENTMGMT_JOB_CHUNK", "500"))
    poll_s: float = float(os.environ.get("EVENTMGMT_JOB_POLL_S", "1.0"))
    # How long a finished job's status stays readable.
    kept_us: int = int(float(os.environ.get("EVENTMGMT_JOB_KEPT_S", "86400")) * 1_000_000)


class JobRunner:
    """Claims runnable jobs (new ones, and those whose holder's lease ran out) and runs them."""

    def __init__(
        self,
        repository: JobRepository,
        events: EventManager,
        parse_item: ItemParser,
        settings: RunnerSettings | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self._repository = repository
        self._events = events
        self._limits = limits
        self._parse_item = parse_item
        self._settings = settings or RunnerSettings()
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def run_forever(self) -> None:
        while True:
            try:
                while await self.run_one():
                    pass
                await self._repository.purge_expired(now_us())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job runner failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._settings.poll_s)
            self._wakeup.clear()

    async def run_one(self) -> bool:
        """Runs one claimable job to its end; False when there was none."""
        job = await self._repository.claim(self._owner, self._settings.lease_us)
        if job is None:
            return False
        log.info("running %s job %s (%s of %s done)", job.kind, job.id, job.done, job.total)
        try:
            if job.kind is JobKind.CREATE_EVENTS:
                await self._run_create(job)
            elif job.kind is JobKind.DELETE_EVENTS:
                await self._run_delete(job)
            else:
                await self._run_status_change(job)
        except LeaseLost:
            log.warning("lost the lease of job %s; another process continues it", job.id)
        return True

    async def _run_create(self, job: Job) -> None:
        source, items = job.request["format"], job.request["events"]
        while job.done < job.total:
            start = job.done
            end = min(start + self._settings.chunk, job.total)
            if self._limits is not None:
                # Each item counts against the owner's create limits. Over them, the job
                # waits out the window leased to nobody, so that any runner resumes it then
                # and this one runs other tenants' jobs meanwhile.
                granted, refusal = await self._limits.grant(
                    job.owner, Operation.CREATE, end - start
                )
                if refusal is not None and granted == 0:
                    wait_us = max(1000, int(refusal.retry_after or 1) * 1_000_000)
                    await self._repository.commit_chunk(job, self._owner, wait_us, [], [])
                    log.info("job %s waits %s s for its rate limit", job.id, wait_us // 1_000_000)
                    return
                end = start + granted
            events: list[tuple[Event, str | None]] = []
            results: list[JobResult] = []
            for index in range(start, end):
                try:
                    event = await self._events.prepare(
                        job.owner, self._parse_item(source, items[index]), entity_required=True
                    )
                except InvalidInput as error:
                    results.append(JobResult(index, 400, error_message=error.message))
                except DomainError as error:
                    results.append(JobResult(index, 403, error_message=error.message))
                else:
                    events.append((event, await self._events.dedup_key(job.owner, event)))
                    results.append(JobResult(index, 201, event_id=event.id))
            await self._repository.commit_chunk(
                job, self._owner, self._settings.lease_us, events, results
            )
            job.done += len(results)
            job.failed += sum(1 for r in results if not r.ok)
        created = job.total - job.failed
        state = JobState.FINISHED_WITH_ERROR if job.failed else JobState.FINISHED
        await self._finish(
            job,
            state,
            CODE_CREATE_JOB_FINISHED,
            f"createEventsJob {job.id} finished: {created} events created, {job.failed} failed",
        )

    async def _run_delete(self, job: Job) -> None:
        custom: dict[str, FieldType] = job.request.get("customFields", {})
        condition = parse_delete_filter(job.request["filter"], custom.get)
        if job.total == 0:
            job.total = await self._repository.count_matching(job.owner, condition)
        while True:
            deleted = await self._repository.delete_batch(
                job, self._owner, self._settings.lease_us, condition, self._settings.chunk
            )
            job.done += deleted
            if deleted < self._settings.chunk:
                break
        await self._finish(
            job,
            JobState.FINISHED,
            CODE_DELETE_JOB_FINISHED,
            f"deleteEventsJob {job.id} finished: {job.done} events deleted",
        )

    async def _run_status_change(self, job: Job) -> None:
        custom: dict[str, FieldType] = job.request.get("customFields", {})
        statuses = _CHANGES_FROM[job.kind]
        condition = all_of(
            [
                parse_delete_filter(job.request["filter"], custom.get),
                Compare(_STATUS, "in", statuses),
            ]
        )
        if job.total == 0:
            job.total = await self._repository.count_matching(job.owner, condition)
        by = job.owner.name
        clearing = job.kind is JobKind.CLEAR_EVENTS

        def change(stored: Event) -> tuple[Event, Transition]:
            if clearing:
                return cleared(stored, by, now_us())
            updated, transition = acknowledged(stored, by, now_us())
            assert transition is not None, "an ACTIVE event is an alarm"
            return updated, transition

        while True:
            read, changed = await self._repository.change_status_batch(
                job, self._owner, self._settings.lease_us, condition, change, self._settings.chunk
            )
            job.done += changed
            if read < self._settings.chunk:
                break
        # Alarms that began to match while the job ran are changed too.
        job.total = max(job.total, job.done)
        verb, code = (
            ("cleared", CODE_CLEAR_JOB_FINISHED)
            if clearing
            else ("acknowledged", CODE_ACKNOWLEDGE_JOB_FINISHED)
        )
        await self._finish(
            job,
            JobState.FINISHED,
            code,
            f"{job.kind.value}Job {job.id} finished: {job.done} alarms {verb}",
        )

    async def _finish(self, job: Job, state: JobState, code: str, description: str) -> None:
        now = now_us()
        audit = Event(
            id=new_event_id(),
            tenant_id=job.tenant_id,
            type_id=STANDARD_EVENT,
            entity_type="Job",
            entity_id=job.id,
            domain=job.owner.domain,
            timestamp=now,
            create_time=now,
            update_time=now,
            severity=3 if state is JobState.FINISHED_WITH_ERROR else 5,
            code=code,
            description=description,
            source={"job": job.kind.value, "requestedBy": job.owner.name},
            classification="INTERNAL",
            internal=True,
        )
        await self._repository.finish(job, self._owner, state, audit, self._settings.kept_us)
        log.info("%s", description)
