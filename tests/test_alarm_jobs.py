"""Bulk acknowledge and clear jobs end to end: over REST through the real Envoy and over gRPC,
on SQLite and PostgreSQL, inside the submitter's tenant and subtree, audited, delivering their
transitions on the live feed, and resumed exactly once after kill -9."""

from __future__ import annotations

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
from test_jobs import submit, wait_for_job
from test_live import Subscription

from helpers import Replicas, Service, auth, violations
from service.v1 import event_job_service_pb2 as pb
from service.v1 import event_job_service_pb2_grpc, event_pb2

if TYPE_CHECKING:
    from helpers import Keys

pytestmark = pytest.mark.integration


def post(service: Service, key: str, **fields: Any) -> dict[str, Any]:
    # Each alarm its own code: a repeated alarm of one key counts into the open one
    # (README: De-duplication).
    fields.setdefault("code", str(10_000 + uuid.uuid4().int % 10**9))
    answer = service.request("POST", "/events", {"description": "d", **fields}, key=key)
    assert answer.status == 201, answer.body
    return dict(answer.json())


def events_of(service: Service, key: str, entity: str) -> dict[str, dict[str, Any]]:
    query = quote(json.dumps({"entityId": entity}))
    page = service.request("GET", f"/events?size=1000&filter={query}", key=key).json()
    return {e["id"]: e for e in page["_embedded"]["events"]}


def audit_of(service: Service, key: str, job_id: str) -> dict[str, Any]:
    query = quote(json.dumps({"entityId": job_id, "internal": True}))
    page = service.request("GET", f"/events?filter={query}", key=key).json()
    found = page["_embedded"]["events"]
    assert len(found) == 1, found
    return dict(found[0])


def test_clear_job_clears_the_matching_alarms_of_its_scope_only(
    service: Service, keys: Keys
) -> None:
    entity = f"plant-{uuid.uuid4().hex[:8]}"
    inside = [
        post(service, keys.writer, entityId=entity, domain=d, classification="ALARM")
        for d in ("/root/sub1", "/root/sub1", "/root/sub1/sub11")
    ]
    acked = post(service, keys.writer, entityId=entity, domain="/root/sub1", classification="ALARM")
    service.request("POST", f"/events/{acked['id']}/acknowledge", key=keys.writer)
    outside = post(
        service, keys.writer, entityId=entity, domain="/root/sub2", classification="ALARM"
    )
    warning = post(
        service, keys.writer, entityId=entity, domain="/root/sub1", classification="WARNING"
    )
    foreign = post(service, keys.other_tenant, entityId=entity, classification="ALARM")

    path, accepted = submit(
        service, "clearEventsJobs", {"filter": {"entityId": entity}}, keys.sub1_writer
    )
    status = wait_for_job(service, path, keys.sub1_writer)

    assert status["state"] == "FINISHED"
    assert status["progress"] == {"done": 4, "total": 4}
    assert status["details"] == {"resultCode": "200", "resultDescription": "4 alarms cleared."}
    stored = events_of(service, keys.admin, entity)
    for alarm in [*inside, acked]:
        assert stored[alarm["id"]]["status"] == "CLEARED"
        assert stored[alarm["id"]]["clearedBy"] == "test-key"
    assert stored[acked["id"]]["acknowledged"] is True
    assert stored[outside["id"]]["status"] == "ACTIVE"
    assert "status" not in stored[warning["id"]]
    theirs = service.request("GET", f"/events/{foreign['id']}", key=keys.other_tenant).json()
    assert theirs["status"] == "ACTIVE"

    audit = audit_of(service, keys.admin, accepted["id"])
    assert audit["code"] == "1104" and audit["entityType"] == "Job"
    assert audit["classification"] == "INTERNAL" and audit["domain"] == "/root/sub1"
    assert "4 alarms cleared" in audit["description"]

    # The whole tenant's key clears what the subtree's job left: the alarm of /root/sub2.
    again, _ = submit(service, "clearEventsJobs", {"filter": {"entityId": entity}}, keys.writer)
    assert wait_for_job(service, again, keys.writer)["progress"] == {"done": 1, "total": 1}


def test_acknowledge_job_delivers_each_transition_on_the_live_feed(
    service: Service, channel: grpc.Channel, keys: Keys
) -> None:
    root = f"/j{uuid.uuid4().hex[:8]}"
    entity = f"line-{uuid.uuid4().hex[:8]}"
    active = [
        post(service, keys.writer, entityId=entity, domain=root, classification="ALARM", severity=s)
        for s in (1, 1, 2)
    ]
    cleared = post(service, keys.writer, entityId=entity, domain=root, classification="ALARM")
    service.request("POST", f"/events/{cleared['id']}/clear", key=keys.writer)
    subscription = Subscription(channel, keys.read, domain=root)

    path, accepted = submit(
        service,
        "acknowledgeEventsJobs",
        {"filter": {"entityId": entity, "severity": {"in": [1, 2]}}},
        keys.writer,
    )
    status = wait_for_job(service, path, keys.read)
    assert status["details"]["resultDescription"] == "3 alarms acknowledged."

    transitions = []
    while len(transitions) < 3:
        message = subscription.next()
        if message.WhichOneof("kind") == "transition":
            transitions.append(message.transition)
    subscription.cancel()
    assert sorted(t.event.id for t in transitions) == sorted(a["id"] for a in active)
    assert {(t.change, t.from_status, t.to_status, t.by) for t in transitions} == {
        (
            "ACKNOWLEDGED",
            event_pb2.ALARM_STATUS_ACTIVE,
            event_pb2.ALARM_STATUS_ACKNOWLEDGED,
            "test-key",
        )
    }
    stored = events_of(service, keys.read, entity)
    assert {stored[a["id"]]["status"] for a in active} == {"ACKNOWLEDGED"}
    # The cleared alarm stays as it was: the job acknowledges ACTIVE alarms.
    assert (
        stored[cleared["id"]]["status"] == "CLEARED"
        and stored[cleared["id"]]["acknowledged"] is False
    )
    assert audit_of(service, keys.admin, accepted["id"])["code"] == "1103"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filter": {"status": {"like": 3}}}, "filter.status.like"),
        ({"filter": {"colour": "red"}}, "filter.colour"),
        ({"filter": {}, "priority": "high"}, "priority"),
        ({}, "filter"),
    ],
)
def test_bad_alarm_jobs_name_the_problem_and_start_no_job(
    service: Service, keys: Keys, body: Any, field: str
) -> None:
    for kind in ("acknowledgeEventsJobs", "clearEventsJobs"):
        answer = service.request("POST", f"/{kind}", body, key=keys.writer)
        assert answer.status == 400, answer.body
        assert field in violations(answer)


def test_alarm_jobs_need_what_acknowledging_needs_and_stay_in_their_tenant(
    service: Service, keys: Keys
) -> None:
    for kind in ("acknowledgeEventsJobs", "clearEventsJobs"):
        assert service.request("POST", f"/{kind}", {"filter": {}}, key=keys.read).status == 403
        assert service.request("POST", f"/{kind}", {"filter": {}}).status == 401
    path, accepted = submit(
        service, "clearEventsJobs", {"filter": {"entityId": "nothing-here"}}, keys.writer
    )
    wait_for_job(service, path, keys.writer)
    assert service.request("GET", path, key=keys.other_tenant).status == 404
    # A job is found under its own kind's path only.
    wrong = service.request("GET", f"/acknowledgeEventsJobs/{accepted['id']}", key=keys.writer)
    assert wrong.status == 404
    assert service.request("GET", "/clearEventsJobs/not-a-uuid", key=keys.writer).status == 400


@pytest.fixture
def jobs_stub(service: Service) -> Iterator[event_job_service_pb2_grpc.EventJobServiceStub]:
    with grpc.insecure_channel(service.grpc_target) as opened:
        yield event_job_service_pb2_grpc.EventJobServiceStub(opened)


def test_alarm_jobs_over_grpc(
    service: Service, jobs_stub: event_job_service_pb2_grpc.EventJobServiceStub, keys: Keys
) -> None:
    entity = f"grpc-{uuid.uuid4().hex[:8]}"
    alarms = [post(service, keys.writer, entityId=entity, classification="ALARM") for _ in range(3)]
    metadata = auth(keys.writer)
    filter_text = json.dumps({"entityId": entity})

    def finished(get: Any, request: Any) -> pb.Job:
        deadline = time.monotonic() + 60
        while True:
            job = get(request, metadata=metadata).job
            if job.state == pb.JOB_STATE_FINISHED:
                return job
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.05)

    job = jobs_stub.SubmitAcknowledgeEventsJob(
        pb.SubmitAcknowledgeEventsJobRequest(filter=filter_text), metadata=metadata
    ).job
    assert job.state == pb.JOB_STATE_ACCEPTED
    done = finished(jobs_stub.GetAcknowledgeEventsJob, pb.GetAcknowledgeEventsJobRequest(id=job.id))
    assert (done.changed_count, done.done, done.total) == (3, 3, 3)

    job = jobs_stub.SubmitClearEventsJob(
        pb.SubmitClearEventsJobRequest(filter=filter_text), metadata=metadata
    ).job
    done = finished(jobs_stub.GetClearEventsJob, pb.GetClearEventsJobRequest(id=job.id))
    assert done.changed_count == 3
    stored = events_of(service, keys.read, entity)
    assert {stored[a["id"]]["status"] for a in alarms} == {"CLEARED"}

    with pytest.raises(grpc.RpcError) as bad:
        jobs_stub.SubmitClearEventsJob(
            pb.SubmitClearEventsJobRequest(filter="{"), metadata=metadata
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as denied:
        jobs_stub.SubmitClearEventsJob(
            pb.SubmitClearEventsJobRequest(filter="{}"), metadata=auth(keys.read)
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def durable_service(tmp_path: Path) -> Iterator[Service]:
    """Small chunks and a short lease, so that a job is caught mid-way and resumes quickly."""
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


def test_a_clear_job_killed_mid_way_clears_each_alarm_once_after_restart(
    durable_service: Service,
) -> None:
    import sqlite3

    key = durable_service.create_key("durable-alarms", "ReadWrite")
    total = 3000
    created, _ = submit(
        durable_service,
        "createEventsJobs",
        {
            "events": [
                {
                    "entityId": "pump",
                    "classification": "ALARM",
                    "description": str(n),
                    "code": str(10_000 + n),
                }
                for n in range(total)
            ]
        },
        key,
    )
    wait_for_job(durable_service, created, key, timeout=120)
    path, _ = submit(durable_service, "clearEventsJobs", {"filter": {"entityId": "pump"}}, key)
    progress: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = durable_service.request("GET", path, key=key).json()
        if progress["progress"]["done"] > 0:
            break
    durable_service.stop(signal.SIGKILL)
    assert progress["state"] == "IN_PROGRESS"
    assert 0 < progress["progress"]["done"] < total == progress["progress"]["total"]

    durable_service.start()
    status = wait_for_job(durable_service, path, key, timeout=120)
    assert status["progress"] == {"done": total, "total": total}
    database = durable_service.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        statuses = connection.execute(
            "SELECT status, COUNT(*) FROM events WHERE tenant_id = 'durable-alarms' "
            "AND classification = 'ALARM' GROUP BY status"
        ).fetchall()
        transitions = connection.execute(
            "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM event_transitions "
            "WHERE tenant_id = 'durable-alarms' AND kind = 'CLEARED'"
        ).fetchone()
    connection.close()
    assert statuses == [("CLEARED", total)]
    assert transitions == (total, total)


def test_clear_jobs_racing_on_two_replicas_clear_each_alarm_once(
    replicas: Callable[..., Replicas],
) -> None:
    from persistence.store import Store

    running = replicas({"EVENTMGMT_JOB_CHUNK": "20", "EVENTMGMT_JOB_POLL_S": "0.1"})
    key = running.create_key("racing-alarms", "ReadWrite")
    metadata = auth(key)
    stubs = [event_job_service_pb2_grpc.EventJobServiceStub(c) for c in running.channels]
    created = (
        stubs[0]
        .SubmitCreateEventsJob(
            pb.SubmitCreateEventsJobRequest(
                events=[
                    event_pb2.Event(
                        entity_id="pump",
                        description=str(n),
                        code=str(10_000 + n),
                        classification=event_pb2.CLASSIFICATION_ALARM,
                    )
                    for n in range(300)
                ]
            ),
            metadata=metadata,
        )
        .job
    )

    def finished(get: Any, request: Any) -> pb.Job:
        deadline = time.monotonic() + 120
        while True:
            job = get(request, metadata=metadata).job
            if job.state == pb.JOB_STATE_FINISHED:
                return job
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)

    finished(stubs[0].GetCreateEventsJob, pb.GetCreateEventsJobRequest(id=created.id))
    # Two clear jobs over the same alarms, one through each process.
    jobs = [
        stub.SubmitClearEventsJob(
            pb.SubmitClearEventsJobRequest(filter='{"entityId": "pump"}'), metadata=metadata
        ).job
        for stub in stubs
    ]
    done = [
        finished(stubs[n].GetClearEventsJob, pb.GetClearEventsJobRequest(id=job.id))
        for n, job in enumerate(jobs)
    ]
    assert sum(job.changed_count for job in done) == 300

    store = Store(running.database_url)
    try:
        counted = store.run_sync(
            lambda db: db.execute_sql(
                "SELECT COUNT(*), COUNT(DISTINCT event_id), COUNT(DISTINCT seq) "
                f"FROM event_transitions WHERE tenant_id = {db.param}",
                ("racing-alarms",),
            ).fetchone()
        )
        statuses = store.run_sync(
            lambda db: db.execute_sql(
                f"SELECT status, COUNT(*) FROM events WHERE tenant_id = {db.param} "
                "AND classification = 'ALARM' GROUP BY status",
                ("racing-alarms",),
            ).fetchall()
        )
    finally:
        store.close()
    assert tuple(counted) == (300, 300, 300)
    assert [tuple(s) for s in statuses] == [("CLEARED", 300)]
