"""`eventmgmt events`: the event API at a terminal. Talks gRPC to a running server; reads and
prints events in their REST JSON (the shape of `GET /events/{id}`), as coloured tables for
people or as JSON / NDJSON for scripts (`--json`)."""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from service import rest_json
from service.convert import event_from_proto, fields_to_proto
from service.domain import times
from service.domain.custom_fields import STANDARD_EVENT, STANDARD_EVENT_ALIAS
from service.domain.errors import DomainError, InvalidInput, invalid
from service.domain.event_fields import BY_ATTRIBUTE, FIELDS, SETTABLE
from service.v1 import (
    event_pb2,
    event_search_service_pb2,
    event_search_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    event_stream_service_pb2,
    event_stream_service_pb2_grpc,
)

DEFAULT_SERVER = "127.0.0.1:50051"
# The criticality names (docs/platform-events.md#criticality); other numbers as numbers.
SEVERITY_NAMES = {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 3, "LOW": 4, "TRIVIAL": 5}
_SEVERITY_STYLES = {1: "bold white on red", 2: "bold red", 3: "yellow", 4: "cyan", 5: "dim"}
# Fields a caller may set on create, by JSON name; `acknowledged` and `internal` are the
# server's to set.
SETTABLE_JSON_NAMES = tuple(BY_ATTRIBUTE[name].json for name in SETTABLE)
# Output-only fields of an event's JSON: an import drops them, so that an export loads anywhere
# (`internal` stays: the platform's own events are refused on import, by their rule).
OUTPUT_ONLY_JSON_NAMES = frozenset(
    {"_links", *(f.json for f in FIELDS if not f.settable and f.attribute != "internal")}
)
# Reconnection back-off of `tail`, in seconds.
_RETRY_FIRST_S, _RETRY_MAX_S = 0.5, 10.0
# Codes after which a subscription is resumed rather than given up: the server went away or
# restarted, or dropped a subscriber that fell behind.
_RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
    }
)


class CliError(Exception):
    """A failure to report in one line, without a traceback."""


def flag_name(json_name: str) -> str:
    """`entityId` -> `--entity-id`: flags are named after the event's JSON fields."""
    return "--" + "".join("-" + c.lower() if c.isupper() else c for c in json_name)


def _dest(json_name: str) -> str:
    return flag_name(json_name)[2:].replace("-", "_")


def parse_severity(text: str) -> int:
    name = text.strip().upper()
    if name in SEVERITY_NAMES:
        return SEVERITY_NAMES[name]
    try:
        return int(name)
    except ValueError:
        names = ", ".join(n.lower() for n in SEVERITY_NAMES)
        raise argparse.ArgumentTypeError(f"{text!r} is no severity: a number or {names}") from None


def _json_or_text(text: str) -> Any:
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def field_value(json_name: str, text: str) -> Any:
    """The JSON value of a field given as text (a flag or a CSV cell), by the field's type."""
    if json_name == "severity":
        try:
            return parse_severity(text)
        except argparse.ArgumentTypeError as error:
            raise invalid("severity", str(error)) from None
    if json_name == "acknowledgementRequired":
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise invalid(json_name, "must be true or false")
        return lowered in ("true", "1", "yes")
    if json_name == "timestamp":
        return int(text) if text.strip().isdigit() else text
    if json_name in ("source", "payload"):
        return _json_or_text(text)
    if json_name in SETTABLE_JSON_NAMES:
        return text
    # A custom field: its type is the event type's, so numbers and booleans stay JSON.
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) else text


def event_message(document: Any) -> event_pb2.Event:
    """The gRPC message for an event's REST JSON, checked as strictly as `POST /events`."""
    fields, _ = rest_json.parse_event_document(document)
    return fields_to_proto(fields)


@dataclass
class Client:
    """A channel to the server with the caller's API key."""

    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]

    @property
    def events(self) -> event_service_pb2_grpc.EventServiceStub:
        return event_service_pb2_grpc.EventServiceStub(self.channel)

    @property
    def search(self) -> event_search_service_pb2_grpc.EventSearchServiceStub:
        return event_search_service_pb2_grpc.EventSearchServiceStub(self.channel)

    @property
    def stream(self) -> event_stream_service_pb2_grpc.EventStreamServiceStub:
        return event_stream_service_pb2_grpc.EventStreamServiceStub(self.channel)


def api_key(args: argparse.Namespace) -> str:
    if args.api_key:
        return str(args.api_key)
    from_env = os.environ.get("EVENTMGMT_API_KEY")
    if from_env:
        return from_env
    path = Path(args.data_dir) / "dev-api-key"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CliError(
            f"no API key: pass --api-key, set EVENTMGMT_API_KEY, or start the development "
            f"server once (`eventmgmt serve`) so that it writes {path}"
        ) from None


def connect(args: argparse.Namespace) -> Client:
    return Client(grpc.insecure_channel(args.server), (("x-api-key", api_key(args)),))


def document(event: event_pb2.Event) -> dict[str, Any]:
    """An event as REST clients see it; links are relative, the gRPC client knows no host."""
    return rest_json.event_document(event_from_proto(event), "")


class Output:
    """Where results go: rich tables and colours for people, JSON lines for scripts."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, highlight=False, soft_wrap=as_json)
        self.errors = Console(stderr=True, highlight=False)

    def json(self, value: Any) -> None:
        self.stream.write(json.dumps(value, ensure_ascii=False) + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """Progress and hints for people: on stderr, so that stdout stays parseable."""
        self.errors.print(message, style="dim", soft_wrap=True)


def severity_text(severity: int) -> Text:
    name = next((n for n, v in SEVERITY_NAMES.items() if v == severity), str(severity))
    return Text(name if severity else "-", style=_SEVERITY_STYLES.get(severity, ""))


def short_time(iso: str) -> str:
    return iso.replace("T", " ")[:19]


def _ack_text(doc: dict[str, Any]) -> Text:
    if doc["acknowledged"]:
        return Text("acked", style="green")
    return (
        Text("needs ack", style="bold magenta") if doc.get("acknowledgementRequired") else Text("")
    )


_WIDE_TABLE = 130  # columns of terminal below which type, domain and ack are left out


def events_table(docs: list[dict[str, Any]], width: int) -> Table:
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["time", "severity", "type", "entity", "domain", "description", "ack", "id"]
    if width < _WIDE_TABLE:
        columns = ["time", "severity", "entity", "description", "id"]
    # Ids and times stay whole (people copy them); the other columns wrap instead.
    whole = {"time": 19, "id": 36}
    for column in columns:
        size = whole.get(column)
        table.add_column(column, no_wrap=size is not None, min_width=size, overflow="fold")
    for doc in docs:
        cells: dict[str, Any] = {
            "time": short_time(doc["timestamp"]),
            "severity": severity_text(doc["severity"]),
            "type": type_name(doc["typeId"]),
            "entity": _entity(doc),
            "domain": doc["domain"],
            "description": escape(doc.get("description", "")),
            "ack": _ack_text(doc),
            "id": Text(doc["id"], style="dim"),
        }
        table.add_row(*(cells[c] for c in columns))
    return table


def type_name(type_id: str) -> str:
    """The long standard type id (docs/rest-v3.md#standard-type) by its short alias; other ids as
    they are."""
    return STANDARD_EVENT_ALIAS if type_id == STANDARD_EVENT else type_id


def _entity(doc: dict[str, Any]) -> str:
    return "/".join(filter(None, (doc.get("entityType"), doc.get("entityId"))))


def event_line(doc: dict[str, Any]) -> Text:
    """One event of `tail` on one line, in columns."""
    line = Text(short_time(doc["timestamp"]) + "  ")
    severity = severity_text(doc["severity"])
    severity.pad_right(9 - len(severity))
    line.append_text(severity)
    line.append(f"{type_name(doc['typeId']):<14} ", style="blue")
    line.append(f"{_entity(doc):<20} ", style="bold")
    line.append(f"{doc['domain']:<18} ", style="dim")
    line.append(doc.get("description", ""))
    ack = _ack_text(doc)
    if ack:
        line.append("  ")
        line.append_text(ack)
    return line


def print_event(out: Output, doc: dict[str, Any]) -> None:
    if out.as_json:
        out.json(doc)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in doc.items():
        if name == "_links":
            continue
        if name == "severity":
            shown: Any = severity_text(value)
        elif isinstance(value, str):
            shown = escape(value)
        else:
            shown = escape(json.dumps(value, ensure_ascii=False))
        table.add_row(name, shown)
    out.console.print(table)


# --- the commands -----------------------------------------------------------------------


def _create(client: Client, args: argparse.Namespace, out: Output) -> int:
    body: dict[str, Any] = json.loads(args.from_json) if args.from_json else {}
    if not isinstance(body, dict):
        raise CliError("--from-json must be a JSON object")
    for json_name in SETTABLE_JSON_NAMES:
        text = getattr(args, _dest(json_name))
        if text is not None:
            body[json_name] = field_value(json_name, text)
    for item in args.field or ():
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CliError(f"--field {item!r}: use NAME=VALUE")
        body[name] = field_value(name, text)
    request = event_service_pb2.CreateEventRequest(event=event_message(body))
    event = client.events.CreateEvent(request, metadata=client.metadata).event
    print_event(out, document(event))
    return 0


def _get(client: Client, args: argparse.Namespace, out: Output) -> int:
    request = event_service_pb2.GetEventRequest(id=args.id, include_shared=args.include_shared)
    print_event(out, document(client.events.GetEvent(request, metadata=client.metadata).event))
    return 0


def list_request(args: argparse.Namespace) -> event_service_pb2.ListEventsRequest:
    """The ListEventsRequest of the list filter flags (shared by `list` and `export`)."""
    request = event_service_pb2.ListEventsRequest(
        page_size=args.page_size,
        page_token=args.page_token or "",
        order_by=args.order_by or "",
        filter=args.filter or "",
        severities=args.severity or [],
        code=args.code or "",
        entity_id=args.entity_id or "",
        entity_type=args.entity_type or "",
        history=args.history,
        include_shared=args.include_shared,
    )
    for name in ("start_time", "end_time"):
        text = getattr(args, name)
        if text:
            micros = rest_json.parse_time(int(text) if text.isdigit() else text)
            getattr(request, name).FromMicroseconds(micros)
    return request


def pages(
    client: Client, request: event_service_pb2.ListEventsRequest
) -> Iterator[event_service_pb2.ListEventsResponse]:
    """Every page of a list, following the cursor."""
    while True:
        page = client.events.ListEvents(request, metadata=client.metadata)
        yield page
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def _list(client: Client, args: argparse.Namespace, out: Output) -> int:
    request = list_request(args)
    for page in pages(client, request):
        docs = [document(e) for e in page.events]
        if out.as_json:
            for doc in docs:
                out.json(doc)
        else:
            out.console.print(events_table(docs, out.console.width))
            out.note(f"{len(docs)} shown of {page.total_size} matching")
            if page.next_page_token and not args.all:
                out.note(f"next page: --page-token {page.next_page_token}")
        if not args.all:
            break
    return 0


def _from_find_source(source: dict[str, Any]) -> dict[str, Any]:
    """A find hit (docs/find-api.md#event-shape: its names, epoch millis) in the names the event
    tables show."""
    return {
        "id": source["id"],
        "timestamp": times.format_micros(source["timestamp"] * 1000),
        "severity": source.get("severity") or 0,
        "typeId": source.get("type") or "",
        "entityType": source.get("entityType"),
        "entityId": source.get("entityId"),
        "domain": source.get("domain") or "/",
        "description": source.get("message") or "",
        "acknowledged": bool(source.get("acknowledged")),
        "acknowledgementRequired": bool(source.get("acknowledgementRequired")),
    }


def _find(client: Client, args: argparse.Namespace, out: Output) -> int:
    text = args.query
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    request = event_search_service_pb2.FindEventsRequest(
        query_json=text, include_shared=args.include_shared
    )
    answer = json.loads(client.search.FindEvents(request, metadata=client.metadata).result_json)
    if out.as_json:
        out.json(answer)
        return 0
    hits = answer["hits"]
    docs = [_from_find_source(hit["_source"]) for hit in hits["hits"]]
    out.console.print(events_table(docs, out.console.width))
    total = hits["total"]
    count = total["value"] if isinstance(total, dict) else total
    out.note(f"{len(docs)} shown of {count} matching, in {answer.get('took', 0)} ms")
    if answer.get("aggregations"):
        out.console.print_json(json.dumps(answer["aggregations"]))
    return 0


def _ack(client: Client, args: argparse.Namespace, out: Output) -> int:
    for event_id in args.ids:
        request = event_service_pb2.AcknowledgeEventRequest(id=event_id)
        doc = document(client.events.AcknowledgeEvent(request, metadata=client.metadata).event)
        if out.as_json:
            out.json(doc)
        else:
            out.console.print(
                Text.assemble(
                    ("acknowledged ", "green"),
                    doc["id"],
                    f" by {doc.get('acknowledgedBy', '')} at {doc.get('acknowledgedAt', '')}",
                )
            )
    return 0


def _subscription(
    args: argparse.Namespace, cursor: str
) -> event_stream_service_pb2.SubscribeEventsRequest:
    return event_stream_service_pb2.SubscribeEventsRequest(
        cursor=cursor,
        domain=args.domain or "",
        type_ids=args.type_id or [],
        severities=args.severity or [],
        classifications=[f"CLASSIFICATION_{c.upper()}" for c in args.classification or ()],
        entity_type=args.entity_type or "",
        entity_id=args.entity_id or "",
        heartbeat_seconds=args.heartbeat_seconds,
    )


def _messages(call: Any) -> Iterator[Any]:
    """The messages of a server stream, read by a thread: a blocked gRPC iterator does not
    see Ctrl-C, a queue read with a timeout does. Ends with the call's error, or None."""
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read() -> None:
        try:
            for message in call:
                inbox.put(message)
            inbox.put(None)
        except grpc.RpcError as error:
            inbox.put(error)

    threading.Thread(target=read, name="subscription", daemon=True).start()
    while True:
        try:
            item = inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        if isinstance(item, grpc.RpcError):
            raise item
        if item is None:
            return
        yield item


def _tail(client: Client, args: argparse.Namespace, out: Output) -> int:
    cursor_file = Path(args.cursor_file) if args.cursor_file else None
    cursor = args.cursor or ""
    if not cursor and cursor_file is not None and cursor_file.exists():
        cursor = cursor_file.read_text(encoding="utf-8").strip()
    delivered = 0
    retry = _RETRY_FIRST_S
    while True:
        call = client.stream.SubscribeEvents(
            _subscription(args, cursor), metadata=client.metadata, wait_for_ready=True
        )
        try:
            for message in _messages(call):
                retry = _RETRY_FIRST_S
                if message.WhichOneof("kind") == "event":
                    doc = document(message.event)
                    if out.as_json:
                        out.json(doc)
                    else:
                        out.console.print(event_line(doc))
                    delivered += 1
                cursor = message.cursor
                if cursor_file is not None:
                    cursor_file.write_text(cursor + "\n", encoding="utf-8")
                if args.count and delivered >= args.count:
                    call.cancel()
                    return 0
            # A server that shuts down ends its subscriptions cleanly: resume elsewhere or later.
            reason = "the server ended the subscription"
        except grpc.RpcError as error:
            code = error.code()
            if code not in _RESUMABLE:
                raise
            reason = f"connection lost ({code.name}: {error.details()})"
        except KeyboardInterrupt:
            call.cancel()
            if cursor:
                out.note(f"stopped; resume with --cursor {cursor}")
            return 0
        out.note(f"{reason}; resuming from cursor {cursor or 'now'} in {retry:.1f} s")
        time.sleep(retry)
        retry = min(retry * 2, _RETRY_MAX_S)


# --- the parser -------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=os.environ.get("EVENTMGMT_GRPC_ADDRESS", DEFAULT_SERVER),
        help=f"the server's gRPC address (env EVENTMGMT_GRPC_ADDRESS; {DEFAULT_SERVER})",
    )
    common.add_argument(
        "--api-key",
        help="API key (env EVENTMGMT_API_KEY; else DATA_DIR/dev-api-key of the dev server)",
    )
    common.add_argument(
        "--data-dir",
        default=os.environ.get("EVENTMGMT_DATA_DIR", "data"),
        help="where the development server wrote dev-api-key (env EVENTMGMT_DATA_DIR; data)",
    )
    common.add_argument(
        "--json", action="store_true", help="JSON for scripts: one event per line (NDJSON)"
    )
    return common


def add_list_filters(parser: argparse.ArgumentParser) -> None:
    """ListEvents' filters, named after the REST query parameters."""
    parser.add_argument(
        "--filter", help='JSON filter (docs/rest-v3.md#filter), e.g. \'{"severity": {"in": [1]}}\''
    )
    parser.add_argument("--start-time", help="ISO-8601 with a zone or epoch millis (inclusive)")
    parser.add_argument("--end-time", help="ISO-8601 with a zone or epoch millis (exclusive)")
    parser.add_argument(
        "--severity", action="append", type=parse_severity, help="repeat for any of several"
    )
    parser.add_argument("--code")
    parser.add_argument("--entity-id")
    parser.add_argument("--entity-type")
    parser.add_argument("--history", action="store_true", help="every version, not the latest")
    parser.add_argument("--include-shared", action="store_true")
    parser.add_argument("--order-by", help="e.g. 'timestamp desc,severity'")
    parser.add_argument("--page-token", help="resume a list from its cursor")


Command = Callable[[Client, argparse.Namespace, Output], int]


def add_parsers(commands: Any) -> None:
    """Adds `events` (and `completion`) to the `eventmgmt` command's subparsers."""
    from service import cli_transfer

    common = _common()
    events = commands.add_parser(
        "events", help="create, read, list, find, watch, acknowledge, import and export events"
    )
    actions = events.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", parents=[common], help="store one event")
    for json_name in SETTABLE_JSON_NAMES:
        if json_name == "acknowledgementRequired":
            create.add_argument(flag_name(json_name), nargs="?", const="true", metavar="BOOL")
        else:
            create.add_argument(flag_name(json_name), metavar=json_name.upper())
    create.add_argument(
        "--field", action="append", metavar="NAME=VALUE", help="a custom field (repeat)"
    )
    create.add_argument("--from-json", metavar="JSON", help="start from this event JSON")
    create.set_defaults(run=_create)

    get = actions.add_parser("get", parents=[common], help="read one event")
    get.add_argument("id")
    get.add_argument("--include-shared", action="store_true")
    get.set_defaults(run=_get)

    listing = actions.add_parser("list", parents=[common], help="list events, newest first")
    add_list_filters(listing)
    listing.add_argument("--page-size", type=int, default=20, help="1 to 1000 (20)")
    listing.add_argument("--all", action="store_true", help="every page, not only the first")
    listing.set_defaults(run=_list)

    find = actions.add_parser(
        "find", parents=[common], help="Elasticsearch query DSL (docs/find-api.md#find)"
    )
    find.add_argument("query", help="the query JSON, @FILE, or - for stdin")
    find.add_argument("--include-shared", action="store_true")
    find.set_defaults(run=_find)

    tail = actions.add_parser(
        "tail", parents=[common], help="watch events as they are committed; resumes by cursor"
    )
    tail.add_argument("--domain", help="a domain subtree such as /root/sub1")
    tail.add_argument("--type-id", action="append", help="repeat for any of several")
    tail.add_argument("--severity", action="append", type=parse_severity)
    tail.add_argument(
        "--classification",
        action="append",
        choices=["internal", "alarm", "warning", "notification"],
        type=str.lower,
    )
    tail.add_argument("--entity-type")
    tail.add_argument("--entity-id")
    tail.add_argument("--cursor", help="start right after this cursor")
    tail.add_argument(
        "--cursor-file", help="keep the last cursor in this file and resume from it when run again"
    )
    tail.add_argument("--count", type=int, default=0, help="stop after this many events")
    tail.add_argument("--heartbeat-seconds", type=int, default=0)
    tail.set_defaults(run=_tail)

    ack = actions.add_parser("ack", parents=[common], help="acknowledge events by id")
    ack.add_argument("ids", nargs="+", metavar="id")
    ack.set_defaults(run=_ack)

    cli_transfer.add_parsers(actions, common)

    completion = commands.add_parser(
        "completion", help='print the shell completion script: eval "$(eventmgmt completion)"'
    )
    completion.add_argument("shell", nargs="?", default="bash", choices=["bash", "zsh", "fish"])


def completion_script(shell: str) -> str:
    from argcomplete.shell_integration import shellcode

    return str(shellcode(["eventmgmt"], shell=shell))


def status_document(status: status_pb2.Status) -> dict[str, Any]:
    """A google.rpc.Status as JSON: code name, message, reason and field violations."""
    doc: dict[str, Any] = {"code": code_pb2.Code.Name(status.code), "message": status.message}
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            doc["reason"] = info.reason
        elif detail.Unpack(bad):
            doc["fieldViolations"] = [
                {"field": v.field, "description": v.description} for v in bad.field_violations
            ]
    return doc


def _error_text(error: grpc.RpcError) -> str:
    """The status and, when the server named fields, one line per broken rule."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # a failed call is both
    code = error.code().name
    violations = status_document(status).get("fieldViolations", []) if status else []
    if violations:
        lines = [f"  {v['field']}: {v['description']}" for v in violations]
        return "\n".join([f"error: {code}", *lines])
    return f"error: {code}: {error.details()}"


def run(args: argparse.Namespace) -> int:
    """Runs an `events` action; failures print one clear message and exit non-zero."""
    out = Output(args.json)
    command: Command = args.run
    try:
        client = connect(args)
        with client.channel:
            return command(client, args, out)
    except grpc.RpcError as error:
        out.errors.print(escape(_error_text(error)), style="red")
        return 2
    except InvalidInput as error:
        lines = [f"  {v.field}: {v.rule}" for v in error.violations]
        out.errors.print(escape("\n".join(["error: INVALID_ARGUMENT", *lines])), style="red")
        return 2
    except (CliError, DomainError, OSError, ValueError) as error:
        message = error.message if isinstance(error, DomainError) else str(error)
        out.errors.print(escape(f"error: {message}"), style="red")
        return 2
    except KeyboardInterrupt:
        return 130
