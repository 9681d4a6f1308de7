"""What the `google.api.http` annotations cannot say about the REST paths, for the OpenAPI document
(service.openapi): the JSON inside the HttpBody requests and answers (docs/: the v3 events with
top-level custom fields, HAL pages, the device path's `{error, message}`, Elasticsearch's answer,
the SSE stream), the statuses the service chooses, and the gateway's own routes.

These schemas describe service.rest_json, service.job_views and service.domain.find's
documents; the contract tests (tests/test_openapi.py) check every answer against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.domain import alarm_status, event_fields, event_types, events, filters, live

MESSAGE_MARKER = "$message"
JSON = "application/json"


def message(full_name: str) -> dict[str, Any]:
    """The proto3 JSON schema of a message, derived from the descriptors by service.openapi."""
    return {MESSAGE_MARKER: full_name}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


_STRING: dict[str, Any] = {"type": "string"}
_INTEGER: dict[str, Any] = {"type": "integer"}
_BOOLEAN: dict[str, Any] = {"type": "boolean"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_MILLIS: dict[str, Any] = {"type": "integer", "description": "Epoch milliseconds."}
_TIME_INPUT: dict[str, Any] = {
    "anyOf": [_TIME, {**_MILLIS, "minimum": 0}],
    "description": "ISO-8601 with a zone, or epoch milliseconds.",
}
# Query parameters are text: a time there is ISO-8601 or the digits of epoch milliseconds.
_TIME_PARAMETER: dict[str, Any] = {
    "type": "string",
    # Empty is the same as absent.
    "anyOf": [{"format": "date-time"}, {"pattern": "^[0-9]{0,15}$"}],
}
_LINK = {"type": "object", "properties": {"href": _STRING}, "required": ["href"]}
_LOCATION = {"Location": {"description": "The new resource's URL.", "schema": _STRING}}


def _object(
    properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


_MACHINE_NAME = "^[A-Za-z0-9._:-]*$"


def _text(field: event_fields.EventField) -> dict[str, Any]:
    schema: dict[str, Any] = dict(_STRING)
    if field.limit is not None:
        schema["maxLength"] = field.limit
    if field.machine_name:
        schema["pattern"] = _MACHINE_NAME
    return schema


# The rules a JSON Schema can state about a standard field, beyond its kind and limits.
_DOMAIN = {
    **_STRING,
    "pattern": r"^(/|(/[A-Za-z0-9_.\-]{1,64}){1,16})$",
    "description": "A domain path such as /root/sub1.",
}
# Sent empty, a domain is the key's own.
_DOMAIN_INPUT = {**_DOMAIN, "pattern": _DOMAIN["pattern"].replace("^(", "^(|")}
_FIELD_RULES: dict[str, dict[str, Any]] = {
    "severity": {"minimum": 0, "maximum": events.MAX_SEVERITY},
    "classification": {"enum": list(events.CLASSIFICATIONS)},
    "status": {
        "enum": list(alarm_status.STATUSES),
        "description": "Alarms only (classification ALARM); set by acknowledging and clearing.",
    },
    "domain": _DOMAIN,
    "typeId": {"description": "StandardEvent unless a custom type's id."},
}


def _field_schema(field: event_fields.EventField, answer: bool) -> dict[str, Any]:
    """A standard field's schema in answers (`answer`) or in what clients send."""
    kind = field.kind
    schema: dict[str, Any]
    if kind is event_fields.Kind.TEXT:
        schema = _text(field)
        if field.json == "code" and not answer:
            schema = {"type": ["string", "integer"], "description": "Returned as a string."}
    elif kind is event_fields.Kind.INTEGER:
        schema = dict(_INTEGER)
    elif kind is event_fields.Kind.BOOLEAN:
        schema = dict(_BOOLEAN)
    elif kind is event_fields.Kind.TIME:
        schema = dict(_TIME) if answer else dict(_TIME_INPUT)
    elif kind is event_fields.Kind.SOURCE:
        schema = {} if answer else {"type": ["string", "object"]}
    else:
        schema = _object({"contentType": {**_STRING, "minLength": 1}, "data": {}})
        if not answer:
            schema["additionalProperties"] = False
    if field.json == "domain" and not answer:
        return _DOMAIN_INPUT
    return {**schema, **_FIELD_RULES.get(field.json, {})}


def _event_input(fields: tuple[event_fields.EventField, ...]) -> dict[str, Any]:
    return {f.json: _field_schema(f, answer=False) for f in fields}


def _event_answer() -> dict[str, Any]:
    shown = [f for f in event_fields.FIELDS if f.shown]
    properties = {f.json: _field_schema(f, answer=True) for f in shown}
    properties["id"]["format"] = "uuid"
    properties["_links"] = _object({"self": _LINK}, ("self",))
    required = [f.json for f in shown if not f.optional and not f.sparse]
    return _object(
        properties,
        (*required, "_links"),
        description="The event (docs/rest-v3.md#create-event); its type's custom fields sit at "
        "the top level.",
        additionalProperties=True,
    )


_SETTABLE = tuple(f for f in event_fields.FIELDS if f.settable)


def or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, or `null`: what a client may send for a field it leaves at its default
    (the proto3 JSON mapping reads null so, and so do the REST parsers)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema.get("type")
    if kind is None:
        if "anyOf" in schema:
            return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
        return schema  # anything, null included
    result = {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}
    if "enum" in schema:
        result["enum"] = [*schema["enum"], None]
    return result


def _nullable(properties: dict[str, Any]) -> dict[str, Any]:
    return {name: or_null(schema) for name, schema in properties.items()}


SCHEMAS: dict[str, Any] = {
    "Error": {
        **message("google.rpc.Status"),
    },
    "DeviceError": _object(
        {
            "error": {
                **_INTEGER,
                "enum": [-1, 0, 4, 5, 6],
                "description": "-1 unknown server error, 0 licence, 4 tenant or key, "
                "5 device, 6 validation.",
            },
            "message": _STRING,
        },
        ("error", "message"),
        additionalProperties=False,
    ),
    "EventInput": _object(
        _nullable(_event_input(_SETTABLE)),
        description="The event (docs/rest-v3.md#create-event). Any other top-level name is a "
        "custom field of the "
        "event's type (unknown ones are refused, by name).",
        additionalProperties=True,
    ),
    "EventUpdate": _object(
        _nullable(
            {
                **_event_input(_SETTABLE),
                "id": {**_STRING, "description": "Optional; must equal the path's id."},
                "etag": {**_INTEGER, "description": "Optional; like If-Match."},
            }
        ),
        description="The fields to change: "
        + ", ".join(f.json for f in _SETTABLE if f.updatable)
        + " and updatable custom fields; others are kept (named in a Warning header).",
        additionalProperties=True,
    ),
    "Event": _event_answer(),
    "EventPage": _object(
        {
            "_embedded": _object(
                {"events": {"type": "array", "items": _ref("Event")}}, ("events",)
            ),
            "_links": _object(
                {name: _LINK for name in ("self", "first", "prev", "next", "last")},
                ("self", "first"),
            ),
            "page": _object(
                {
                    "size": _INTEGER,
                    "totalElements": _INTEGER,
                    "totalPages": _INTEGER,
                    "number": _INTEGER,
                    "totalElementsRelation": {
                        "type": "string",
                        "enum": ["eq", "gte"],
                        "description": "gte: totalElements is a lower bound (count=capped, "
                        "the default, stops at 10,000).",
                    },
                },
                ("size", "totalElements", "totalPages", "number"),
            ),
        },
        ("_embedded", "_links", "page"),
        description="A HAL page; `_links.next` carries a cursor (`pageToken`).",
    ),
    "Acknowledgement": _object(
        {
            "id": _STRING,
            "timestamp": _MILLIS,
            "message": _STRING,
            "classification": {"type": ["string", "null"]},
            "acknowledgementRequired": _BOOLEAN,
            "acknowledged": _BOOLEAN,
            "acknowledgedAt": {"type": ["integer", "null"], "description": "Epoch milliseconds."},
            "acknowledgedBy": {"type": ["string", "null"]},
            "type": _STRING,
            "source": {"type": ["string", "object", "null"]},
            "etag": _INTEGER,
        },
        ("id", "timestamp", "acknowledged", "acknowledgedAt", "type", "etag"),
        description="The acknowledge answer (docs/find-api.md#acknowledge).",
    ),
    "JobState": {**_STRING, "enum": ["ACCEPTED", "IN_PROGRESS", "FINISHED", "FINISHED_WITH_ERROR"]},
    "JobAccepted": _object({"id": _STRING, "state": _ref("JobState")}, ("id", "state")),
    "JobProgress": _object({"done": _INTEGER, "total": _INTEGER}, ("done", "total")),
    "CreateEventsJobRequest": _object(
        {
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "An event as for POST /events; each is validated on its "
                    "own and an invalid one gets its own 400 result, not a 400 for the job.",
                },
                "minItems": 1,
                "maxItems": 10_000,
            }
        },
        ("events",),
        additionalProperties=False,
    ),
    "CreateEventsJob": _object(
        {
            "id": _STRING,
            "state": _ref("JobState"),
            "progress": _ref("JobProgress"),
            "details": _object(
                {
                    "resultDescription": {
                        "type": "array",
                        "items": _object(
                            {
                                "event": {"type": "object"},
                                "resultCode": {**_STRING, "enum": ["200", "201", "400", "403"]},
                                "errorMessage": _STRING,
                            },
                            ("event", "resultCode"),
                        ),
                    }
                },
                ("resultDescription",),
            ),
        },
        ("id", "state", "progress"),
    ),
    "DeleteEventsJobRequest": _object(
        {
            "filter": _object(
                {
                    **{
                        f.json: {"description": "A value (equality) or an object of operators."}
                        for f in event_fields.FILTERABLE
                    },
                    **{name: {"description": "A combinator."} for name in filters.COMBINATORS},
                },
                description=(
                    "A list filter, as GET /events takes it (operators eq, in, like, between, "
                    "before, after; custom fields that event types declare filterable), over "
                    "events of every time; {} is every event."
                ),
                additionalProperties=True,
            )
        },
        ("filter",),
        additionalProperties=False,
    ),
    "AlarmsJob": _object(
        {
            "id": _STRING,
            "state": _ref("JobState"),
            "progress": _ref("JobProgress"),
            "details": _object(
                {
                    "resultCode": _STRING,
                    "resultDescription": {
                        **_STRING,
                        "description": "N alarms acknowledged. / N alarms cleared.",
                    },
                },
                ("resultCode", "resultDescription"),
            ),
        },
        ("id", "state", "progress"),
        description="An acknowledge or clear job: `progress` counts the alarms changed of "
        "those that matched when it started.",
    ),
    "DeleteEventsJob": _object(
        {
            "id": _STRING,
            "state": _ref("JobState"),
            "progress": _ref("JobProgress"),
            "details": _object(
                {"resultCode": _STRING, "resultDescription": _STRING},
                ("resultCode", "resultDescription"),
            ),
        },
        ("id", "state", "progress"),
    ),
    "FindQuery": _object(
        {
            "query": {"type": "object", "minProperties": 1},
            "sort": {"type": ["array", "object", "string"]},
            "size": _INTEGER,
            "from": _INTEGER,
            "aggs": {"type": "object"},
            "aggregations": {"type": "object"},
            "_source": {"type": ["boolean", "array", "object", "string"]},
        },
        ("query",),
        description="Elasticsearch's query DSL (docs/find-api.md#find): query, sort, size, from, "
        "aggs.",
    ),
    "FindAnswer": _object(
        {
            "took": _INTEGER,
            "timed_out": _BOOLEAN,
            "_shards": {"type": "object"},
            "hits": _object(
                {
                    "total": _object(
                        {"value": _INTEGER, "relation": {**_STRING, "enum": ["eq", "gte"]}},
                        ("value", "relation"),
                    ),
                    "max_score": {"type": ["number", "null"]},
                    "hits": {
                        "type": "array",
                        "items": _object(
                            {
                                "_index": _STRING,
                                "_type": _STRING,
                                "_id": _STRING,
                                "_score": {"type": ["number", "null"]},
                                "_source": {"type": "object"},
                                "sort": {"type": "array"},
                            },
                            ("_index", "_id", "_score"),
                        ),
                    },
                },
                ("total", "max_score", "hits"),
            ),
            "aggregations": {"type": "object"},
        },
        ("took", "timed_out", "hits"),
        description="Elasticsearch's search answer; `_source` is the find API's event "
        "(docs/find-api.md#event-shape).",
    ),
    "DeviceReport": _object(
        {
            "typeId": {**_STRING, "maxLength": 24},
            "description": {**_STRING, "maxLength": 255},
            "appId": _STRING,
            "severity": {**_INTEGER, "minimum": 1, "maximum": 5},
            "data": {"type": "object"},
            "timestamp": {**_MILLIS, "minimum": 0},
        },
        ("typeId", "description", "appId", "severity", "data", "timestamp"),
        description="A device's report (docs/device-api.md#request).",
        additionalProperties=False,
    ),
    "DeviceEvent": _object(
        {
            "id": _STRING,
            "tenantId": _STRING,
            "deviceId": _STRING,
            "typeId": _STRING,
            "description": _STRING,
            "appId": _STRING,
            "severity": _INTEGER,
            "data": {"type": ["object", "null"]},
            "timestamp": _MILLIS,
            "domain": _STRING,
            "etag": _INTEGER,
            "_links": _object({"self": _LINK}, ("self",)),
        },
        ("id", "tenantId", "deviceId", "typeId", "timestamp", "domain", "etag", "_links"),
        description="A device's stored (201) or pending (202) event in the device path's shape "
        "(docs/device-api.md).",
    ),
    "LoginInput": _object(
        {
            "username": {**_STRING, "minLength": 1, "maxLength": 128},
            "password": {**_STRING, "minLength": 1, "maxLength": 1024},
        },
        ("username", "password"),
        additionalProperties=False,
    ),
    "ShareInput": _object(
        {
            "entityId": {**_STRING, "minLength": 1, "maxLength": 128},
            "tenantId": {**_STRING, "minLength": 1, "maxLength": 64},
        },
        ("entityId", "tenantId"),
        additionalProperties=False,
    ),
}


def _error(description: str, schema: str = "Error") -> dict[str, Any]:
    return _json(description, _ref(schema))


RESPONSES: dict[str, Any] = {
    "BadRequest": _error("Bad input: the details name every field and rule."),
    "Unauthenticated": _error("No API key, or an unknown one."),
    "PermissionDenied": _error("The key may not do this (role, domain, tenant)."),
    "NotFound": _error("No such resource in the caller's tenant."),
    "Conflict": _error("Exists already, or a write lost a race."),
    "PreconditionFailed": _error("If-Match (or the body's etag) names another version."),
    "TooLarge": _error("The body is over the gateway's limit."),
    "TooMany": _error("A message or quota limit was hit."),
    "Internal": _error("An unexpected failure; the message names its incident (request id)."),
    "Unavailable": _error("The gateway cannot reach the service."),
    "DeviceBadRequest": _error(
        "Malformed, unknown or invalid fields; or no such app.", "DeviceError"
    ),
    "DeviceUnauthenticated": _error("No API key, or an unknown one.", "DeviceError"),
    "DeviceForbidden": _error(
        "Another tenant's or a Read key; device disabled or outside the key's domain; "
        "licence inactive.",
        "DeviceError",
    ),
    "DeviceNotFound": _error("No such tenant or device.", "DeviceError"),
    "DeviceConflict": _error("The same report is stored already.", "DeviceError"),
    "DeviceTooLarge": _error("The body is over the gateway's limit.", "DeviceError"),
    "DeviceInternal": _error("An unexpected failure (incident in the message).", "DeviceError"),
    "DeviceUnavailable": _error("The gateway cannot reach the service.", "DeviceError"),
}

_ERRORS: dict[str, Any] = {
    "400": _response("BadRequest"),
    "401": _response("Unauthenticated"),
    "403": _response("PermissionDenied"),
    "404": _response("NotFound"),
    "409": _response("Conflict"),
    "413": _response("TooLarge"),
    "429": _response("TooMany"),
    "500": _response("Internal"),
    "503": _response("Unavailable"),
}
# Writes conditional on If-Match answer a failed precondition with 412 (RFC 9110).
_CONDITIONAL_ERRORS = {**_ERRORS, "412": _response("PreconditionFailed")}
_DEVICE_ERRORS: dict[str, Any] = {
    "400": _response("DeviceBadRequest"),
    "401": _response("DeviceUnauthenticated"),
    "403": _response("DeviceForbidden"),
    "404": _response("DeviceNotFound"),
    "409": _response("DeviceConflict"),
    "413": _response("DeviceTooLarge"),
    "500": _response("DeviceInternal"),
    "503": _response("DeviceUnavailable"),
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": _STRING,
    }


_IF_MATCH = {
    **_header("If-Match", 'The integer etag (3, "3" or W/"3"); a stale one is 409.'),
    "schema": {**_STRING, "pattern": r'^(W/)?"?[0-9]{1,18}"?$'},
}


@dataclass(frozen=True)
class Rest:
    """What one rpc's REST binding answers beyond its annotation."""

    # The JSON schema of an HttpBody request body.
    request: dict[str, Any] | None = None
    # The success responses of an HttpBody answer; typed answers derive theirs.
    responses: dict[str, Any] = field(default_factory=dict)
    # The success status of a typed answer (the service may choose 201 through x-http-code).
    status: str = "200"
    errors: dict[str, Any] = field(default_factory=lambda: dict(_ERRORS))
    headers: list[dict[str, Any]] = field(default_factory=list)
    # The rules of path and query parameters beyond their proto type, by JSON name.
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


_UUID = {"id": {"type": "string", "format": "uuid"}}
_SEVERITIES = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": events.MAX_SEVERITY},
}
_LIST_EVENTS = {
    "sort": {
        "type": "array",
        "items": {
            **_STRING,
            "pattern": f"^({'|'.join(event_fields.SORTABLE)})(,(asc|desc))?$",
        },
    },
    "page": {**_INTEGER, "minimum": 0},
    "startTime": _TIME_PARAMETER,
    "endTime": _TIME_PARAMETER,
    "size": {**_INTEGER, "minimum": 0, "maximum": events.MAX_PAGE_SIZE},
    "severity": _SEVERITIES,
}
_SUBSCRIBE = {
    "domain": _DOMAIN_INPUT,
    "severities": _SEVERITIES,
    "classifications": {
        "type": "array",
        "items": {**_STRING, "enum": list(events.CLASSIFICATIONS)},
    },
    "statuses": {
        "type": "array",
        "items": {**_STRING, "enum": list(alarm_status.STATUSES)},
    },
    "heartbeatSeconds": {**_INTEGER, "minimum": 0, "maximum": live.MAX_HEARTBEAT_SECONDS},
}


_EVENT = "eventmgmt.v1.EventRestService"
_JOBS = "eventmgmt.v1.EventJobRestService"
_TYPES = "eventmgmt.v1.EventTypeRestService"
_SHARING = "eventmgmt.v1.SharingRestService"
_JSON_PATCH = {"type": "array", "items": {"type": "object"}, "description": "RFC 6902"}
_EVENT_TYPE = message("eventmgmt.v1.EventType")

REST: dict[str, Rest] = {
    f"{_EVENT}.RestGetApiRoot": Rest(
        responses={
            "200": {
                "description": "HAL links to the collections under this base path.",
                "content": {
                    "application/hal+json": {
                        "schema": _object(
                            {
                                "_links": {
                                    "type": "object",
                                    "additionalProperties": _object(
                                        {"href": _STRING, "templated": _BOOLEAN}, ("href",)
                                    ),
                                }
                            },
                            ("_links",),
                        )
                    }
                },
            }
        }
    ),
    f"{_EVENT}.RestCreateEvent": Rest(
        request=_ref("EventInput"),
        responses={
            "201": _json("The stored event.", _ref("Event"), headers=_LOCATION),
            "200": _json(
                "An ALARM counted into the open alarm of its key (README: Alarms): that "
                "alarm, with its new count; nothing new was stored.",
                _ref("Event"),
                headers=_LOCATION,
            ),
        },
    ),
    f"{_EVENT}.RestGetEvent": Rest(
        responses={"200": _json("The event.", _ref("Event"))}, parameters=_UUID
    ),
    f"{_EVENT}.RestListEvents": Rest(
        responses={
            "200": {
                "description": "A HAL page of events.",
                "content": {"application/hal+json": {"schema": _ref("EventPage")}},
            }
        },
        parameters=_LIST_EVENTS,
    ),
    f"{_EVENT}.RestUpdateEvent": Rest(
        request=_ref("EventUpdate"),
        responses={"200": _json("The updated event with its new etag.", _ref("Event"))},
        headers=[_IF_MATCH],
        errors=dict(_CONDITIONAL_ERRORS),
        parameters=_UUID,
    ),
    f"{_EVENT}.RestAcknowledgeEvent": Rest(
        responses={"200": _json("The acknowledged event.", _ref("Acknowledgement"))},
        parameters=_UUID,
    ),
    f"{_EVENT}.RestClearEvent": Rest(
        responses={"200": _json("The cleared alarm.", _ref("Event"))},
        parameters=_UUID,
    ),
    f"{_EVENT}.RestSubscribeEvents": Rest(
        responses={
            "200": {
                "description": "Server-sent events: `id:` (the cursor), `event:` (event, "
                "transition, heartbeat or fell-behind) and a JSON `data:` line; events as GET "
                "/events/{id}, transitions as {change, fromStatus, toStatus, by, time, event}.",
                "content": {
                    "text/event-stream": {
                        "schema": _object(
                            {
                                "id": {**_STRING, "description": "The cursor."},
                                "event": {
                                    **_STRING,
                                    "enum": ["event", "transition", "heartbeat", "fell-behind"],
                                },
                                "data": {**_STRING, "contentMediaType": JSON},
                            },
                            ("id", "event", "data"),
                        )
                    }
                },
            }
        },
        headers=[_header("Last-Event-ID", "Resume after this cursor; wins over `cursor`.")],
        parameters=_SUBSCRIBE,
    ),
    f"{_JOBS}.RestSubmitCreateEventsJob": Rest(
        request=_ref("CreateEventsJobRequest"),
        responses={"201": _json("The job, accepted.", _ref("JobAccepted"), headers=_LOCATION)},
    ),
    f"{_JOBS}.RestGetCreateEventsJob": Rest(
        responses={"200": _json("The job's state and results.", _ref("CreateEventsJob"))},
        parameters=_UUID,
    ),
    f"{_JOBS}.RestSubmitDeleteEventsJob": Rest(
        request=_ref("DeleteEventsJobRequest"),
        responses={"201": _json("The job, accepted.", _ref("JobAccepted"), headers=_LOCATION)},
    ),
    f"{_JOBS}.RestGetDeleteEventsJob": Rest(
        responses={"200": _json("The job's state.", _ref("DeleteEventsJob"))},
        parameters=_UUID,
    ),
    **{
        f"{_JOBS}.RestSubmit{kind}EventsJob": Rest(
            request=_ref("DeleteEventsJobRequest"),
            responses={"201": _json("The job, accepted.", _ref("JobAccepted"), headers=_LOCATION)},
        )
        for kind in ("Acknowledge", "Clear")
    },
    **{
        f"{_JOBS}.RestGet{kind}EventsJob": Rest(
            responses={"200": _json("The job's state.", _ref("AlarmsJob"))},
            parameters=_UUID,
        )
        for kind in ("Acknowledge", "Clear")
    },
    f"{_TYPES}.RestCreateEventType": Rest(
        request=_EVENT_TYPE,
        responses={"201": _json("The stored type.", _EVENT_TYPE, headers=_LOCATION)},
    ),
    f"{_TYPES}.RestGetEventType": Rest(responses={"200": _json("The type.", _EVENT_TYPE)}),
    f"{_TYPES}.RestListEventTypes": Rest(
        responses={
            "200": {
                "description": "A HAL page of types: _embedded.eventTypes, page, _links.",
                "content": {"application/hal+json": {"schema": {"type": "object"}}},
            }
        },
        parameters={
            "pageSize": {**_INTEGER, "minimum": 0, "maximum": event_types.MAX_PAGE_SIZE},
            "size": {**_INTEGER, "minimum": 0, "maximum": event_types.MAX_PAGE_SIZE},
        },
    ),
    f"{_TYPES}.RestPatchEventType": Rest(
        request={"oneOf": [_JSON_PATCH, {"type": "object", "description": "RFC 7396"}]},
        responses={"200": _json("The patched type.", _EVENT_TYPE)},
        headers=[_IF_MATCH],
        errors=dict(_CONDITIONAL_ERRORS),
    ),
    # A PUT merges (fields left out stay, so none is required) or carries a JSON Patch, as
    # the platform's existing clients send it.
    f"{_TYPES}.RestUpdateEventType": Rest(
        request={
            "oneOf": [
                _JSON_PATCH,
                {"type": "object", "description": "The EventType fields to change; others stay."},
            ]
        },
        responses={"200": _json("The changed type.", _EVENT_TYPE)},
        headers=[_IF_MATCH],
        errors=dict(_CONDITIONAL_ERRORS),
    ),
    f"{_TYPES}.RestDeleteEventType": Rest(
        responses={"200": _json("Deleted.", {"type": "object", "maxProperties": 0})},
        headers=[_IF_MATCH],
        errors=dict(_CONDITIONAL_ERRORS),
    ),
    "eventmgmt.v1.EventSearchRestService.RestFindEvents": Rest(
        request=_ref("FindQuery"),
        responses={"200": _json("Elasticsearch's answer.", _ref("FindAnswer"))},
    ),
    f"{_SHARING}.RestShareEntity": Rest(
        request=_ref("ShareInput"),
        responses={"201": _json("The share made.", message("eventmgmt.v1.ShareEntityResponse"))},
    ),
    f"{_SHARING}.RestListEntityShares": Rest(
        responses={
            "200": _json(
                "The shares made and received.", message("eventmgmt.v1.ListEntitySharesResponse")
            )
        }
    ),
    f"{_SHARING}.RestUnshareEntity": Rest(
        responses={"200": _json("Unshared.", message("eventmgmt.v1.UnshareEntityResponse"))}
    ),
    "eventmgmt.v1.AuthService.Login": Rest(request=_ref("LoginInput")),
    "eventmgmt.v1.AuthService.Logout": Rest(
        request={"type": "object", "maxProperties": 0, "description": "Empty, or no body."}
    ),
    "eventmgmt.v1.DeviceEventRestService.RestReportDeviceEvent": Rest(
        request=_ref("DeviceReport"),
        responses={
            "201": _json("The stored event.", _ref("DeviceEvent"), headers=_LOCATION),
            "202": _json("Accepted (`Prefer: respond-async`).", _ref("DeviceEvent")),
        },
        errors=dict(_DEVICE_ERRORS),
        headers=[_header("Prefer", "`respond-async` for a 202 and durable later processing.")],
    ),
}

_NO_AUTH: list[Any] = []
# Routes that the gateway answers itself (gateway/envoy.yaml.tmpl), not bound to an rpc.
GATEWAY_PATHS: dict[str, dict[str, Any]] = {
    "/openapi.json": {
        "get": {
            "operationId": "GetOpenApi",
            "tags": ["Documentation"],
            "summary": "This document.",
            "security": _NO_AUTH,
            "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
        }
    },
    "/docs": {
        "get": {
            "operationId": "GetDocs",
            "tags": ["Documentation"],
            "summary": "This document as a Swagger UI page.",
            "security": _NO_AUTH,
            "responses": {
                "200": {"description": "HTML.", "content": {"text/html": {"schema": _STRING}}}
            },
        }
    },
}

INFO: dict[str, Any] = {
    "title": "eventmgmt REST API",
    "version": "v1",
    "summary": "IoT events and alarms: create, list, search, acknowledge, bulk jobs, live.",
    "description": "The REST paths that the Envoy gateway transcodes onto the gRPC API "
    "(eventmgmt.v1). Generated from the protos' google.api.http annotations and "
    "service/rest_schemas.py; never edit gateway/openapi.json by hand (`make generate`).",
    "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
}

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The token of POST /auth/login (or an API key).",
    },
}
