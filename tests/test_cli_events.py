"""`eventmgmt events` against the real server on both backends: every command, the list
filters, JSON and table output, import with its report and its resume after `kill -9`,
export to NDJSON and CSV, `tail` resuming across a server restart, and shell completion."""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from helpers import EVENTMGMT, Keys, Service, auth
from service.cli import main
from service.v1 import event_service_pb2, event_service_pb2_grpc

pytestmark = pytest.mark.integration
WAIT = 30.0  # a bound for things to arrive, never a timing assertion


@pytest.fixture
def cli(service: Service, keys: Keys, capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> Any:
    """Runs `eventmgmt events ...` in this process against the running server; returns the
    exit code, stdout and stderr. Tables are as wide as on a wide terminal."""
    monkeypatch.setenv("COLUMNS", "160")

    def run(*args: str, key: str | None = None) -> tuple[int, str, str]:
        action, *rest = args
        code = main(
            [
                "events",
                action,
                "--server",
                service.grpc_target,
                "--api-key",
                key or keys.writer,
                *rest,
            ]
        )
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def count(service: Service, key: str, entity_id: str) -> int:
    """How many events of an entity are stored, asked over plain gRPC."""
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        page = stub.ListEvents(
            event_service_pb2.ListEventsRequest(entity_id=entity_id, history=True, page_size=1),
            metadata=auth(key),
        )
        return int(page.total_size)


def test_create_get_and_ack_with_flags_named_after_json_fields(cli: Any) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    code, out, _ = cli(
        "create",
        "--json",
        "--description",
        "pump overheating",
        "--severity",
        "high",
        "--entity-id",
        entity,
        "--entity-type",
        "Device",
        "--domain",
        "/root/sub1",
        "--code",
        "10042",
        "--source",
        '{"thingName": "pump", "rule": "temp"}',
        "--acknowledgement-required",
        "--payload",
        '{"contentType": "application/json", "data": {"celsius": 93}}',
    )
    assert code == 0
    (created,) = ndjson(out)
    assert created["entityId"] == entity
    assert created["severity"] == 2
    assert created["code"] == "10042"
    assert created["source"] == {"thingName": "pump", "rule": "temp"}
    assert created["payload"]["data"] == {"celsius": 93}
    assert created["acknowledgementRequired"] is True
    assert created["acknowledged"] is False

    code, out, _ = cli("get", created["id"], "--json")
    assert code == 0
    assert ndjson(out)[0] == created

    # For people: a table of the fields, with severities by name.
    code, out, _ = cli("get", created["id"])
    assert code == 0
    assert "pump overheating" in out
    assert "HIGH" in out

    code, out, _ = cli("ack", created["id"], "--json")
    assert code == 0
    (acked,) = ndjson(out)
    assert acked["acknowledged"] is True
    assert acked["acknowledgedBy"] == "test-key"
    assert acked["etag"] == created["etag"] + 1


def test_bad_input_names_the_field_and_changes_nothing(
    cli: Any, service: Service, keys: Keys
) -> None:
    entity = f"bad-{uuid.uuid4().hex[:8]}"
    code, _, err = cli("create", "--entity-id", entity, "--severity", "loud")
    assert code == 2
    assert "severity" in err and "loud" in err
    code, _, err = cli("create", "--entity-id", entity, "--field", "color=red")
    assert code == 2
    assert "INVALID_ARGUMENT" in err and "color" in err
    code, _, err = cli("create", "--entity-id", entity, "--timestamp", "yesterday")
    assert code == 2
    assert "timestamp" in err
    assert count(service, keys.writer, entity) == 0
    code, _, err = cli("get", str(uuid.uuid4()))
    assert code == 2
    assert "NOT_FOUND" in err
    code, _, err = cli("create", "--entity-id", entity, key=keys.read)
    assert code == 2
    assert "PERMISSION_DENIED" in err


def test_list_filters_pages_and_table(cli: Any) -> None:
    entity = f"list-{uuid.uuid4().hex[:8]}"
    for severity, description in ((1, "engine fire"), (3, "oil low"), (5, "door ajar")):
        code, _, _ = cli(
            "create",
            "--entity-id",
            entity,
            "--entity-type",
            "Device",
            "--severity",
            str(severity),
            "--description",
            description,
        )
        assert code == 0

    code, out, _ = cli("list", "--json", "--entity-id", entity)
    assert code == 0
    assert [d["description"] for d in ndjson(out)] == ["door ajar", "oil low", "engine fire"]

    code, out, _ = cli(
        "list", "--json", "--entity-id", entity, "--severity", "critical", "--severity", "3"
    )
    assert sorted(d["severity"] for d in ndjson(out)) == [1, 3]

    code, out, _ = cli(
        "list",
        "--json",
        "--filter",
        json.dumps({"entityId": entity, "description": {"like": "oil*"}}),
    )
    assert [d["description"] for d in ndjson(out)] == ["oil low"]

    code, out, _ = cli("list", "--json", "--entity-id", entity, "--order-by", "severity")
    assert [d["severity"] for d in ndjson(out)] == [1, 3, 5]

    # One page, then the cursor it names, then every page at once.
    code, out, err = cli("list", "--json", "--entity-id", entity, "--page-size", "1")
    assert len(ndjson(out)) == 1
    code, out, err = cli("list", "--entity-id", entity, "--page-size", "1")
    token = err.split("--page-token ")[1].split()[0]
    code, out, _ = cli(
        "list", "--json", "--entity-id", entity, "--page-size", "1", "--page-token", token
    )
    assert [d["description"] for d in ndjson(out)] == ["oil low"]
    code, out, _ = cli("list", "--json", "--entity-id", entity, "--page-size", "1", "--all")
    assert len(ndjson(out)) == 3

    code, out, err = cli("list", "--entity-id", entity)
    assert code == 0
    assert "engine" in out and "CRITICAL" in out and "TRIVIAL" in out
    assert "3 shown of 3 matching" in err

    code, _, err = cli("list", "--filter", '{"severity": {"nope": 1}}')
    assert code == 2
    assert "INVALID_ARGUMENT" in err


def test_find_with_the_query_dsl(cli: Any, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:10]
    for text in (f"valve {marker} stuck", f"valve {marker} open", "unrelated"):
        assert cli("create", "--entity-id", f"find-{marker}", "--description", text)[0] == 0
    query = {"query": {"match": {"message": marker}}, "sort": [{"message.lowercase": "asc"}]}
    code, out, _ = cli("find", json.dumps(query), "--json")
    assert code == 0
    (answer,) = ndjson(out)
    assert [h["_source"]["message"] for h in answer["hits"]["hits"]] == [
        f"valve {marker} open",
        f"valve {marker} stuck",
    ]
    path = tmp_path / "query.json"
    path.write_text(json.dumps(query))
    code, out, err = cli("find", f"@{path}")
    assert code == 0
    assert f"valve {marker} open" in out
    assert "2 shown of 2 matching" in err
    code, _, err = cli("find", "{}")
    assert code == 2
    assert "INVALID_ARGUMENT" in err or "query" in err


def _write_ndjson(path: Path, documents: list[Any]) -> None:
    path.write_text("".join(json.dumps(d) + "\n" for d in documents))


def test_import_reports_refused_lines_and_never_stores_twice(
    cli: Any, service: Service, keys: Keys, tmp_path: Path
) -> None:
    entity = f"imp-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "events.ndjson"
    good = [{"entityId": entity, "description": f"reading {i}", "severity": 3} for i in range(7)]
    path.write_text(
        json.dumps(good[0])
        + "\n"
        + "{not json\n"
        + "\n"
        + json.dumps({"entityId": entity, "severity": "high"})
        + "\n"
        + json.dumps({"entityId": entity, "colour": "red"})
        + "\n"
        + "".join(json.dumps(d) + "\n" for d in good[1:])
    )
    code, out, err = cli("import", str(path), "--batch-size", "3", "--json")
    assert code == 1  # some lines were refused
    (summary,) = ndjson(out)
    assert summary == {
        "stored": 7,
        "duplicates": 0,
        "refused": 3,
        "report": str(tmp_path / "events.ndjson.rejected.ndjson"),
    }
    assert count(service, keys.writer, entity) == 7
    report = ndjson((tmp_path / "events.ndjson.rejected.ndjson").read_text())
    assert [r["line"] for r in report] == [2, 4, 5]
    assert report[0]["error"]["reason"] == "MALFORMED_JSON"
    assert report[1]["error"]["fieldViolations"] == [
        {"field": "severity", "description": "must be an integer"}
    ]
    # The server's own refusal, with its reason and the field it names.
    assert report[2]["error"]["code"] == "INVALID_ARGUMENT"
    assert "colour" in report[2]["error"]["fieldViolations"][0]["field"]
    assert report[2]["input"] == json.dumps({"entityId": entity, "colour": "red"})

    # Run again: everything was answered, nothing is sent.
    code, out, err = cli("import", str(path))
    assert "nothing to import" in err
    # Sent again from the start: the idempotency keys make every line a duplicate.
    code, out, err = cli("import", str(path), "--restart", "--json")
    assert ndjson(out)[0]["stored"] == 0
    assert ndjson(out)[0]["duplicates"] == 7
    assert count(service, keys.writer, entity) == 7
    # The report is written anew on a restart, not appended to.
    assert len(ndjson((tmp_path / "events.ndjson.rejected.ndjson").read_text())) == 3


def test_import_csv(cli: Any, service: Service, keys: Keys, tmp_path: Path) -> None:
    entity = f"csv-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "events.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "entityId",
                "severity",
                "description",
                "acknowledgementRequired",
                "timestamp",
                "source",
            ]
        )
        writer.writerow(
            [
                entity,
                "critical",
                "line, with a comma",
                "true",
                "2026-11-30T10:00:00Z",
                '{"thingName": "t1"}',
            ]
        )
        writer.writerow([entity, "4", "plain", "", "1764496800000", "edge-7"])
        writer.writerow([entity, "sometimes", "bad severity", "", "", ""])
    code, out, _ = cli("import", str(path), "--json")
    assert code == 1
    assert ndjson(out)[0]["stored"] == 2
    code, out, _ = cli(
        "list",
        "--json",
        "--entity-id",
        entity,
        "--order-by",
        "severity",
        "--start-time",
        "2025-01-01T00:00:00Z",
    )
    first, second = ndjson(out)
    assert first["severity"] == 1
    assert first["description"] == "line, with a comma"
    assert first["acknowledgementRequired"] is True
    assert first["timestamp"] == "2026-11-30T10:00:00.000Z"
    assert first["source"] == {"thingName": "t1"}
    assert second["source"] == "edge-7"
    assert second["timestamp"] == "2025-11-30T10:00:00.000Z"
    report = ndjson((tmp_path / "events.csv.rejected.ndjson").read_text())
    assert [r["line"] for r in report] == [4]
    assert "severity" in report[0]["error"]["fieldViolations"][0]["field"]


def test_import_killed_midway_resumes_and_stores_each_line_once(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    entity = f"kill-{uuid.uuid4().hex[:8]}"
    total = 6000
    path = tmp_path / "big.ndjson"
    _write_ndjson(path, [{"entityId": entity, "description": f"n{i}"} for i in range(total)])
    state = tmp_path / "big.ndjson.import-state"
    argv = [
        *EVENTMGMT,
        "events",
        "import",
        str(path),
        "--batch-size",
        "20",
        "--server",
        service.grpc_target,
        "--api-key",
        keys.writer,
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = json.loads(state.read_text())["done"]
        except (FileNotFoundError, ValueError):
            done = 0
        if done >= 500:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait(timeout=WAIT)
    assert process.returncode == -signal.SIGKILL, "the import ended before it could be killed"
    interrupted = json.loads(state.read_text())["done"]
    assert 500 <= interrupted < total
    stored_before = count(service, keys.writer, entity)
    assert interrupted <= stored_before < total

    done_again = subprocess.run(
        [*argv, "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done_again.returncode == 0, done_again.stderr
    assert "resuming after record" in done_again.stderr
    summary = json.loads(done_again.stdout)
    assert summary["refused"] == 0
    # Batches answered before the kill are not sent again; the ones in flight come back as
    # duplicates of what the server had already stored.
    assert summary["stored"] + summary["duplicates"] == total
    # (The server may still have been storing the batches in flight when it was counted.)
    assert stored_before - interrupted <= summary["duplicates"] < total - interrupted
    assert count(service, keys.writer, entity) == total


def test_export_ndjson_and_csv_then_import_elsewhere(
    cli: Any, keys: Keys, service: Service, tmp_path: Path
) -> None:
    entity = f"exp-{uuid.uuid4().hex[:8]}"
    for i in range(5):
        assert (
            cli(
                "create",
                "--entity-id",
                entity,
                "--description",
                f"e{i}",
                "--severity",
                str(i + 1),
                "--source",
                '{"k": ["a", "b"]}',
            )[0]
            == 0
        )
    target = tmp_path / "out.ndjson"
    code, _, err = cli("export", "--entity-id", entity, "--page-size", "2", "-o", str(target))
    assert code == 0
    assert "exported 5 events" in err
    exported = ndjson(target.read_text())
    assert sorted(d["description"] for d in exported) == [f"e{i}" for i in range(5)]
    assert all(d["source"] == {"k": ["a", "b"]} for d in exported)

    csv_target = tmp_path / "out.csv"
    code, _, _ = cli("export", "--entity-id", entity, "--severity", "1", "-o", str(csv_target))
    with csv_target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    assert rows[0]["description"] == "e0"
    assert rows[0]["source"] == '{"k": ["a", "b"]}'
    assert rows[0]["acknowledged"] == "false"

    # An export loads into another tenant: output-only fields are left to the new server.
    code, out, _ = cli("import", str(target), "--json", key=keys.other_tenant)
    assert code == 0
    assert ndjson(out)[0]["stored"] == 5
    assert count(service, keys.other_tenant, entity) == 5
    code, out, _ = cli("import", str(csv_target), "--json", key=keys.other_tenant)
    assert ndjson(out)[0]["stored"] == 1


def test_api_key_from_the_dev_key_file(service: Service, keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "dev-api-key").write_text(keys.read + "\n")
    env = {k: v for k, v in os.environ.items() if k != "EVENTMGMT_API_KEY"}

    def listing(data_dir: Path) -> subprocess.CompletedProcess[str]:
        argv = [*EVENTMGMT, "events", "list", "--json", "--data-dir", str(data_dir)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)

    env["EVENTMGMT_GRPC_ADDRESS"] = service.grpc_target  # the server from the environment
    run = listing(tmp_path)
    assert run.returncode == 0, run.stderr
    env["EVENTMGMT_API_KEY"] = keys.read
    run = listing(tmp_path / "none")
    assert run.returncode == 0, run.stderr
    del env["EVENTMGMT_API_KEY"]
    run = listing(tmp_path / "none")
    assert run.returncode == 2
    assert "no API key" in run.stderr and "dev-api-key" in run.stderr


def test_shell_completion(tmp_path: Path) -> None:
    script = subprocess.run(
        [*EVENTMGMT, "completion", "bash"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "complete" in script and "eventmgmt" in script
    answers = tmp_path / "answers"
    line = "eventmgmt events ta"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answers),
    }
    subprocess.run([*EVENTMGMT], env=env, timeout=60, check=False, capture_output=True)
    assert answers.read_text().split() == ["tail"]
    line = "eventmgmt events list --entity"
    env.update(COMP_LINE=line, COMP_POINT=str(len(line)))
    subprocess.run([*EVENTMGMT], env=env, timeout=60, check=False, capture_output=True)
    assert sorted(answers.read_text().replace("\x0b", " ").split()) == [
        "--entity-id",
        "--entity-type",
    ]


class Lines:
    """A child process's stdout lines, read by a thread so that reads can be bounded."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.process = process
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def error(self) -> str:
        return self.process.stderr.read() if self.process.stderr else ""

    def take(self, n: int) -> list[str]:
        taken = []
        for _ in range(n):
            line = self.queue.get(timeout=WAIT)
            assert line is not None, f"output ended after {len(taken)} lines: {self.error()}"
            taken.append(line)
        return taken


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Service]:
    running = Service(f"sqlite:///{tmp_path / 'events.db'}", tmp_path, gateway=False)
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()


def _create(service: Service, key: str, entity: str, description: str) -> str:
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        event = stub.CreateEvent(
            event_service_pb2.CreateEventRequest(
                event={"entity_id": entity, "description": description}  # type: ignore[arg-type]
            ),
            metadata=auth(key),
        ).event
        return str(event.id)


def test_tail_resumes_from_its_cursor_after_the_server_restarts(
    restartable: Service, tmp_path: Path
) -> None:
    key = restartable.create_key("acme", "ReadWrite")
    entity = "tailed"
    ids = [_create(restartable, key, entity, "before the tail")]
    _create(restartable, key, "other", "another entity: filtered out")
    cursor_file = tmp_path / "cursor"
    with subprocess.Popen(
        # Cursor 0 is the start of the feed: the test need not race the subscription.
        [
            *EVENTMGMT,
            "events",
            "tail",
            "--json",
            "--count",
            "4",
            "--entity-id",
            entity,
            "--cursor",
            "0",
            "--cursor-file",
            str(cursor_file),
            "--server",
            restartable.grpc_target,
            "--api-key",
            key,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as tail:
        lines = Lines(tail)
        try:
            seen = [json.loads(line)["id"] for line in lines.take(1)]
            ids.append(_create(restartable, key, entity, "live"))
            seen += [json.loads(line)["id"] for line in lines.take(1)]

            restartable.stop()
            restartable.start()
            # Committed while the tail is still reconnecting: its cursor brings them all.
            ids.append(_create(restartable, key, entity, "after the restart"))
            ids.append(_create(restartable, key, entity, "after the restart, second"))
            seen += [json.loads(line)["id"] for line in lines.take(2)]
            tail.wait(timeout=WAIT)
            assert tail.returncode == 0
            assert seen == ids
            assert tail.stderr is not None
            assert "resuming from cursor" in tail.stderr.read()
            assert cursor_file.read_text().strip().isdigit()
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()
