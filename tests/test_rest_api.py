"""The documented REST paths, end to end: HTTP to the real Envoy, transcoded to the real
server, stored in SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from helpers import DOCUMENTED_EVENT, STANDARD_EVENT_ID, error_reason, violations

if TYPE_CHECKING:
    from helpers import Keys, Service

pytestmark = pytest.mark.integration


def create(service: Service, key: str, **fields: Any) -> dict[str, Any]:
    answer = service.request(
        "POST", "/events", {"description": "test", "entityId": "pump-1", **fields}, key=key
    )
    assert answer.status == 201, answer.body
    return dict(answer.json())


def test_the_documented_standard_event_is_created_as_shown(service: Service, keys: Keys) -> None:
    answer = service.request("POST", "/events", DOCUMENTED_EVENT, key=keys.writer)

    assert answer.status == 201
    body = answer.json()
    uuid.UUID(body["id"])
    assert answer.headers["location"] == f"{service.rest_url}/events/{body['id']}"
    assert body["_links"]["self"]["href"] == answer.headers["location"]
    assert body["etag"] == 1
    for name, value in DOCUMENTED_EVENT.items():
        assert body[name] == value, name
    assert not any(h.startswith("grpc-") for h in answer.headers)

    fetched = service.request("GET", f"/events/{body['id']}", key=keys.read)
    assert fetched.status == 200
    assert fetched.json() == body


def test_data_keeps_its_json_types(service: Service, keys: Keys) -> None:
    data = {
        "source": "Software",
        "version": 2.5,
        "build": 7,
        "active": True,
        "tags": ["a", 1, None],
        "nested": {"big": 12345678901234567890},
    }
    body = create(
        service,
        keys.writer,
        payload={"contentType": "application/json", "data": data},
        source={"thingName": "000001", "thingType": "1", "attempt": 3},
    )

    fetched = service.request("GET", f"/events/{body['id']}", key=keys.read).json()
    assert fetched["payload"]["data"] == data
    assert isinstance(fetched["payload"]["data"]["build"], int)
    assert isinstance(fetched["payload"]["data"]["version"], float)
    assert fetched["source"] == {"thingName": "000001", "thingType": "1", "attempt": 3}


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"severity": "5"}, "severity", "must be an integer"),
        ({"severity": 5.0}, "severity", "must be an integer"),
        ({"severity": 101}, "severity", "must be between 0 and 100"),
        ({"acknowledgementRequired": "yes"}, "acknowledgementRequired", "must be true or false"),
        ({"timestamp": "yesterday"}, "timestamp", "ISO-8601"),
        ({"timestamp": "2018-07-29T06:09:29"}, "timestamp", "time zone"),
        ({"description": 12}, "description", "must be a string"),
        ({"typeId": "no such type"}, "typeId", "machine name"),
        ({"domain": "root"}, "domain", "must be / or a path"),
        ({"internal": True}, "internal", "only the platform"),
        ({"entityId": "e-1", "description": "x" * 4097}, "description", "at most 4096"),
    ],
)
def test_wrong_field_values_are_rejected_by_name(
    service: Service, keys: Keys, body: dict[str, Any], field: str, rule: str
) -> None:
    before = service.request("GET", "/events?size=1", key=keys.admin).json()["page"]
    answer = service.request("POST", "/events", body, key=keys.writer)

    assert answer.status == 400
    assert rule in violations(answer.json())[field]
    after = service.request("GET", "/events?size=1", key=keys.admin).json()["page"]
    assert after["totalElements"] == before["totalElements"]


def test_unknown_fields_are_rejected_with_all_their_names(service: Service, keys: Keys) -> None:
    answer = service.request(
        "POST", "/events", {"descripton": "typo", "colour": "red"}, key=keys.writer
    )

    assert answer.status == 400
    assert "descripton" in answer.json()["message"]
    assert "colour" in answer.json()["message"]


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[1, 2]", b'"text"', b'{"a": NaN}', b'{"severity": 1, "severity": 2}', b"\xff\xfe"],
)
def test_malformed_bodies_are_rejected(service: Service, keys: Keys, raw: bytes) -> None:
    answer = service.request("POST", "/events", raw, key=keys.writer)

    assert answer.status == 400
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["message"]


def test_oversized_bodies_are_refused_with_json(service: Service, keys: Keys) -> None:
    # One event may be 1 MiB: the service refuses more, naming the rule.
    event = service.request(
        "POST",
        "/events",
        {"entityId": "e-1", "description": "x" * (2 * 1024 * 1024)},
        key=keys.writer,
    )
    assert event.status == 400
    assert error_reason(event.json()) == "BODY_TOO_LARGE"
    assert "1048576" in event.json()["message"]

    # Any body over 16 MiB (the bulk job limit) stops at the gateway.
    anything = service.request(
        "POST", "/createEventsJobs", b"x" * (17 * 1024 * 1024), key=keys.writer
    )
    assert anything.status == 413
    assert anything.headers["content-type"].startswith("application/json")


def test_get_with_a_bad_or_unknown_id(service: Service, keys: Keys) -> None:
    bad = service.request("GET", "/events/not-a-uuid", key=keys.read)
    assert bad.status == 400
    assert "id" in violations(bad.json())

    missing = service.request("GET", f"/events/{uuid.uuid4()}", key=keys.read)
    assert missing.status == 404
    assert error_reason(missing.json()) == "EVENT_NOT_FOUND"


def test_list_is_a_hal_page(service: Service, keys: Keys) -> None:
    tenant_key = service.create_key(f"list-{uuid.uuid4().hex[:8]}", "ReadWrite")
    for severity in (1, 2, 3, 4, 5):
        create(
            service, tenant_key, severity=severity, timestamp=f"2026-01-0{severity}T00:00:00.000Z"
        )

    # Events of January lie outside the default 7-day window: the range names them.
    since = "startTime=2026-01-01T00:00:00Z&endTime=2026-02-01T00:00:00Z"
    answer = service.request(
        "GET", f"/events?page=1&size=2&sort=timestamp,desc&{since}", key=tenant_key
    )

    assert answer.status == 200
    assert answer.headers["content-type"] == "application/hal+json"
    body = answer.json()
    assert [e["severity"] for e in body["_embedded"]["events"]] == [3, 2]
    assert body["page"] == {
        "size": 2,
        "totalElements": 5,
        "totalPages": 3,
        "number": 1,
        "totalElementsRelation": "eq",
    }
    assert set(body["_links"]) == {"self", "first", "prev", "next", "last"}
    assert "pageToken=" in body["_links"]["next"]["href"]
    following = service.request(
        "GET", body["_links"]["next"]["href"].removeprefix(service.rest_url), key=tenant_key
    ).json()
    assert [e["severity"] for e in following["_embedded"]["events"]] == [1]
    assert following["page"] == {
        "size": 2,
        "totalElements": 5,
        "totalPages": 3,
        "number": 2,
        "totalElementsRelation": "eq",
    }
    assert "next" not in following["_links"]

    ascending = service.request("GET", f"/events?sort=severity,asc&{since}", key=tenant_key).json()
    assert [e["severity"] for e in ascending["_embedded"]["events"]] == [1, 2, 3, 4, 5]
    assert ascending["page"]["size"] == 20


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("size=0&page=-1", "page"),
        ("size=1001", "size"),
        ("size=-5", "size"),
        ("sort=colour,desc", "sort"),
        ("sort=timestamp,sideways", "sort"),
    ],
)
def test_bad_page_parameters_are_rejected(
    service: Service, keys: Keys, query: str, field: str
) -> None:
    answer = service.request("GET", f"/events?{query}", key=keys.read)

    assert answer.status == 400
    assert field in violations(answer.json())


@pytest.mark.parametrize("query", ["sise=10", "size=ten"])
def test_unknown_or_mistyped_query_parameters_are_rejected(
    service: Service, keys: Keys, query: str
) -> None:
    answer = service.request("GET", f"/events?{query}", key=keys.read)

    assert answer.status == 400
    assert answer.headers["content-type"].startswith("application/json")


def test_update_with_if_match(service: Service, keys: Keys) -> None:
    event = create(service, keys.writer, **DOCUMENTED_EVENT)
    path = f"/events/{event['id']}"
    documented_update = {
        "correlationId": "cd5f73c4-bd67-11e7-abc4-cec278b6b50a",
        "timestamp": "2018-07-29T06:09:29.743Z",
        "entityId": "ef5f73c4-bd67-11e7-abc4-cec278b6b50b",
        "description": "Error happened in the engine, again",
    }

    answer = service.request(
        "PUT", path, documented_update, key=keys.writer, headers={"If-Match": "1"}
    )

    assert answer.status == 200
    body = answer.json()
    assert body["etag"] == 2
    assert body["description"] == "Error happened in the engine, again"
    # As documented (docs/rest-v3.md#update-event): entityId is not updatable; the answer says so
    # instead of hiding it.
    assert body["entityId"] == DOCUMENTED_EVENT["entityId"]
    assert "entityId" in answer.headers["warning"]
    assert body["severity"] == 5 and body["code"] == "123"

    stale = service.request(
        "PUT", path, {"description": "lost update"}, key=keys.writer, headers={"If-Match": '"1"'}
    )
    assert stale.status == 412  # RFC 9110 Precondition Failed
    assert error_reason(stale.json()) == "ETAG_MISMATCH"
    assert service.request("GET", path, key=keys.read).json()["description"] == (
        "Error happened in the engine, again"
    )

    by_body_etag = service.request("PUT", path, {"severity": 1, "etag": 2}, key=keys.writer)
    assert by_body_etag.status == 200
    assert by_body_etag.json()["etag"] == 3

    bad_header = service.request(
        "PUT", path, {"severity": 1}, key=keys.writer, headers={"If-Match": "yesterday"}
    )
    assert bad_header.status == 400


def test_acknowledge_answers_with_the_documented_fields(service: Service, keys: Keys) -> None:
    event = create(
        service,
        keys.writer,
        acknowledgementRequired=True,
        classification="ALARM",
        timestamp="2017-09-24T04:45:07.763Z",
        source={"thingName": "000001", "domain": "root"},
    )

    answer = service.request("POST", f"/events/{event['id']}/acknowledge", key=keys.writer)

    assert answer.status == 200
    body = answer.json()
    assert body["id"] == event["id"]
    assert body["timestamp"] == 1506228307763
    assert body["message"] == "test"
    assert body["classification"] == "ALARM"
    assert body["acknowledgementRequired"] is True
    assert body["acknowledgedBy"] == "test-key"
    assert isinstance(body["acknowledgedAt"], int)
    assert body["type"] == STANDARD_EVENT_ID
    assert body["source"] == {"thingName": "000001", "domain": "root"}
    stored = service.request("GET", f"/events/{event['id']}", key=keys.read).json()
    assert stored["acknowledged"] is True and stored["etag"] == 2


def test_every_call_needs_a_valid_key(service: Service, keys: Keys) -> None:
    missing = service.request("GET", "/events")
    assert missing.status == 401
    assert error_reason(missing.json()) == "API_KEY_MISSING"

    wrong = service.request(
        "POST", "/events", {"entityId": "e-1", "description": "x"}, key="emk_nope_nope"
    )
    assert wrong.status == 401
    assert error_reason(wrong.json()) == "API_KEY_INVALID"


def test_read_keys_cannot_write(service: Service, keys: Keys) -> None:
    event = create(service, keys.writer)

    assert (
        service.request(
            "POST", "/events", {"entityId": "e-1", "description": "x"}, key=keys.read
        ).status
        == 403
    )
    assert (
        service.request("PUT", f"/events/{event['id']}", {"severity": 1}, key=keys.read).status
        == 403
    )
    assert (
        service.request("POST", f"/events/{event['id']}/acknowledge", key=keys.read).status == 403
    )


def test_another_tenants_events_do_not_exist_for_a_key(service: Service, keys: Keys) -> None:
    event = create(service, keys.writer, description="acme secret")
    path = f"/events/{event['id']}"

    assert service.request("GET", path, key=keys.other_tenant).status == 404
    assert (
        service.request("PUT", path, {"description": "pwned"}, key=keys.other_tenant).status == 404
    )
    assert service.request("POST", f"{path}/acknowledge", key=keys.other_tenant).status == 404
    listing = service.request("GET", "/events?size=1000", key=keys.other_tenant).json()
    assert event["id"] not in {e["id"] for e in listing["_embedded"]["events"]}
    stored = service.request("GET", path, key=keys.read).json()
    assert stored["description"] == "acme secret" and stored["acknowledged"] is False


def test_domain_subtree_limits_a_key(service: Service, keys: Keys) -> None:
    inside = create(service, keys.sub1_writer, domain="/root/sub1/sub11")
    default = create(service, keys.sub1_writer)
    outside = create(service, keys.writer, domain="/root/sub10")

    assert default["domain"] == "/root/sub1"
    assert service.request("GET", f"/events/{inside['id']}", key=keys.sub1_writer).status == 200
    assert service.request("GET", f"/events/{outside['id']}", key=keys.sub1_writer).status == 404
    seen = service.request("GET", "/events?size=1000", key=keys.sub1_writer).json()
    assert {e["domain"] for e in seen["_embedded"]["events"]} <= {"/root/sub1", "/root/sub1/sub11"}

    denied = service.request("POST", f"/events/{outside['id']}/acknowledge", key=keys.sub1_writer)
    assert denied.status == 403
    assert error_reason(denied.json()) == "NOT_AUTHORIZED_DOMAIN"

    escape = service.request(
        "POST",
        "/events",
        {"entityId": "e-1", "description": "x", "domain": "/root/sub2"},
        key=keys.sub1_writer,
    )
    assert escape.status == 403
    assert error_reason(escape.json()) == "NOT_AUTHORIZED_DOMAIN"


def test_paths_without_a_route_answer_json_404(service: Service, keys: Keys) -> None:
    answer = service.request("GET", "/nothing/here", key=keys.read)

    assert answer.status == 404
    assert answer.json()["message"]
