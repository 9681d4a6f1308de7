"""The views of bulk jobs: the documented JSON (docs/rest-v3.md#create-jobs) for REST, messages for
gRPC, and the parsing of the events a job carries (in the format they were submitted in)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from service import rest_json
from service.convert import fields_from_proto
from service.domain.jobs import Job, JobKind, JobState
from service.v1 import event_job_service_pb2 as pb
from service.v1 import event_pb2

REST_FORMAT = "rest"
GRPC_FORMAT = "grpc"
# A job body holds up to 10,000 events: larger than one event's 1 MiB.
MAX_JOB_BODY_BYTES = 16 * 1024 * 1024


def parse_job_item(source: str, item: dict[str, Any]) -> Mapping[str, Any]:
    """Canonical fields of one submitted event, parsed as its own API would parse it."""
    if source == GRPC_FORMAT:
        message = event_pb2.Event()
        json_format.ParseDict(item, message)
        return fields_from_proto(message)
    fields, _ = rest_json.parse_event_document(item)
    return fields


def grpc_item(event: event_pb2.Event) -> dict[str, Any]:
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def accepted_document(job: Job) -> dict[str, Any]:
    return {"id": job.id, "state": job.state.value}


# Each kind's collection path, and what a finished job of a filter kind says it did.
_PATHS = {
    JobKind.CREATE_EVENTS: "createEventsJobs",
    JobKind.DELETE_EVENTS: "deleteEventsJobs",
    JobKind.ACKNOWLEDGE_EVENTS: "acknowledgeEventsJobs",
    JobKind.CLEAR_EVENTS: "clearEventsJobs",
}
_DONE = {
    JobKind.DELETE_EVENTS: "events deleted",
    JobKind.ACKNOWLEDGE_EVENTS: "alarms acknowledged",
    JobKind.CLEAR_EVENTS: "alarms cleared",
}


def _path(job: Job) -> str:
    return _PATHS[job.kind]


def location(job: Job, base_url: str) -> str:
    return f"{base_url}/{_path(job)}/{job.id}"


def status_document(job: Job, base_url: str) -> dict[str, Any]:
    """The documented status answer, with `progress` while the job runs and after."""
    document: dict[str, Any] = {
        "id": job.id,
        "state": job.state.value,
        "progress": {"done": job.done, "total": job.total},
    }
    if job.kind is JobKind.CREATE_EVENTS:
        if job.results:
            items = job.request["events"]
            document["details"] = {
                "resultDescription": [
                    _create_result(
                        items[r.item], r.result_code, r.event_id, r.error_message, base_url
                    )
                    for r in job.results
                ]
            }
    elif job.state in (JobState.FINISHED, JobState.FINISHED_WITH_ERROR):
        document["details"] = {
            "resultCode": "200",
            "resultDescription": f"{job.done} {_DONE[job.kind]}.",
        }
    return document


def _create_result(
    item: dict[str, Any], code: int, event_id: str | None, error: str | None, base_url: str
) -> dict[str, Any]:
    event = dict(item)
    result: dict[str, Any] = {"event": event, "resultCode": str(code)}
    if event_id is not None:
        event.update(id=event_id, _links={"self": {"href": f"{base_url}/events/{event_id}"}})
        if code == 201:  # a de-duplicated alarm (200) is at whatever version it reached
            event["etag"] = 1
    if error is not None:
        result["errorMessage"] = error
    return result


def _timestamp(micros: int | None) -> Timestamp | None:
    if micros is None:
        return None
    seconds, fraction = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=fraction * 1000)


def job_message(job: Job) -> pb.Job:
    message = pb.Job(
        id=job.id,
        state=pb.JobState.Value(f"JOB_STATE_{job.state.value}"),  # type: ignore[arg-type]
        done=job.done,
        total=job.total,
        create_time=_timestamp(job.create_time),
        update_time=_timestamp(job.update_time),
        expire_time=_timestamp(job.expire_time),
    )
    if job.kind is JobKind.CREATE_EVENTS:
        message.results.extend(
            pb.CreateEventResult(
                index=r.item,
                result_code=r.result_code,
                event_id=r.event_id or "",
                error_message=r.error_message or "",
            )
            for r in job.results
        )
    elif job.kind is JobKind.DELETE_EVENTS:
        message.deleted_count = job.done
    else:
        message.changed_count = job.done
    return message
