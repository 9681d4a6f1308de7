"""The REST view of events: strict parsing of client JSON and the documented response shapes
(docs/rest-v3.md: events with top-level custom fields, HAL pages; docs/find-api.md: the
acknowledge answer)."""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as json_encoder
from typing import Any

from google.api import httpbody_pb2

from service.domain import times
from service.domain.alarm_status import Transition
from service.domain.custom_fields import Instant
from service.domain.errors import FieldViolation, InvalidInput, invalid
from service.domain.event_fields import FIELDS, JSON_NAMES, OUTPUT_ONLY, Kind
from service.domain.events import Event, EventPage, Payload
from service.domain.find_answer import source_document
from service.domain.parsing import MAX_JSON_BYTES, loads_json

MAX_BODY_BYTES = MAX_JSON_BYTES
_CANONICAL = {json_name: name for name, json_name in JSON_NAMES.items()}


class _Reject(Exception):
    """Raised by a field parser: the value breaks `rule`."""

    def __init__(self, rule: str) -> None:
        self.rule = rule


def loads(raw: bytes, what: str = "body", limit: int = MAX_BODY_BYTES) -> Any:
    """Parses a client's JSON strictly (see parsing.loads_json)."""
    return loads_json(raw, what, limit)


# Made once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# And JSONEncoder.encode makes its C encoder anew on every call, with a dict to detect cycles:
# the same encoder (compact, UTF-8 text as it is), made once; the documents are the service's
# own, which hold no cycles.


def _c_encoder() -> Callable[[Any, int], Any] | None:
    """The C encoder (CPython's private `c_make_encoder`), or None: without the C module, or
    where its signature is not the one this was written for (its answer to a sample must be
    the public encoder's, byte for byte)."""
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return None
    sample = {"a": [1, 2.5, "é\n", None, True], "b": {"c": ""}}
    try:
        # markers (no cycle check), default, string encoder, indent, key and item separators,
        # sort_keys, skipkeys, allow_nan: what _ENCODER says.
        encode = make(
            None,
            _ENCODER.default,
            json_encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            True,
        )
        if "".join(encode(sample, 0)) != _ENCODER.encode(sample):
            return None
    except Exception:
        return None
    return encode


_C_ENCODE = _c_encoder()


def dumps(document: Any) -> bytes:
    if _C_ENCODE is None:
        return _ENCODER.encode(document).encode()
    return "".join(_C_ENCODE(document, 0)).encode()


def json_body(document: Any, content_type: str = "application/json") -> httpbody_pb2.HttpBody:
    """A REST answer: the document as compact JSON, for an HttpBody rpc."""
    return httpbody_pb2.HttpBody(content_type=content_type, data=dumps(document))


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Reject("must be a string")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Reject("must be an integer")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Reject("must be true or false")
    return value


def _code(value: Any) -> str:
    # REST v3 sends "123", the platform model numbers (docs/event.md#codes): both are kept as
    # the string of digits or text.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    return _string(value)


def _source(value: Any) -> Any:
    if not isinstance(value, str | dict):
        raise _Reject("must be a string or a JSON object")
    return value


def parse_time(value: Any) -> int:
    """An ISO-8601 time with a zone (`2018-07-29T06:09:29.743Z`) or epoch milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1000
    if not isinstance(value, str):
        raise _Reject("must be an ISO-8601 time such as 2018-07-29T06:09:29.743Z or epoch millis")
    try:
        return times.parse_iso(value)
    except times.MissingZone as error:
        raise _Reject(str(error)) from None
    except ValueError:
        raise _Reject("must be an ISO-8601 time such as 2018-07-29T06:09:29.743Z") from None


def _payload(value: Any) -> Payload:
    if not isinstance(value, dict):
        raise _Reject("must be an object {contentType, data}")
    unknown = sorted(set(value) - {"contentType", "data"})
    if unknown:
        raise _Reject(f"unknown fields {', '.join(unknown)}; allowed: contentType, data")
    content_type = value.get("contentType", "application/json")
    if not isinstance(content_type, str) or not content_type:
        raise _Reject("contentType must be a media type such as application/json")
    payload = Payload(content_type, b"")
    data = value.get("data")
    if payload.is_json:
        payload.data = dumps(data) if "data" in value else b""
    elif isinstance(data, str):
        payload.data = data.encode()
    else:
        raise _Reject("data must be a string unless contentType is JSON")
    return payload


def _classification(value: Any) -> str:
    return _string(value).upper()


_BY_KIND: dict[Kind, Callable[[Any], Any]] = {
    Kind.TEXT: _string,
    Kind.INTEGER: _integer,
    Kind.TIME: parse_time,
    Kind.BOOLEAN: _boolean,
    Kind.SOURCE: _source,
    Kind.PAYLOAD: _payload,
}
_SPECIAL: dict[str, Callable[[Any], Any]] = {
    "code": _code,
    "classification": _classification,
    "status": _classification,  # a name such as ACTIVE, in any case
}
_PARSERS = {f.attribute: _SPECIAL.get(f.attribute, _BY_KIND[f.kind]) for f in FIELDS if f.accepted}


def parse_event(raw: bytes, extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parses an event body into canonical fields; `extra` JSON names (such as `id`, `etag` on
    update) are returned apart. Other top-level names are custom fields
    (docs/rest-v3.md#custom-event), handed on as JSON values under `custom_fields`: the domain knows
    the event's type and refuses those the type does not define, by name. Wrong types of standard
    fields fail together, by name."""
    return parse_event_document(loads(raw), extra)


def parse_event_document(
    document: Any, extra: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """As parse_event, for JSON already decoded (an event inside a job's list)."""
    if not isinstance(document, dict):
        raise invalid("body", "must be a JSON object")
    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    custom: dict[str, Any] = {}
    for json_name, value in document.items():
        if json_name in extra:
            extras[json_name] = value
            continue
        if json_name in _OUTPUT_ONLY_JSON:  # a standard field, never a custom one
            if value is not None:
                violations.append(FieldViolation(json_name, OUTPUT_ONLY_RULE))
            continue
        name = _CANONICAL.get(json_name)
        if name is None:
            custom[json_name] = value
            continue
        if value is None:
            continue
        try:
            fields[name] = _PARSERS[name](value)
        except _Reject as rejection:
            violations.append(FieldViolation(json_name, rejection.rule))
    if violations:
        raise InvalidInput(violations)
    if custom:
        fields["custom_fields"] = custom
    return fields, extras


# Fields of an event's JSON that the server owns: the output-only fields but `id` and `etag`
# (an update's own: the path's id, the version it expects), and `_links`. A client that sends
# back the document it read (GET, modify, PUT) has them accepted and ignored when unchanged
# (AIP-203); `_links` and the `versioned` fields are never compared (the links depend on the
# base path; updateTime and an alarm's occurrence fields move with versions, which the etag
# already guards), the others must be as read.
_OWNED = tuple(f for f in OUTPUT_ONLY if f.json not in ("id", "etag"))
COMPARED_SERVER_OWNED = tuple(f.json for f in _OWNED if not f.versioned)
SERVER_OWNED = ("_links", *(f.json for f in _OWNED))
# What a create (or an update without them as extras) answers for a field the server owns.
_OUTPUT_ONLY_JSON = frozenset({"id", "etag", *SERVER_OWNED})
OUTPUT_ONLY_RULE = "output only: set by the server; leave it out"


def check_server_owned(sent: dict[str, Any], stored: dict[str, Any]) -> None:
    """Refuses, by name, server-owned values that differ from the stored document's."""
    changed = [
        FieldViolation(name, "output only: send the value as read, or leave it out")
        for name in COMPARED_SERVER_OWNED
        if name in sent and sent[name] != stored.get(name)
    ]
    if changed:
        raise InvalidInput(changed)


# The REST view writes times with the one codec; kept under this name for its callers.
format_time = times.format_micros


def _payload_json(payload: Payload) -> dict[str, Any]:
    data: Any
    if payload.is_json:
        data = json.loads(payload.data) if payload.data else None
    else:
        data = payload.data.decode("utf-8", "replace")
    return {"contentType": payload.content_type, "data": data}


def _event_document_function() -> Callable[[Event, str], dict[str, Any]]:
    """event_document, written out from the field table: one line per shown field (its JSON
    name, left out when empty, its value's conversion), so that the per-event work is the
    fields' own and nothing that the table already says is decided per event."""
    namespace: dict[str, Any] = {"format_micros": times.format_micros, "Instant": Instant}
    lines = ["def event_document(event, base_url):", "    doc = {}"]
    for f in _SHOWN:
        value = f"event.{f.attribute}"
        convert = _CONVERSIONS.get(f.kind)
        if convert is not None:
            namespace[f"convert_{f.attribute}"] = convert
            shown = f"convert_{f.attribute}(value)"
        else:
            shown = "value"
        lines.append(f"    value = {value}")
        if f.optional or f.sparse:
            lines.append('    if not (value is None or value is False or value == ""):')
            lines.append(f"        doc[{f.json!r}] = {shown}")
        else:
            lines.append(f"    doc[{f.json!r}] = {shown}")
    lines += [
        '    doc["_links"] = {"self": {"href": f"{base_url}/events/{event.id}"}}',
        "    for name, value in event.custom_fields.items():",
        "        doc[name] = format_micros(value.micros) if isinstance(value, Instant) else value",
        "    return doc",
    ]
    # The text above, written from the field table only.
    exec("\n".join(lines), namespace)
    function: Callable[[Event, str], dict[str, Any]] = namespace["event_document"]
    function.__doc__ = """The REST event (docs/rest-v3.md#read-event): every field an event has,
    the optional ones only when set, and custom fields at the top level."""
    return function


_SHOWN = tuple(f for f in FIELDS if f.shown)
_CONVERSIONS: dict[Kind, Callable[[Any], Any]] = {
    Kind.TIME: times.format_micros,
    Kind.PAYLOAD: _payload_json,
}
event_document = _event_document_function()
# The acknowledge answer (docs/find-api.md#acknowledge) is the search document's acknowledgement
# part.
_ACKNOWLEDGE_KEYS = (
    "id",
    "timestamp",
    "message",
    "classification",
    "acknowledgementRequired",
    "acknowledged",
    "acknowledgedAt",
    "acknowledgedBy",
    "type",
    "source",
    "etag",
)


def acknowledge_document(event: Event) -> dict[str, Any]:
    """The acknowledge answer: the search API's field names, times in epoch milliseconds."""
    document = source_document(event)
    return {key: document[key] for key in _ACKNOWLEDGE_KEYS}


def transition_document(transition: Transition, base_url: str) -> dict[str, Any]:
    """An alarm's transition on the live feed: what changed, by whom, when, and the alarm."""
    return {
        "change": transition.change,
        "fromStatus": transition.from_status,
        "toStatus": transition.to_status,
        "by": transition.by,
        "time": times.format_micros(transition.at),
        "event": event_document(transition.subject, base_url),
    }


def page_document(
    page: EventPage, base_url: str, query_string: Callable[..., str]
) -> dict[str, Any]:
    """A HAL page; `query_string(n)` gives the query of page n for the links, and
    `query_string(None, token)` the query that resumes from a cursor."""
    size = page.query.limit
    number = page.number
    total_pages = (page.total + size - 1) // size
    href = f"{base_url}/events?"
    links: dict[str, Any] = {"self": {"href": href + query_string(number)}}
    links["first"] = {"href": href + query_string(0)}
    if number > 0:
        links["prev"] = {"href": href + query_string(number - 1)}
    if page.next_token:
        # A cursor, not a page number: deep pages stay as fast as the first.
        links["next"] = {"href": href + query_string(None, page.next_token)}
    if total_pages > 0 and page.total_exact:  # a capped count knows no last page
        links["last"] = {"href": href + query_string(total_pages - 1)}
    return {
        "_embedded": {"events": [event_document(e, base_url) for e in page.events]},
        "_links": links,
        "page": {
            "size": size,
            "totalElements": page.total,
            "totalPages": total_pages,
            "number": number,
            # Elasticsearch's words: "gte" when totalElements is a lower bound (a capped count).
            "totalElementsRelation": "eq" if page.total_exact else "gte",
        },
    }


def billboard_document(base_url: str) -> dict[str, Any]:
    """The API's entry point: HAL links to its collections, templated with their parameters."""
    links: dict[str, Any] = {"self": {"href": f"{base_url}/"}}
    for name, parameters in (
        ("events", "page,size,sort,filter,history,includeShared"),
        ("eventTypes", "page,size,sort,filter"),
        ("createEventsJobs", ""),
        ("deleteEventsJobs", ""),
    ):
        href = f"{base_url}/{name}"
        if parameters:
            links[name] = {"href": f"{href}{{?{parameters}}}", "templated": True}
        else:
            links[name] = {"href": href}
    return {"_links": links}


def _device_time(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Reject("must be an integer: epoch milliseconds, such as 1440014969567")
    if value < 0:
        raise _Reject("must be epoch milliseconds of 0 or more")
    return value * 1000


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Reject("must be a JSON object")
    return value


_DEVICE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "typeId": _string,
    "description": _string,
    "appId": _string,
    "severity": _integer,
    "data": _object,
    "timestamp": _device_time,
}


def parse_device_report(raw: bytes) -> tuple[dict[str, Any], list[FieldViolation]]:
    """Parses a device report body (docs/device-api.md#request) into typed values by JSON name
    (timestamp in microseconds) and the violations of wrong types and unknown fields, which the
    domain reports together with its own rules. Only a body that is no JSON object fails here."""
    document = loads(raw)
    if not isinstance(document, dict):
        raise invalid("body", "must be a JSON object")
    fields: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    unknown = [name for name in document if name not in _DEVICE_PARSERS]
    for name, parse in _DEVICE_PARSERS.items():
        value = document.get(name)
        if value is None:
            continue
        try:
            fields[name] = parse(value)
        except _Reject as rejection:
            violations.append(FieldViolation(name, rejection.rule))
    if unknown:
        violations.append(
            FieldViolation(
                ", ".join(unknown),
                f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
                f"a report has only {', '.join(_DEVICE_PARSERS)}",
            )
        )
    return fields, violations


def device_event_document(event: Event, base_url: str) -> dict[str, Any]:
    """A stored (or pending) device event in the device path's shape: the report's fields with the
    timestamp in epoch milliseconds, plus the event's id, device, domain and link."""
    return {
        "id": event.id,
        "tenantId": event.tenant_id,
        "deviceId": event.entity_id,
        "typeId": event.type_id,
        "description": event.description,
        "appId": event.app_id,
        "severity": event.severity,
        "data": json.loads(event.payload.data) if event.payload else None,
        "timestamp": event.timestamp // 1000,
        "domain": event.domain,
        "etag": event.etag,
        "_links": {"self": {"href": f"{base_url}/events/{event.id}"}},
    }


def device_error_document(code: int, message: str) -> dict[str, Any]:
    """The device path's failure body (docs/device-api.md#errors), exactly."""
    return {"error": code, "message": message}
