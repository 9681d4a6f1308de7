"""EventJobService and EventJobRestService: submit bulk jobs and read their status."""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2

from service import job_views, rest_json
from service.auth import current_principal
from service.domain.errors import invalid
from service.domain.jobs import Job, JobKind, JobManager
from service.servicers.rest import base_url
from service.v1 import event_job_rest_service_pb2 as rest_pb
from service.v1 import event_job_rest_service_pb2_grpc, event_job_service_pb2_grpc
from service.v1 import event_job_service_pb2 as pb


class EventJobServicer(event_job_service_pb2_grpc.EventJobServiceServicer):
    def __init__(self, jobs: JobManager) -> None:
        self._jobs = jobs

    async def SubmitCreateEventsJob(
        self, request: pb.SubmitCreateEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitCreateEventsJobResponse:
        items = [job_views.grpc_item(e) for e in request.events]
        job = await self._jobs.submit_create(current_principal(), items, job_views.GRPC_FORMAT)
        return pb.SubmitCreateEventsJobResponse(job=job_views.job_message(job))

    async def GetCreateEventsJob(
        self, request: pb.GetCreateEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCreateEventsJobResponse:
        job = await self._jobs.get(current_principal(), JobKind.CREATE_EVENTS, request.id)
        return pb.GetCreateEventsJobResponse(job=job_views.job_message(job))

    async def SubmitDeleteEventsJob(
        self, request: pb.SubmitDeleteEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitDeleteEventsJobResponse:
        document = rest_json.loads(request.filter.encode(), "filter")
        job = await self._jobs.submit_delete(current_principal(), document)
        return pb.SubmitDeleteEventsJobResponse(job=job_views.job_message(job))

    async def GetDeleteEventsJob(
        self, request: pb.GetDeleteEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDeleteEventsJobResponse:
        job = await self._jobs.get(current_principal(), JobKind.DELETE_EVENTS, request.id)
        return pb.GetDeleteEventsJobResponse(job=job_views.job_message(job))

    async def SubmitAcknowledgeEventsJob(
        self, request: pb.SubmitAcknowledgeEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitAcknowledgeEventsJobResponse:
        job = await self._submit_status_change(JobKind.ACKNOWLEDGE_EVENTS, request.filter)
        return pb.SubmitAcknowledgeEventsJobResponse(job=job_views.job_message(job))

    async def GetAcknowledgeEventsJob(
        self, request: pb.GetAcknowledgeEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAcknowledgeEventsJobResponse:
        job = await self._jobs.get(current_principal(), JobKind.ACKNOWLEDGE_EVENTS, request.id)
        return pb.GetAcknowledgeEventsJobResponse(job=job_views.job_message(job))

    async def SubmitClearEventsJob(
        self, request: pb.SubmitClearEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitClearEventsJobResponse:
        job = await self._submit_status_change(JobKind.CLEAR_EVENTS, request.filter)
        return pb.SubmitClearEventsJobResponse(job=job_views.job_message(job))

    async def GetClearEventsJob(
        self, request: pb.GetClearEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClearEventsJobResponse:
        job = await self._jobs.get(current_principal(), JobKind.CLEAR_EVENTS, request.id)
        return pb.GetClearEventsJobResponse(job=job_views.job_message(job))

    async def _submit_status_change(self, kind: JobKind, filter_text: str) -> Job:
        document = rest_json.loads(filter_text.encode(), "filter")
        return await self._jobs.submit_status_change(current_principal(), kind, document)


def _body_with(raw: bytes, name: str) -> Any:
    """The one member `name` of a JSON object body; any other member is an error."""
    document = rest_json.loads(raw, limit=job_views.MAX_JOB_BODY_BYTES)
    if not isinstance(document, dict):
        raise invalid("body", f'must be a JSON object {{"{name}": ...}}')
    unknown = sorted(set(document) - {name})
    if unknown:
        raise invalid(", ".join(unknown), f"unknown field; the body holds only {name!r}")
    if name not in document:
        raise invalid(name, "is required")
    return document[name]


class EventJobRestServicer(event_job_rest_service_pb2_grpc.EventJobRestServiceServicer):
    def __init__(self, jobs: JobManager) -> None:
        self._jobs = jobs

    async def RestSubmitCreateEventsJob(
        self, request: rest_pb.RestSubmitCreateEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        events = _body_with(request.body.data, "events")
        job = await self._jobs.submit_create(current_principal(), events, job_views.REST_FORMAT)
        return await self._accepted(job, context)

    async def RestGetCreateEventsJob(
        self, request: rest_pb.RestGetCreateEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        job = await self._jobs.get(current_principal(), JobKind.CREATE_EVENTS, request.id)
        return rest_json.json_body(job_views.status_document(job, base_url(context)))

    async def RestSubmitDeleteEventsJob(
        self, request: rest_pb.RestSubmitDeleteEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        document = _body_with(request.body.data, "filter")
        job = await self._jobs.submit_delete(current_principal(), document)
        return await self._accepted(job, context)

    async def RestGetDeleteEventsJob(
        self, request: rest_pb.RestGetDeleteEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        job = await self._jobs.get(current_principal(), JobKind.DELETE_EVENTS, request.id)
        return rest_json.json_body(job_views.status_document(job, base_url(context)))

    async def RestSubmitAcknowledgeEventsJob(
        self,
        request: rest_pb.RestSubmitAcknowledgeEventsJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> httpbody_pb2.HttpBody:
        return await self._submit_status_change(
            JobKind.ACKNOWLEDGE_EVENTS, request.body.data, context
        )

    async def RestGetAcknowledgeEventsJob(
        self,
        request: rest_pb.RestGetAcknowledgeEventsJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> httpbody_pb2.HttpBody:
        job = await self._jobs.get(current_principal(), JobKind.ACKNOWLEDGE_EVENTS, request.id)
        return rest_json.json_body(job_views.status_document(job, base_url(context)))

    async def RestSubmitClearEventsJob(
        self, request: rest_pb.RestSubmitClearEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        return await self._submit_status_change(JobKind.CLEAR_EVENTS, request.body.data, context)

    async def RestGetClearEventsJob(
        self, request: rest_pb.RestGetClearEventsJobRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        job = await self._jobs.get(current_principal(), JobKind.CLEAR_EVENTS, request.id)
        return rest_json.json_body(job_views.status_document(job, base_url(context)))

    async def _submit_status_change(
        self, kind: JobKind, raw: bytes, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        document = _body_with(raw, "filter")
        job = await self._jobs.submit_status_change(current_principal(), kind, document)
        return await self._accepted(job, context)

    @staticmethod
    async def _accepted(job: Any, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        await context.send_initial_metadata(
            [("x-http-code", "201"), ("location", job_views.location(job, base_url(context)))]
        )
        return rest_json.json_body(job_views.accepted_document(job))
