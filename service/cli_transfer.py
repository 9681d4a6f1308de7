"""`eventmgmt events import` and `export`: files of events in and out.

Import streams NDJSON or CSV through IngestEvents. Every record's idempotency key is derived
from the file's name, its line and its text, so sending a line again never stores it twice;
after each answered batch a state file records how far the file got, and running the same
import again resumes there. Refused lines go to a report file with their errors."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import queue
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import grpc
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from service import rest_json
from service.cli_events import (
    OUTPUT_ONLY_JSON_NAMES,
    Client,
    CliError,
    Output,
    add_list_filters,
    document,
    event_message,
    field_value,
    list_request,
    pages,
    status_document,
)
from service.domain.errors import DomainError, InvalidInput, invalid
from service.v1 import event_pb2
from service.v1 import event_stream_service_pb2 as stream_pb

MAX_BATCH = 1000  # IngestEvents' limit per request
_KEY_NAME_CHARS = 64
# The columns of a CSV export: the event's JSON fields in the order of its REST JSON.
EXPORT_COLUMNS = (
    "id",
    "typeId",
    "correlationId",
    "timestamp",
    "entityType",
    "entityId",
    "domain",
    "severity",
    "code",
    "description",
    "source",
    "classification",
    "category",
    "acknowledgementRequired",
    "acknowledged",
    "acknowledgedAt",
    "acknowledgedBy",
    "status",
    "clearedAt",
    "clearedBy",
    "appId",
    "payload",
    "etag",
    "createTime",
    "updateTime",
)


@dataclass
class Record:
    """One event of an import file: where it is, its text, its key, and the message to send,
    or why it cannot be sent."""

    line: int
    text: str
    key: str
    event: event_pb2.Event | None = None
    error: dict[str, Any] | None = None


def idempotency_key(path: Path, line: int, text: str) -> str:
    """The file's name and line, plus a digest of the line, so an edited line is a new event."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{path.name[:_KEY_NAME_CHARS]}:{line}:{digest}"


def _local_error(error: DomainError) -> dict[str, Any]:
    doc: dict[str, Any] = {"code": "INVALID_ARGUMENT", "reason": error.reason}
    doc["message"] = error.message
    if isinstance(error, InvalidInput):
        doc["fieldViolations"] = [
            {"field": v.field, "description": v.rule} for v in error.violations
        ]
    return doc


def _record(path: Path, line: int, text: str, parsed: Any) -> Record:
    record = Record(line, text, idempotency_key(path, line, text))
    try:
        if not isinstance(parsed, dict):
            raise invalid("line", "must be a JSON object")
        body = {k: v for k, v in parsed.items() if k not in OUTPUT_ONLY_JSON_NAMES}
        record.event = event_message(body)
    except DomainError as error:
        record.error = _local_error(error)
    return record


def _ndjson_records(path: Path, handle: TextIO) -> Iterator[Record]:
    for number, raw in enumerate(handle, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            parsed = rest_json.loads(text.encode(), f"line {number}")
        except DomainError as error:
            yield Record(
                number, text, idempotency_key(path, number, text), error=_local_error(error)
            )
            continue
        yield _record(path, number, text, parsed)


def _csv_records(path: Path, handle: TextIO) -> Iterator[Record]:
    reader = csv.DictReader(handle)
    for row in reader:
        line = reader.line_num
        text = json.dumps(row, ensure_ascii=False)
        if None in row:
            yield Record(
                line,
                text,
                idempotency_key(path, line, text),
                error={"code": "INVALID_ARGUMENT", "message": "more cells than header columns"},
            )
            continue
        try:
            parsed = {k: field_value(k, v) for k, v in row.items() if v not in ("", None)}
        except DomainError as error:
            yield Record(line, text, idempotency_key(path, line, text), error=_local_error(error))
            continue
        yield _record(path, line, text, parsed)


def read_records(path: Path, file_format: str, handle: TextIO) -> Iterator[Record]:
    return (_csv_records if file_format == "csv" else _ndjson_records)(path, handle)


def _format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    return "csv" if path.suffix.lower() == ".csv" else "ndjson"


@dataclass
class ImportState:
    """How far an import got: records answered, the key of the last one (to notice a changed
    file), the report's size then, and the counts so far."""

    done: int = 0
    last_key: str = ""
    report_bytes: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ImportState | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return cls(
            done=int(doc.get("done", 0)),
            last_key=str(doc.get("lastKey", "")),
            report_bytes=int(doc.get("reportBytes", 0)),
            stored=int(doc.get("stored", 0)),
            duplicates=int(doc.get("duplicates", 0)),
            refused=int(doc.get("refused", 0)),
        )

    def save(self, path: Path) -> None:
        doc = {
            "done": self.done,
            "lastKey": self.last_key,
            "reportBytes": self.report_bytes,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "refused": self.refused,
        }
        # Written whole, then renamed: a kill mid-write leaves the previous state.
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(doc) + "\n", encoding="utf-8")
        temporary.replace(path)


def _progress(out: Output) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=out.errors,
        transient=False,
    )


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def _resume_point(
    args: argparse.Namespace, path: Path, state_path: Path, out: Output
) -> ImportState:
    state = None if args.restart else ImportState.load(state_path)
    if state is None or state.done == 0:
        return ImportState()
    with path.open(encoding="utf-8", newline="") as handle:
        at = next(
            islice(read_records(path, _format_of(path, args.format), handle), state.done - 1, None),
            None,
        )
    if at is None or at.key != state.last_key:
        out.note(f"{path} changed since the last run: importing it from the start")
        return ImportState()
    out.note(f"resuming after record {state.done} (line {at.line}); --restart sends all again")
    return state


def _import(client: Client, args: argparse.Namespace, out: Output) -> int:
    path = Path(args.file)
    file_format = _format_of(path, args.format)
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise CliError(f"--batch-size must be 1 to {MAX_BATCH}")
    state_path = Path(args.state) if args.state else path.with_name(path.name + ".import-state")
    report_path = (
        Path(args.report) if args.report else path.with_name(path.name + ".rejected.ndjson")
    )
    state = _resume_point(args, path, state_path, out)
    with path.open(encoding="utf-8", newline="") as handle:
        total = sum(1 for _ in read_records(path, file_format, handle))
    if state.done >= total:
        out.note(f"nothing to import: all {total} records of {path} were answered already")
        return 1 if state.refused else 0

    report = report_path.open("a+b" if state.done else "wb")
    report.truncate(state.report_bytes if state.done else 0)
    report.seek(0, 2)
    sent: queue.SimpleQueue[list[Record]] = queue.SimpleQueue()

    def requests(records: Iterable[Record]) -> Iterator[stream_pb.IngestEventsRequest]:
        for batch in _batches(records, args.batch_size):
            sent.put(batch)
            items = [
                stream_pb.IngestItem(idempotency_key=r.key, event=r.event)
                for r in batch
                if r.event is not None
            ]
            yield stream_pb.IngestEventsRequest(items=items)

    def refuse(record: Record, error: dict[str, Any]) -> None:
        line = {"line": record.line, "input": record.text, "error": error}
        report.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        state.refused += 1

    with (
        path.open(encoding="utf-8", newline="") as handle,
        report,
        _progress(out) as progress,
    ):
        task = progress.add_task(f"import {path.name}", total=total, completed=state.done)
        records = islice(read_records(path, file_format, handle), state.done, None)
        answers = client.stream.IngestEvents(requests(records), metadata=client.metadata)
        try:
            for answer in answers:
                batch = sent.get()
                results = iter(answer.results)
                for record in batch:
                    if record.event is None:
                        assert record.error is not None
                        refuse(record, record.error)
                        continue
                    result = next(results)
                    if result.HasField("error"):
                        refuse(record, status_document(result.error))
                    elif result.duplicate:
                        state.duplicates += 1
                    else:
                        state.stored += 1
                report.flush()
                state.done += len(batch)
                state.last_key = batch[-1].key
                state.report_bytes = report.tell()
                state.save(state_path)
                progress.update(task, completed=state.done)
        except (grpc.RpcError, KeyboardInterrupt):
            answers.cancel()
            out.note(f"stopped after {state.done} of {total} records; run again to resume")
            raise
    out.note(
        f"{path.name}: {state.stored} stored, {state.duplicates} already stored, "
        f"{state.refused} refused" + (f" (see {report_path})" if state.refused else "")
    )
    if out.as_json:
        out.json(
            {
                "stored": state.stored,
                "duplicates": state.duplicates,
                "refused": state.refused,
                "report": str(report_path),
            }
        )
    return 1 if state.refused else 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _export(client: Client, args: argparse.Namespace, out: Output) -> int:
    request = list_request(args)
    file_format = args.format or (
        "csv" if args.output and args.output.lower().endswith(".csv") else "ndjson"
    )
    columns = tuple(args.columns.split(",")) if args.columns else EXPORT_COLUMNS
    target = (
        sys.stdout
        if args.output in (None, "-")
        else open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
    )
    writer = csv.DictWriter(target, fieldnames=columns, extrasaction="ignore")
    if file_format == "csv":
        writer.writeheader()
    count = 0
    try:
        with _progress(out) as progress:
            task = progress.add_task("export", total=None)
            for page in pages(client, request):
                progress.update(task, total=page.total_size)
                for event in page.events:
                    doc = document(event)
                    if file_format == "csv":
                        writer.writerow({name: _cell(doc.get(name)) for name in columns})
                    else:
                        target.write(json.dumps(doc, ensure_ascii=False) + "\n")
                    count += 1
                progress.update(task, completed=count)
    finally:
        if target is not sys.stdout:
            target.close()
    out.note(f"exported {count} events" + (f" to {args.output}" if args.output else ""))
    return 0


def add_parsers(actions: Any, common: argparse.ArgumentParser) -> None:
    load = actions.add_parser(
        "import",
        parents=[common],
        help="store the events of an NDJSON or CSV file; resumes where it stopped",
    )
    load.add_argument("file")
    load.add_argument("--format", choices=["ndjson", "csv"], help="by the file's suffix when unset")
    load.add_argument(
        "--batch-size", type=int, default=500, help=f"events per batch, 1 to {MAX_BATCH}"
    )
    load.add_argument("--report", help="refused lines with their errors (FILE.rejected.ndjson)")
    load.add_argument("--state", help="where progress is kept (FILE.import-state)")
    load.add_argument("--restart", action="store_true", help="ignore the saved progress")
    load.set_defaults(run=_import)

    dump = actions.add_parser(
        "export", parents=[common], help="write the events of a list filter to NDJSON or CSV"
    )
    add_list_filters(dump)
    dump.add_argument("--page-size", type=int, default=1000, help="events per call, 1 to 1000")
    dump.add_argument("--output", "-o", help="the file to write; stdout when unset or -")
    dump.add_argument("--format", choices=["ndjson", "csv"], help="by --output's suffix when unset")
    dump.add_argument(
        "--columns", help=f"CSV columns, comma-separated ({','.join(EXPORT_COLUMNS)})"
    )
    dump.set_defaults(run=_export)
