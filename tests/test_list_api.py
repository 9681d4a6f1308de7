"""GET /events through the real Envoy and EventService.ListEvents over gRPC, on SQLite and
PostgreSQL: filters, history, cursors, and bad input answered with the field and the rule."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import timestamp_pb2

from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

if TYPE_CHECKING:
    from helpers import Service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tenant(service: Service) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """A tenant of its own with a few events: its key and the events by description."""
    key = service.create_key(f"list-{uuid.uuid4().hex[:8]}", "ReadWrite")
    bodies = [
        {
            "description": "pump hot",
            "severity": 1,
            "code": "10001",
            "entityId": "pump-1",
            "entityType": "Device",
            "correlationId": "c1",
            "timestamp": "2026-11-01T10:00:00Z",
        },
        {
            "description": "pump hotter",
            "severity": 1,
            "code": "10001",
            "entityId": "pump-1",
            "entityType": "Device",
            "correlationId": "c1",
            "timestamp": "2026-11-01T11:00:00Z",
        },
        {
            "description": "valve stuck",
            "severity": 2,
            "code": "10002",
            "entityId": "valve-1",
            "entityType": "Device",
            "timestamp": "2026-11-02T10:00:00Z",
        },
        {
            "description": "site offline",
            "severity": 3,
            "code": "10003",
            "entityId": "site-1",
            "entityType": "Asset",
            "timestamp": "2026-11-03T10:00:00Z",
        },
        {"description": "old news", "severity": 1, "timestamp": "2018-07-29T06:09:29.743Z"},
        {"description": "just now", "severity": 5},
    ]
    events = {}
    for body in bodies:
        answer = service.request("POST", "/events", {"entityId": "list-1", **body}, key=key)
        assert answer.status == 201, answer.body
        events[body["description"]] = answer.json()
    yield key, events


def listed(service: Service, key: str, query: str) -> list[str]:
    answer = service.request("GET", f"/events?{query}", key=key)
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["page"]["totalElements"] == len(body["_embedded"]["events"])
    assert body["page"]["totalElementsRelation"] == "eq"
    return [e["description"] for e in body["_embedded"]["events"]]


# A well-formed token whose keyset holds text where the timestamp column needs an integer.
FORGED_TOKEN = (
    base64.urlsafe_b64encode(
        json.dumps({"v": 1, "f": "0" * 16, "a": ["x", "id"], "n": 1, "p": 1}).encode()
    )
    .decode()
    .rstrip("=")
)
NOVEMBER = "startTime=2026-11-01T00:00:00Z&endTime=2026-11-04T00:00:00Z"


def test_rest_filters(service: Service, tenant: tuple[str, Any]) -> None:
    key, _ = tenant
    # No time filter: the last 7 days only (with the internal event that recorded the key's
    # creation); history off collapses c1 to its newest.
    for count in ("", "count=exact"):
        recent = listed(service, key, count)
        assert recent[0] == "just now" and len(recent) == 2, recent
        assert recent[1].startswith("API key ") and recent[1].endswith("created by operator")
    assert listed(service, key, NOVEMBER) == ["site offline", "valve stuck", "pump hotter"]
    assert listed(service, key, NOVEMBER + "&history=true") == [
        "site offline",
        "valve stuck",
        "pump hotter",
        "pump hot",
    ]
    assert listed(service, key, NOVEMBER + "&severity=1&severity=2&entityType=Device") == [
        "valve stuck",
        "pump hotter",
    ]
    assert listed(service, key, NOVEMBER + "&code=10003&entityId=site-1") == ["site offline"]
    assert listed(service, key, NOVEMBER + "&includeShared=true&sort=severity,asc") == [
        "pump hotter",
        "valve stuck",
        "site offline",
    ]
    between = {"timestamp": {"between": "[2018-01-01T00:00:00Z,2018-08-01T00:00:00Z)"}}
    assert listed(service, key, "filter=" + quote(json.dumps(between))) == ["old news"]
    documented_filter = {
        "timestamp": {"after": "2026-10-01T00:00:00Z"},
        "or": [{"entityId": {"like": "pump-?"}}, {"description": {"like": "*stuck"}}],
        "not": {"severity": {"in": [3, 4]}},
    }
    assert listed(service, key, "history=1&filter=" + quote(json.dumps(documented_filter))) == [
        "valve stuck",
        "pump hotter",
        "pump hot",
    ]


def test_rest_cursor_walks_every_page(service: Service, tenant: tuple[str, Any]) -> None:
    key, _ = tenant
    path = f"/events?size=2&history=true&{NOVEMBER}"
    seen, numbers = [], []
    while path:
        body = service.request("GET", path, key=key).json()
        assert body["page"]["totalElements"] == 4
        seen += [e["description"] for e in body["_embedded"]["events"]]
        numbers.append(body["page"]["number"])
        path = body["_links"].get("next", {}).get("href", "").removeprefix(service.rest_url)
    assert seen == ["site offline", "valve stuck", "pump hotter", "pump hot"]
    assert numbers == [0, 1]

    first = service.request("GET", f"/events?size=1&{NOVEMBER}", key=key).json()
    token = first["_links"]["next"]["href"].split("pageToken=")[1].split("&")[0]
    other = service.request("GET", f"/events?size=1&pageToken={token}&severity=2", key=key)
    assert other.status == 400
    body = other.json()
    assert "pageToken" in body["message"] and "other filters" in body["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("filter=" + quote('{"severity": {"gt": 1}}'), "filter.severity.gt"),
        ("filter=" + quote('{"colour": "red"}'), "filter.colour"),
        ("filter=" + quote('{"severity": "high"}'), "filter.severity"),
        ("filter=" + quote('{"typeId": '), "filter"),
        ("startTime=yesterday", "startTime"),
        ("startTime=2026-11-02T00:00:00Z&endTime=2026-11-01T00:00:00Z", "endTime"),
        ("severity=101", "severity"),
        ("pageToken=garbage", "pageToken"),
        # Values no backend can bind must be a 400 too, never a 500.
        ("filter=" + quote('{"severity": 99999999999999999999}'), "filter.severity"),
        ("filter=" + quote('{"description": "a\\u0000b"}'), "filter.description"),
        ("filter=" + quote('{"timestamp": 99999999999999999999}'), "filter.timestamp"),
        ("pageToken=" + FORGED_TOKEN, "pageToken"),
        ("count=roughly", "count"),
    ],
)
def test_rest_bad_list_input_is_400_naming_the_field(
    service: Service, tenant: tuple[str, Any], query: str, field: str
) -> None:
    key, _ = tenant
    answer = service.request("GET", f"/events?{query}", key=key)
    assert answer.status == 400
    body = answer.json()
    bad_request = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    assert field in {v["field"] for v in bad_request["fieldViolations"]}


def test_grpc_list_filters_and_tokens(service: Service, tenant: tuple[str, Any]) -> None:
    key, _ = tenant
    metadata = (("x-api-key", key),)
    november = {"start_time": timestamp_pb2.Timestamp(), "end_time": timestamp_pb2.Timestamp()}
    november["start_time"].FromJsonString("2026-11-01T00:00:00Z")
    november["end_time"].FromJsonString("2026-11-04T00:00:00Z")
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)

        def call(**fields: Any) -> event_service_pb2.ListEventsResponse:
            return stub.ListEvents(event_service_pb2.ListEventsRequest(**fields), metadata=metadata)

        typed = call(severities=[event_pb2.SEVERITY_CRITICAL], entity_id="pump-1", **november)
        assert [e.description for e in typed.events] == ["pump hotter"]
        assert typed.total_size_relation == event_service_pb2.TOTAL_SIZE_RELATION_EQ
        exact = call(total_size_mode=event_service_pb2.TOTAL_SIZE_MODE_EXACT, **november)
        assert exact.total_size_relation == event_service_pb2.TOTAL_SIZE_RELATION_EQ
        history = call(history=True, filter='{"correlationId": "c1"}', **november)
        assert [e.description for e in history.events] == ["pump hotter", "pump hot"]

        seen, token = [], ""
        while True:
            page = call(
                page_size=1,
                page_token=token,
                history=True,
                order_by="severity,timestamp desc",
                **november,
            )
            assert page.total_size == 4
            seen += [e.description for e in page.events]
            token = page.next_page_token
            if not token:
                break
        assert seen == ["pump hotter", "pump hot", "valve stuck", "site offline"]

        first = call(page_size=1, **november)
        with pytest.raises(grpc.RpcError) as mismatch:
            call(page_size=1, page_token=first.next_page_token, code="10001", **november)
        assert mismatch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (mismatch.value.details() or "")
        with pytest.raises(grpc.RpcError) as bad_filter:
            call(filter='{"severity": {"near": 1}}')
        assert bad_filter.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "filter.severity.near" in (bad_filter.value.details() or "")
        with pytest.raises(grpc.RpcError) as nul:
            call(code="10\x00")
        assert nul.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "code" in (nul.value.details() or "")


def test_deleting_the_newest_version_lists_the_one_before(service: Service) -> None:
    key = service.create_key(f"list-del-{uuid.uuid4().hex[:8]}", "Admin")
    for severity, when in ((3, "2026-11-01T10:00:00Z"), (4, "2026-11-01T11:00:00Z")):
        body = {
            "description": f"v{severity}",
            "severity": severity,
            "entityId": "pump-9",
            "correlationId": "c-del",
            "timestamp": when,
        }
        assert service.request("POST", "/events", body, key=key).status == 201
    assert listed(service, key, NOVEMBER) == ["v4"]

    job = service.request(
        "POST", "/deleteEventsJobs", {"filter": {"entityId": "pump-9", "severity": 4}}, key=key
    )
    assert job.status in (200, 201, 202), job.body
    path = f"/deleteEventsJobs/{job.json()['id']}"
    deadline = time.monotonic() + 60
    while service.request("GET", path, key=key).json()["state"] != "FINISHED":
        assert time.monotonic() < deadline, "the delete job did not finish"
        time.sleep(0.05)

    assert listed(service, key, NOVEMBER) == ["v3"]


def test_filters_on_custom_fields_that_event_types_declare_filterable(service: Service) -> None:
    key = service.create_key(f"list-types-{uuid.uuid4().hex[:8]}", "Admin")
    fields = [
        {"name": "pressure", "type": "INTEGER", "filterable": True},
        {"name": "due", "type": "TIMESTAMP", "filterable": True},
        {"name": "line", "type": "STRING"},
    ]
    created = service.request("POST", "/eventTypes", {"name": "Pump", "fields": fields}, key=key)
    assert created.status == 201, created.body
    type_id = created.json()["id"]
    for pressure, due in ((3, "2026-11-01T00:00:00Z"), (8, "2026-12-01T00:00:00Z")):
        body = {
            "typeId": type_id,
            "description": f"p{pressure}",
            "pressure": pressure,
            "due": due,
            "line": "A",
            "entityId": "line-a",
        }
        answer = service.request("POST", "/events", body, key=key)
        assert answer.status == 201, answer.body

    def with_filter(document: dict[str, Any]) -> Any:
        return service.request("GET", "/events?filter=" + quote(json.dumps(document)), key=key)

    by_pressure = with_filter({"pressure": {"after": 5}}).json()
    assert [e["description"] for e in by_pressure["_embedded"]["events"]] == ["p8"]
    by_due = with_filter({"due": {"before": "2026-11-15T00:00:00Z"}}).json()
    assert [e["description"] for e in by_due["_embedded"]["events"]] == ["p3"]
    wrong_type = with_filter({"pressure": "high"})
    assert wrong_type.status == 400 and "filter.pressure" in wrong_type.json()["message"]
    not_filterable = with_filter({"line": "A"})
    assert not_filterable.status == 400
    assert "not a filterable field" in not_filterable.json()["message"]


def test_links_with_a_spaced_filter_work_when_followed(service: Service, keys: Any) -> None:
    """Links spell a space %20: the gateway keeps `+` a plus, so a `+` would break the JSON."""
    from urllib.parse import urlsplit

    entity = f"spaced-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        answer = service.request(
            "POST", "/events", {"entityId": entity, "description": f"e{n}"}, keys.writer
        )
        assert answer.status == 201, answer.body
    query = quote(json.dumps({"entityId": entity}))  # '{"entityId": "..."}' has a space
    first = service.request("GET", f"/events?size=2&filter={query}", key=keys.writer).json()
    for name in ("self", "next", "last"):
        link = urlsplit(first["_links"][name]["href"])
        assert "+" not in link.query
        page = service.request("GET", f"{link.path}?{link.query}", key=keys.writer)
        assert page.status == 200, page.body
    link = urlsplit(first["_links"]["next"]["href"])
    second = service.request("GET", f"{link.path}?{link.query}", key=keys.writer).json()
    assert [e["description"] for e in second["_embedded"]["events"]] == ["e0"]
