"""Bulk jobs (docs/rest-v3.md#create-jobs): over REST through the real Envoy and over gRPC, on
SQLite and PostgreSQL; durable across kill -9 and safe with two server processes on one database."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import grpc
import pytest

from helpers import Replicas, Service, violations
from persistence.jobs import JobRepository
from service.domain.access import Principal, Role
from service.domain.events import EventManager
from service.domain.jobs import JobKind, JobManager, JobRunner, JobState, RunnerSettings
from service.job_views import parse_job_item
from service.v1 import event_job_service_pb2 as pb
from service.v1 import event_job_service_pb2_grpc, event_pb2

if TYPE_CHECKING:
    from helpers import Keys

pytestmark = pytest.mark.integration


def wait_for_job(service: Service, path: str, key: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = service.request("GET", path, key=key).json()
        if status["state"] in ("FINISHED", "FINISHED_WITH_ERROR"):
            return dict(status)
        time.sleep(0.05)
    raise AssertionError(f"job {path} did not finish in {timeout} s")


def submit(service: Service, kind: str, body: Any, key: str) -> tuple[str, dict[str, Any]]:
    answer = service.request("POST", f"/{kind}", body, key=key)
    assert answer.status == 201, answer.body
    accepted = answer.json()
    assert accepted["state"] == "ACCEPTED"
    path = f"/{kind}/{accepted['id']}"
    assert answer.headers["location"] == service.rest_url + path
    return path, accepted


def test_create_job_stores_valid_events_and_reports_each(service: Service, keys: Keys) -> None:
    marker = uuid.uuid4().hex
    events = [
        {
            "correlationId": marker,
            "timestamp": "2018-07-29T12:17:48.454Z",
            "entityId": "e-1",
            "description": "valid",
        },
        {"correlationId": marker, "severity": "high"},
        {"correlationId": marker, "colour": "red"},
        {
            "correlationId": marker,
            "entityId": "e-2",
            "severity": 2,
            "source": {"thingName": "000001"},
        },
    ]

    path, _ = submit(service, "createEventsJobs", {"events": events}, keys.writer)
    status = wait_for_job(service, path, keys.read)

    assert status["state"] == "FINISHED_WITH_ERROR"
    assert status["progress"] == {"done": 4, "total": 4}
    results = status["details"]["resultDescription"]
    assert [r["resultCode"] for r in results] == ["201", "400", "400", "201"]
    assert "severity" in results[1]["errorMessage"]
    assert "colour" in results[2]["errorMessage"]
    assert results[1]["event"] == events[1]
    for result in (results[0], results[3]):
        stored = service.request("GET", f"/events/{result['event']['id']}", key=keys.read)
        assert stored.status == 200
        assert result["event"]["_links"]["self"]["href"].endswith(result["event"]["id"])
    assert service.request("GET", f"/events/{results[3]['event']['id']}", key=keys.read).json()[
        "source"
    ] == {"thingName": "000001"}


def test_a_job_of_only_valid_events_finishes_and_is_audited(service: Service, keys: Keys) -> None:
    path, accepted = submit(
        service,
        "createEventsJobs",
        {"events": [{"description": f"e{n}", "entityId": "e-1"} for n in range(30)]},
        keys.writer,
    )
    status = wait_for_job(service, path, keys.read)

    assert status["state"] == "FINISHED"
    assert {r["resultCode"] for r in status["details"]["resultDescription"]} == {"201"}
    page = service.request("GET", "/events?size=1000&sort=createTime,desc", key=keys.admin).json()
    audits = [e for e in page["_embedded"]["events"] if e.get("entityId") == accepted["id"]]
    assert len(audits) == 1
    assert audits[0]["internal"] is True and audits[0]["code"] == "1101"
    assert "30 events created" in audits[0]["description"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": []}, "events"),
        ({"events": "all of them"}, "events"),
        ({"events": [{"description": "ok"}, 7]}, "events[1]"),
        ({"events": [{}], "priority": "high"}, "priority"),
        ({}, "events"),
        ([], "body"),
    ],
)
def test_bad_create_jobs_are_refused(service: Service, keys: Keys, body: Any, field: str) -> None:
    answer = service.request("POST", "/createEventsJobs", body, key=keys.writer)

    assert answer.status == 400
    violations = next(d for d in answer.json()["details"] if d["@type"].endswith("BadRequest"))
    assert field in {v["field"] for v in violations["fieldViolations"]}


def test_create_job_cap(service: Service, keys: Keys) -> None:
    at_cap = service.request(
        "POST", "/createEventsJobs", {"events": [{}] * 10_001}, key=keys.writer
    )

    assert at_cap.status == 400
    reasons = {d.get("reason") for d in at_cap.json()["details"]}
    assert "TOO_MANY_EVENTS" in reasons


def test_job_ids_are_checked_and_scoped(service: Service, keys: Keys) -> None:
    path, _ = submit(service, "createEventsJobs", {"events": [{"description": "x"}]}, keys.writer)
    wait_for_job(service, path, keys.read)

    assert service.request("GET", path, key=keys.other_tenant).status == 404
    assert service.request("GET", f"/createEventsJobs/{uuid.uuid4()}", key=keys.read).status == 404
    assert service.request("GET", "/createEventsJobs/not-a-uuid", key=keys.read).status == 400
    # A create job is not a delete job.
    assert service.request("GET", path.replace("create", "delete"), key=keys.read).status == 404
    assert (
        service.request("POST", "/createEventsJobs", {"events": [{}]}, key=keys.read).status == 403
    )


def test_delete_job_deletes_exactly_the_matching_events_in_scope(
    service: Service, keys: Keys
) -> None:
    entity = f"asset-{uuid.uuid4().hex[:8]}"
    for domain in ("/root/sub1", "/root/sub1/sub11", "/root/sub2"):
        for _ in range(3):
            assert (
                service.request(
                    "POST", "/events", {"entityId": entity, "domain": domain}, key=keys.writer
                ).status
                == 201
            )
    other = service.request("POST", "/events", {"entityId": entity}, key=keys.other_tenant)
    assert other.status == 201

    path, _ = submit(
        service, "deleteEventsJobs", {"filter": {"entityId": entity}}, keys.sub1_writer
    )
    status = wait_for_job(service, path, keys.sub1_writer)

    assert status["state"] == "FINISHED"
    assert status["details"] == {"resultCode": "200", "resultDescription": "6 events deleted."}
    remaining = service.request("GET", "/events?size=1000", key=keys.admin).json()
    left = [e for e in remaining["_embedded"]["events"] if e.get("entityId") == entity]
    assert {e["domain"] for e in left} == {"/root/sub2"} and len(left) == 3
    assert (
        service.request("GET", f"/events/{other.json()['id']}", key=keys.other_tenant).status == 200
    )


@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"colour": "red"}},
        {"filter": "typeId"},
        {"filter": {"severity": "high"}},
        {"typeId": "x"},
    ],
)
def test_bad_delete_filters_are_refused(service: Service, keys: Keys, body: Any) -> None:
    assert service.request("POST", "/deleteEventsJobs", body, key=keys.writer).status == 400


@pytest.fixture
def jobs_stub(service: Service) -> Iterator[event_job_service_pb2_grpc.EventJobServiceStub]:
    with grpc.insecure_channel(service.grpc_target) as channel:
        yield event_job_service_pb2_grpc.EventJobServiceStub(channel)


def test_jobs_over_grpc(
    jobs_stub: event_job_service_pb2_grpc.EventJobServiceStub, keys: Keys
) -> None:
    metadata = (("x-api-key", keys.writer),)
    entity = f"grpc-{uuid.uuid4().hex[:8]}"
    events = [
        event_pb2.Event(description="a", entity_id=entity),
        event_pb2.Event(description="b", entity_id=entity, domain="bad domain"),
    ]

    job = jobs_stub.SubmitCreateEventsJob(
        pb.SubmitCreateEventsJobRequest(events=events), metadata=metadata
    ).job
    assert job.state == pb.JOB_STATE_ACCEPTED and job.total == 2
    deadline = time.monotonic() + 30
    while job.state not in (pb.JOB_STATE_FINISHED, pb.JOB_STATE_FINISHED_WITH_ERROR):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        job = jobs_stub.GetCreateEventsJob(
            pb.GetCreateEventsJobRequest(id=job.id), metadata=metadata
        ).job
    assert job.state == pb.JOB_STATE_FINISHED_WITH_ERROR
    assert [(r.index, r.result_code) for r in job.results] == [(0, 201), (1, 400)]
    assert "domain" in job.results[1].error_message

    deletion = jobs_stub.SubmitDeleteEventsJob(
        pb.SubmitDeleteEventsJobRequest(filter=json.dumps({"entityId": entity})), metadata=metadata
    ).job
    while deletion.state != pb.JOB_STATE_FINISHED:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        deletion = jobs_stub.GetDeleteEventsJob(
            pb.GetDeleteEventsJobRequest(id=deletion.id), metadata=metadata
        ).job
    assert deletion.deleted_count == 1

    with pytest.raises(grpc.RpcError) as bad_filter:
        jobs_stub.SubmitDeleteEventsJob(
            pb.SubmitDeleteEventsJobRequest(filter="{"), metadata=metadata
        )
    assert bad_filter.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_job_status_is_purged_after_its_time(store: Any) -> None:
    """The runner in-process against the store: a finished job's status expires."""
    store.keys.create_tenant("t1", "T1")
    principal = Principal("t1", "k1", "key", Role.READ_WRITE)
    repository = JobRepository(store)
    runner = JobRunner(
        repository, EventManager(store.events), parse_job_item, RunnerSettings(kept_us=0)
    )
    manager = JobManager(repository)

    async def scenario() -> tuple[JobState, Any, Any]:
        job = await manager.submit_create(
            principal, [{"description": "x", "entityId": "e"}], "rest"
        )
        assert await runner.run_one()
        finished = await repository.get(principal, JobKind.CREATE_EVENTS, job.id)
        assert finished is not None
        await repository.purge_expired(finished.expire_time + 1)  # type: ignore[operator]
        return (
            finished.state,
            await repository.get(principal, JobKind.CREATE_EVENTS, job.id),
            await runner.run_one(),
        )

    state, after_purge, ran_again = asyncio.run(scenario())
    assert state is JobState.FINISHED
    assert after_purge is None
    assert ran_again is False


def test_claims_never_hand_one_job_to_two_runners(store: Any) -> None:
    """Two runners claim concurrently from the same store: each job goes to exactly one."""
    store.keys.create_tenant("t1", "T1")
    principal = Principal("t1", "k1", "key", Role.READ_WRITE)
    repository = JobRepository(store)
    manager = JobManager(repository)

    async def scenario() -> list[str]:
        for n in range(10):
            await manager.submit_create(principal, [{"description": str(n)}], "rest")
        claims = await asyncio.gather(
            *(repository.claim(f"runner-{n % 2}", 60_000_000) for n in range(14))
        )
        return [job.id for job in claims if job is not None]

    claimed = asyncio.run(scenario())
    assert len(claimed) == 10 == len(set(claimed))


@pytest.fixture
def durable_service(tmp_path: Path) -> Iterator[Service]:
    """A server of its own with small chunks and a short lease, so that a job can be caught
    mid-way and a killed holder's lease runs out quickly."""
    running = Service(
        f"sqlite:///{tmp_path / 'events.db'}",
        tmp_path,
        env={
            "EVENTMGMT_JOB_CHUNK": "10",
            "EVENTMGMT_JOB_LEASE_S": "1",
            "EVENTMGMT_JOB_POLL_S": "0.2",
        },
    )
    running.start()
    yield running
    if running.process and running.process.poll() is None:
        running.stop(signal.SIGKILL)


def test_a_job_killed_mid_way_finishes_after_restart_exactly_once(durable_service: Service) -> None:
    key = durable_service.create_key("durable", "ReadWrite")
    marker = uuid.uuid4().hex
    total = 10_000
    path, _ = submit(
        durable_service,
        "createEventsJobs",
        {
            "events": [
                {"correlationId": marker, "entityId": "e", "description": str(n)}
                for n in range(total)
            ]
        },
        key,
    )
    progress: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = durable_service.request("GET", path, key=key).json()
        if progress["progress"]["done"] > 0:
            break
    durable_service.stop(signal.SIGKILL)
    assert progress["state"] == "IN_PROGRESS"
    assert 0 < progress["progress"]["done"] < total

    durable_service.start()
    status = wait_for_job(durable_service, path, key, timeout=120)

    assert status["state"] == "FINISHED"
    assert status["progress"] == {"done": total, "total": total}
    ids = [r["event"]["id"] for r in status["details"]["resultDescription"]]
    assert len(ids) == total == len(set(ids))
    assert _count_events(durable_service.database_url, "durable", marker) == total


def _count_events(database_url: str, tenant: str, correlation_id: str) -> int:
    from persistence.store import Store

    store = Store(database_url)
    try:
        return int(
            store.run_sync(
                lambda db: db.execute_sql(
                    f"SELECT COUNT(*) FROM events WHERE tenant_id = {db.param} "
                    f"AND correlation_id = {db.param}",
                    (tenant, correlation_id),
                ).fetchone()[0]
            )
        )
    finally:
        store.close()


def test_two_replicas_run_each_job_once(replicas: Callable[..., Replicas]) -> None:
    running = replicas({"EVENTMGMT_JOB_CHUNK": "25", "EVENTMGMT_JOB_POLL_S": "0.1"})
    key = running.create_key("shared", "ReadWrite")
    marker = uuid.uuid4().hex
    job_ids = []
    for n in range(6):
        stub = event_job_service_pb2_grpc.EventJobServiceStub(running.channels[n % 2])
        job_ids.append(
            stub.SubmitCreateEventsJob(
                pb.SubmitCreateEventsJobRequest(
                    events=[
                        event_pb2.Event(correlation_id=marker, entity_id="e", description=str(i))
                        for i in range(200)
                    ]
                ),
                metadata=(("x-api-key", key),),
            ).job.id
        )
    deadline = time.monotonic() + 120
    stub = event_job_service_pb2_grpc.EventJobServiceStub(running.channels[0])
    for job_id in job_ids:
        while True:
            job = stub.GetCreateEventsJob(
                pb.GetCreateEventsJobRequest(id=job_id), metadata=(("x-api-key", key),)
            ).job
            if job.state == pb.JOB_STATE_FINISHED:
                break
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.1)
    assert _count_events(running.database_url, "shared", marker) == 6 * 200


def _descriptions(service: Service, key: str, entity: str) -> list[str]:
    """The descriptions of the entity's events (of every time and version), sorted."""
    query = quote(json.dumps({"entityId": entity, "timestamp": {"after": 0}}))
    listed = service.request("GET", f"/events?size=100&history=true&filter={query}", key=key)
    assert listed.status == 200, listed.body
    return sorted(e["description"] for e in listed.json()["_embedded"]["events"])


def _create(service: Service, key: str, *events: dict[str, Any]) -> None:
    for body in events:
        answer = service.request("POST", "/events", body, key=key)
        assert answer.status == 201, answer.body


def test_delete_jobs_take_the_list_filter_language(service: Service) -> None:
    """Over REST through Envoy: the source, a time range, `or`, `not` and a custom field."""
    key = service.create_key(f"delete-filter-{uuid.uuid4().hex[:8]}", "Admin")
    entity = "pump-1"
    fields = [{"name": "plant", "type": "STRING", "filterable": True}]
    created = service.request("POST", "/eventTypes", {"name": "Pump", "fields": fields}, key=key)
    assert created.status == 201, created.body
    type_id = created.json()["id"]
    _create(
        service,
        key,
        {"entityId": entity, "description": "a", "source": "eventSource"},
        {"entityId": entity, "description": "b", "source": "otherSource"},
        {"entityId": entity, "description": "c", "source": {"name": "eventSource"}},
        {"entityId": entity, "description": "d", "timestamp": "2020-01-01T00:00:00Z"},
        {"entityId": entity, "description": "e", "timestamp": "2020-06-01T00:00:00Z"},
        {"entityId": entity, "description": "f", "severity": 7, "code": "X-1"},
        {"entityId": entity, "description": "g", "typeId": type_id, "plant": "P7"},
        {"entityId": entity, "description": "h", "typeId": type_id, "plant": "P8"},
    )

    def delete(document: dict[str, Any]) -> None:
        path, _ = submit(service, "deleteEventsJobs", {"filter": document}, key)
        assert wait_for_job(service, path, key)["state"] == "FINISHED"

    delete({"source": "eventSource"})
    assert _descriptions(service, key, entity) == ["b", "c", "d", "e", "f", "g", "h"]
    delete({"timestamp": {"between": "[2020-01-01T00:00:00Z,2020-06-01T00:00:00Z)"}})
    assert _descriptions(service, key, entity) == ["b", "c", "e", "f", "g", "h"]
    delete({"or": [{"code": {"like": "X-*"}}, {"timestamp": {"before": "2021-01-01T00:00:00Z"}}]})
    assert _descriptions(service, key, entity) == ["b", "c", "g", "h"]
    delete({"plant": "P7"})
    assert _descriptions(service, key, entity) == ["b", "c", "h"]
    delete({"not": {"source": {"in": ["otherSource"]}}, "entityId": entity})
    assert _descriptions(service, key, entity) == ["b"]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"source": {"like": "event*"}}, "filter.source.like"),
        ({"severity": {"in": [1, 101]}}, "filter.severity.in[1]"),
        ({"timestamp": {"between": "[2020-01-01T00:00:00Z"}}, "filter.timestamp.between"),
        ({"plant": "P7"}, "filter.plant"),
    ],
)
def test_bad_delete_filters_name_the_problem_and_start_no_job(
    service: Service, keys: Keys, document: dict[str, Any], field: str
) -> None:
    answer = service.request("POST", "/deleteEventsJobs", {"filter": document}, key=keys.writer)

    assert answer.status == 400, answer.body
    assert field in violations(answer)


def test_grpc_delete_jobs_take_the_list_filter_language(
    service: Service, jobs_stub: event_job_service_pb2_grpc.EventJobServiceStub
) -> None:
    key = service.create_key(f"delete-grpc-{uuid.uuid4().hex[:8]}", "Admin")
    entity = "valve-1"
    _create(
        service,
        key,
        *(
            {"entityId": entity, "description": f"s{severity}", "severity": severity}
            for severity in (1, 2, 3, 4)
        ),
    )
    metadata = (("x-api-key", key),)

    job = jobs_stub.SubmitDeleteEventsJob(
        pb.SubmitDeleteEventsJobRequest(
            filter=json.dumps({"entityId": entity, "severity": {"between": "[2,3]"}})
        ),
        metadata=metadata,
    ).job
    deadline = time.monotonic() + 60
    while job.state not in (pb.JOB_STATE_FINISHED, pb.JOB_STATE_FINISHED_WITH_ERROR):
        assert time.monotonic() < deadline, "the delete job did not finish"
        time.sleep(0.05)
        job = jobs_stub.GetDeleteEventsJob(
            pb.GetDeleteEventsJobRequest(id=job.id), metadata=metadata
        ).job

    assert job.state == pb.JOB_STATE_FINISHED and job.deleted_count == 2
    assert _descriptions(service, key, entity) == ["s1", "s4"]
    with pytest.raises(grpc.RpcError) as bad:
        jobs_stub.SubmitDeleteEventsJob(
            pb.SubmitDeleteEventsJobRequest(filter=json.dumps({"source": {"like": "x*"}})),
            metadata=metadata,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter.source.like" in (bad.value.details() or "")
