"""What operators see: Prometheus metrics on `serve --metrics-port`, one structured log line
per request with its request id, the id returned to REST and gRPC clients, and no secret in
any log line. Against the real server and Envoy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from helpers import EVENTMGMT, Keys, Service, auth, metric_value, scrape
from service.v1 import event_service_pb2, event_service_pb2_grpc

pytestmark = pytest.mark.integration

CREATE = "/eventmgmt.v1.EventRestService/RestCreateEvent"
GET = "/eventmgmt.v1.EventRestService/RestGetEvent"


def log_lines(service: Service) -> list[dict[str, Any]]:
    lines = []
    for line in (service.data_dir / "serve.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def request_line(service: Service, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in log_lines(service):
            if line.get("request_id") == request_id and "rpc" in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no request log line for {request_id}: {service.log_tail()}")


def test_a_scrape_counts_the_calls_just_made(service: Service, keys: Keys) -> None:
    before = scrape(service)
    for n in range(3):
        created = service.request(
            "POST", "/events", {"description": f"m{n}", "entityId": "e-1"}, key=keys.writer
        )
        assert created.status == 201, created.body
    assert service.request("GET", "/events/not-a-uuid", key=keys.read).status == 400
    after = scrape(service)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("eventmgmt_rpc_requests_total", rpc=CREATE, code="OK") == 3
    assert delta("eventmgmt_rpc_requests_total", rpc=GET, code="INVALID_ARGUMENT") == 1
    assert delta("eventmgmt_rpc_duration_seconds_count", rpc=CREATE) == 3
    assert delta("eventmgmt_rpc_duration_seconds_bucket", rpc=CREATE, le="+Inf") == 3
    # Each create committed in some batch: at least one batch, at least three writes.
    assert delta("eventmgmt_write_batch_size_count") >= 1
    assert delta("eventmgmt_write_batch_size_sum") >= 3
    assert delta("eventmgmt_write_commit_seconds_count") >= 1
    for gauge in ("eventmgmt_live_subscribers", "eventmgmt_mqtt_queue_events"):
        assert gauge in after


def test_the_scrape_shows_live_subscribers_and_jobs(service: Service, keys: Keys) -> None:
    with urllib.request.urlopen(
        urllib.request.Request(
            f"{service.rest_url}/liveEvents?heartbeatSeconds=1",
            headers={"x-api-key": keys.read},
        ),
        timeout=30,
    ) as stream:
        assert stream.readline().startswith(b"id: ")
        job = service.request(
            "POST", "/createEventsJobs", {"events": [{"description": "j"}]}, key=keys.writer
        )
        assert job.status == 201
        deadline = time.monotonic() + 10
        while metric_value(scrape(service), "eventmgmt_live_subscribers") < 1:
            assert time.monotonic() < deadline, "the open subscription was never counted"
            time.sleep(0.2)
        assert "eventmgmt_live_subscriber_lag_events" in scrape(service)
    deadline = time.monotonic() + 10
    while metric_value(scrape(service), "eventmgmt_live_subscribers") != 0:
        assert time.monotonic() < deadline, "the closed subscription is still counted"
        time.sleep(0.2)


def test_one_scrape_adds_up_every_server_process(service: Service) -> None:
    """Several workers write into one multiprocess directory; here a second process stands
    in for a worker and its counts appear in the running server's scrape."""
    worker_rpc = f"/test.Worker{uuid.uuid4().hex[:8]}/Call"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from service import metrics\n"
            f"metrics.observe_call({worker_rpc!r}, 'OK', 0.01)\n"
            f"metrics.observe_call({worker_rpc!r}, 'OK', 0.02)\n",
        ],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(service.data_dir / "metrics")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    samples = scrape(service)
    assert metric_value(samples, "eventmgmt_rpc_requests_total", rpc=worker_rpc, code="OK") == 2


def test_one_scrape_counts_the_calls_of_every_worker(tmp_path: Path) -> None:
    """`serve --workers 2`: Envoy spreads the calls over both workers, the parent serves the
    one metrics port, and its scrape holds every call."""
    workers = Service(
        f"sqlite:///{tmp_path / 'events.db'}", tmp_path, serve_args=("--workers", "2")
    )
    key = workers.create_key("acme", "ReadWrite")
    workers.start()
    try:
        for n in range(20):
            body = {"description": f"w{n}", "entityId": "e-1"}
            answer = workers.request("POST", "/events", body, key=key)
            assert answer.status == 201, answer.body
        samples = scrape(workers)
    finally:
        workers.stop()
    assert metric_value(samples, "eventmgmt_rpc_requests_total", rpc=CREATE, code="OK") == 20
    # Each process that served writes its own files: the parent's and both workers'.
    assert len(list((tmp_path / "metrics").glob("counter_*.db"))) >= 3


def test_every_request_is_one_json_log_line_with_its_request_id(
    service: Service, keys: Keys
) -> None:
    request_id = f"test-{uuid.uuid4()}"
    answer = service.request(
        "POST",
        "/events",
        {"description": "logged", "entityId": "e-1"},
        key=keys.writer,
        headers={"x-request-id": request_id},
    )
    assert answer.status == 201
    assert answer.headers["x-request-id"] == request_id

    line = request_line(service, request_id)
    assert line["rpc"] == CREATE
    assert line["status"] == "OK"
    assert line["http_status"] == 201
    assert line["tenant"] == "acme"
    assert re.fullmatch(r"[0-9a-f]{16}", line["key_id"]), line
    assert isinstance(line["duration_ms"], float)
    assert line["level"] == "INFO"
    assert "time" in line

    # Envoy makes an id when the client sends none, and returns it.
    unnamed = service.request("GET", "/events/not-a-uuid", key=keys.read)
    made = unnamed.headers["x-request-id"]
    assert request_line(service, made)["status"] == "INVALID_ARGUMENT"


def test_a_grpc_caller_gets_a_request_id_even_on_errors(service: Service, keys: Keys) -> None:
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        _, call = stub.ListEvents.with_call(
            event_service_pb2.ListEventsRequest(page_size=1), metadata=auth(keys.read)
        )
        # A unary answer carries it in its trailing metadata (no batch of its own).
        made = dict(call.trailing_metadata())["x-request-id"]
        assert uuid.UUID(made)
        assert request_line(service, made)["rpc"] == "/eventmgmt.v1.EventService/ListEvents"

        with pytest.raises(grpc.RpcError) as failure:
            stub.GetEvent(
                event_service_pb2.GetEventRequest(id=str(uuid.uuid4())),
                metadata=(*auth(keys.read), ("x-request-id", "grpc-given-1")),
            )
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert dict(failure.value.initial_metadata())["x-request-id"] == "grpc-given-1"
        assert request_line(service, "grpc-given-1")["status"] == "NOT_FOUND"


def test_no_secret_appears_in_any_log_line(service: Service, keys: Keys) -> None:
    # Calls with every key, with a wrong key, and with keys in both headers.
    for key in (keys.admin, keys.read, keys.writer, keys.sub1_writer, keys.other_tenant):
        service.request("GET", "/events?size=1", key=key)
        service.request("GET", "/events", headers={"Authorization": f"Bearer {key}"})
    wrong = f"wrong-{uuid.uuid4().hex}"
    assert service.request("GET", "/events", key=wrong).status == 401
    text = (service.data_dir / "serve.log").read_text(errors="replace")
    text += (service.data_dir / "gateway" / "envoy.log").read_text(errors="replace")
    dev_key = (service.data_dir / "dev-api-key").read_text().strip()
    for secret in (keys.admin, keys.read, keys.writer, keys.sub1_writer, keys.other_tenant):
        assert secret not in text
    assert dev_key not in text
    assert wrong not in text


def test_the_curl_lines_printed_at_start_work_as_pasted(service: Service) -> None:
    """A development `serve` (README: `make run`) prints curl lines to try; pasted into a
    shell, each one answers 2xx."""
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")
    log = (service.data_dir / "serve.log").read_text(errors="replace")
    printed = [line.strip() for line in log.splitlines() if line.strip().startswith("curl ")]
    assert len(printed) == 3, log
    for line in printed:
        done = subprocess.run(
            ["bash", "-c", f"{line} -o /dev/null -w '%{{http_code}}'"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.stdout.startswith("2"), (line, done.stdout, done.stderr)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_format_json_or_text(tmp_path: Path, log_format: str) -> None:
    done = subprocess.run(
        [
            *EVENTMGMT,
            "--log-format",
            log_format,
            "--database",
            f"sqlite:///{tmp_path / 'events.db'}",
            "migrate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "applied schema migration 1:" in line]
    assert len(lines) == 1, done.stderr
    if log_format == "json":
        record = json.loads(lines[0])
        assert record["logger"] == "persistence.migrations"
        assert record["level"] == "INFO"
    else:
        assert re.match(
            r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO persistence.migrations: ", lines[0]
        )
