"""The REST JSON codec: strict parsing that names the field and the rule, exact types on the
way back, and the documented response shapes (docs/rest-v3.md event and HAL page, docs/find-api.md
acknowledge)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import rest_json
from service.domain.access import Principal, Role
from service.domain.errors import InvalidInput
from service.domain.events import Event, EventManager, EventPage, EventQuery, Payload

BASE = "https://events.example.com"


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def violations(raw: bytes, extra: tuple[str, ...] = ()) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        rest_json.parse_event(raw, extra)
    return {v.field: v.rule for v in caught.value.violations}


def micros(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class MemoryRepository:
    """Just enough of the store for EventManager: keeps events in a dict."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}

    async def insert(self, event: Event, dedup_key: str | None = None) -> Event | None:
        self.events[event.id] = event
        return None

    async def get(
        self, principal: Principal, event_id: str, *, whole_tenant: bool = False
    ) -> Event | None:
        return self.events.get(event_id)

    async def query(self, principal: Principal, query: EventQuery) -> tuple[list[Event], int]:
        return list(self.events.values()), len(self.events)

    async def replace(self, event: Event, expected_etag: int) -> bool:
        self.events[event.id] = event
        return True


WRITER = Principal(
    tenant_id="acme", key_id="k1", name="operator", role=Role.READ_WRITE, domain="/root"
)


def create(raw: bytes) -> Event:
    fields, _ = rest_json.parse_event(raw)
    return asyncio.run(EventManager(MemoryRepository()).create(WRITER, fields))


# --- wrong types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("typeId", 5, "must be a string"),
        ("description", ["text"], "must be a string"),
        ("entityId", {"id": 1}, "must be a string"),
        ("domain", False, "must be a string"),
        ("classification", 2, "must be a string"),
        ("severity", "2", "must be an integer"),
        ("severity", 2.0, "must be an integer"),
        ("severity", True, "must be an integer"),
        ("acknowledgementRequired", "yes", "must be true or false"),
        ("acknowledgementRequired", 1, "must be true or false"),
        ("timestamp", True, "must be an ISO-8601 time"),
        ("timestamp", 1.5e12, "must be an ISO-8601 time"),
        ("timestamp", "yesterday", "must be an ISO-8601 time"),
        ("payload", "data", "must be an object {contentType, data}"),
        ("payload", [1], "must be an object {contentType, data}"),
        ("source", 5, "must be a string or a JSON object"),
        ("source", ["a"], "must be a string or a JSON object"),
        ("source", True, "must be a string or a JSON object"),
        ("code", -1, "must be a string"),
        ("code", True, "must be a string"),
    ],
)
def test_a_wrong_json_type_names_the_field_and_the_rule(name: str, value: Any, rule: str) -> None:
    found = violations(body({"description": "ok", name: value}))
    assert list(found) == [name]
    assert found[name].startswith(rule)


def test_every_wrong_field_is_reported_at_once() -> None:
    found = violations(
        body(
            {
                "severity": "high",
                "typeId": 1,
                "acknowledgementRequired": "no",
                "description": "fine",
            }
        )
    )
    assert set(found) == {"severity", "typeId", "acknowledgementRequired"}


@pytest.mark.parametrize(
    ("payload", "rule"),
    [
        ({"contentType": "text/plain", "data": {"a": 1}}, "data must be a string"),
        ({"contentType": "", "data": "x"}, "contentType must be a media type"),
        ({"contentType": 5, "data": "x"}, "contentType must be a media type"),
        ({"data": 1, "encoding": "x", "size": 3}, "unknown fields encoding, size"),
    ],
)
def test_payload_rules_are_named(payload: dict[str, Any], rule: str) -> None:
    assert violations(body({"payload": payload}))["payload"].startswith(rule)


def create_violations(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        create(body(document))
    return {v.field: v.rule for v in caught.value.violations}


def test_unknown_fields_are_all_listed_by_name() -> None:
    found = create_violations(
        {
            "description": "x",
            "colour": "red",
            "Severity": 1,
            "message": "002 name",
            "severity": 1,
        }
    )
    ((field, rule),) = found.items()
    for name in ("colour", "Severity", "message"):
        assert name in field
        assert name in rule
    assert "description" not in rule
    assert rule.startswith("unknown fields")


def test_top_level_names_beyond_the_standard_ones_are_handed_on_as_custom_fields() -> None:
    fields, _ = rest_json.parse_event(body({"severity": 1, "bogus": [1], "note": "x"}))
    # Kept as raw JSON values: only the event's type knows what they must be.
    assert fields == {"severity": 1, "custom_fields": {"bogus": [1], "note": "x"}}
    assert create_violations({"bogus": 1})["bogus"].startswith("unknown field: bogus")


def test_extra_names_are_returned_apart_not_rejected() -> None:
    fields, extras = rest_json.parse_event(
        body({"id": "abc", "etag": 3, "severity": 2}), extra=("id", "etag")
    )
    assert fields == {"severity": 2}
    assert extras == {"id": "abc", "etag": 3}
    # Without `extra`, etag is no custom field of the standard event.
    assert "etag" in create_violations({"etag": 3})


def test_null_means_absent() -> None:
    fields, _ = rest_json.parse_event(body({"severity": None, "description": "x"}))
    assert fields == {"description": "x"}


# --- malformed bodies ------------------------------------------------------------------------


def reason_and_rule(raw: bytes) -> tuple[str, str, str]:
    with pytest.raises(InvalidInput) as caught:
        rest_json.parse_event(raw)
    (violation,) = caught.value.violations
    return caught.value.reason, violation.field, violation.rule


def test_duplicate_keys_are_rejected_even_when_nested() -> None:
    reason, field, rule = reason_and_rule(b'{"severity": 1, "severity": 2}')
    assert (reason, field) == ("MALFORMED_JSON", "body")
    assert "duplicate key 'severity'" in rule
    reason, _, rule = reason_and_rule(b'{"source": {"a": 1, "a": 1}}')
    assert reason == "MALFORMED_JSON"
    assert "duplicate key 'a'" in rule


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_rejected(constant: bytes) -> None:
    reason, field, rule = reason_and_rule(b'{"source": {"v": ' + constant + b"}}")
    assert (reason, field) == ("MALFORMED_JSON", "body")
    assert constant.lstrip(b"-").decode() in rule


@pytest.mark.parametrize("raw", [b"[]", b'"event"', b"5", b"null", b"true"])
def test_a_body_that_is_no_object_is_rejected(raw: bytes) -> None:
    assert violations(raw) == {"body": "must be a JSON object"}


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"severity": 1,}', b"{'a': 1}", b"\xff\xfe{}", b'{"description": "\xc3"}']
)
def test_malformed_json_is_rejected(raw: bytes) -> None:
    reason, field, rule = reason_and_rule(raw)
    assert (reason, field) == ("MALFORMED_JSON", "body")
    assert rule.startswith("must be valid JSON")


def padded(size: int) -> bytes:
    skeleton = body({"description": ""})
    raw = body({"description": "x" * (size - len(skeleton))})
    assert len(raw) == size
    return raw


def test_a_body_of_exactly_one_mebibyte_is_parsed() -> None:
    fields, _ = rest_json.parse_event(padded(rest_json.MAX_BODY_BYTES))
    assert len(fields["description"]) > 1_000_000


def test_a_body_over_one_mebibyte_is_rejected_before_parsing() -> None:
    reason, field, rule = reason_and_rule(padded(rest_json.MAX_BODY_BYTES + 1))
    assert (reason, field, rule) == ("BODY_TOO_LARGE", "body", "at most 1048576 bytes")


# --- domain rules on parsed input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "field", "rule"),
    [
        ({"severity": 101}, "severity", "must be between 0 and 100"),
        ({"classification": "loud"}, "classification", "must be one of INTERNAL"),
        ({"internal": True}, "internal", "only the platform records internal events"),
        ({"acknowledged": True}, "acknowledged", "cannot be set on create"),
        ({"timestamp": -1}, "timestamp", "must lie between 1970 and 9999"),
        ({"entityType": "has space"}, "entityType", "a machine name"),
        ({"domain": "root/sub1"}, "domain", "must be / or a path"),
        ({"typeId": "NoSuchType"}, "typeId", "unknown event type 'NoSuchType'"),
        ({"correlationId": "c" * 129}, "correlationId", "at most 128 characters"),
    ],
)
def test_domain_rules_name_the_rest_field(document: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        create(body(document))
    found = {v.field: v.rule for v in caught.value.violations}
    assert list(found) == [field]
    assert found[field].startswith(rule)


def test_classification_is_accepted_in_any_case() -> None:
    assert create(body({"classification": "alarm"})).classification == "ALARM"


# --- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2018-07-29T06:09:29.743Z", micros("2018-07-29T06:09:29.743+00:00")),
        ("2018-07-29T08:09:29.743+02:00", micros("2018-07-29T06:09:29.743+00:00")),
        ("2018-07-29T01:09:29.743123-05:00", micros("2018-07-29T06:09:29.743123+00:00")),
        ("1970-01-01T00:00:00Z", 0),
        (1532844569743, 1532844569743000),
        (0, 0),
    ],
)
def test_timestamp_forms(value: Any, expected: int) -> None:
    assert rest_json.parse_time(value) == expected
    fields, _ = rest_json.parse_event(body({"timestamp": value}))
    assert fields["timestamp"] == expected


def test_a_naive_timestamp_is_rejected_with_the_rule() -> None:
    found = violations(body({"timestamp": "2018-07-29T06:09:29.743"}))
    assert found == {"timestamp": "must include a time zone, such as Z or +02:00"}


def test_a_created_event_keeps_the_clients_timestamp() -> None:
    created = create(body({"timestamp": "2018-07-29T06:09:29.743Z"}))
    assert rest_json.event_document(created, BASE)["timestamp"] == "2018-07-29T06:09:29.743Z"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1532844569743000, "2018-07-29T06:09:29.743Z"),
        (1532844569000000, "2018-07-29T06:09:29.000Z"),
        (1532844569743123, "2018-07-29T06:09:29.743123Z"),
        (1532844569000001, "2018-07-29T06:09:29.000001Z"),
        (0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_format_time_uses_milliseconds_unless_microseconds_are_needed(
    value: int, text: str
) -> None:
    assert rest_json.format_time(value) == text
    assert rest_json.parse_time(text) == value


# --- rendering -------------------------------------------------------------------------------


def test_payload_json_data_keeps_its_types_when_rendered() -> None:
    data = {
        "int": 1,
        "float": 1.0,
        "big": 12345678901234567890,
        "bool": True,
        "null": None,
        "nested": {"list": [1, 2.5, False, [3, {"deep": 0.0}]], "empty": {}},
    }
    created = create(
        body(
            {
                "payload": {"contentType": "application/json", "data": data},
                "source": {"n": 2, "x": 2.0, "on": True},
            }
        )
    )
    document = json.loads(rest_json.dumps(rest_json.event_document(created, BASE)))
    rendered = document["payload"]["data"]
    assert rendered == data
    assert type(rendered["int"]) is int
    assert type(rendered["float"]) is float
    assert type(rendered["big"]) is int
    assert rendered["bool"] is True
    assert type(rendered["nested"]["list"][3][1]["deep"]) is float
    assert document["payload"]["contentType"] == "application/json"
    assert type(document["source"]["n"]) is int
    assert type(document["source"]["x"]) is float


@pytest.mark.parametrize(
    ("payload", "rendered"),
    [
        ({"data": [1, 2]}, {"contentType": "application/json", "data": [1, 2]}),
        (
            {"contentType": "application/vnd.acme+json", "data": {"a": 1}},
            {"contentType": "application/vnd.acme+json", "data": {"a": 1}},
        ),
        (
            {"contentType": "text/plain", "data": "héllo"},
            {"contentType": "text/plain", "data": "héllo"},
        ),
        ({"contentType": "application/json"}, {"contentType": "application/json", "data": None}),
    ],
)
def test_payload_content_types_round_trip(
    payload: dict[str, Any], rendered: dict[str, Any]
) -> None:
    created = create(body({"payload": payload}))
    assert rest_json.event_document(created, BASE)["payload"] == rendered


def full_event(**changes: Any) -> Event:
    values: dict[str, Any] = dict(
        id="3f1c0d2e-8b7a-4c55-9d1e-2a6b4f0c9e11",
        tenant_id="acme",
        type_id="StandardEvent",
        correlation_id="c-1",
        entity_type="Device",
        entity_id="pump-7",
        domain="/root/sub1",
        timestamp=1532844569743000,
        create_time=1532844570000000,
        update_time=1532844571000500,
        etag=3,
        severity=2,
        code="123",
        description="Error happened in the engine",
        source={"thingName": "pump"},
        classification="ALARM",
        category="YOUR.CATEGORY",
        acknowledgement_required=True,
        acknowledged=True,
        acknowledged_at=1532844600123456,
        acknowledged_by="operator",
        app_id="app-1",
        payload=Payload("text/plain", b"raw"),
        custom_fields={"pressure": 4.5},
    )
    values.update(changes)
    return Event(**values)


def test_event_document_has_the_documented_shape() -> None:
    document = rest_json.event_document(full_event(), BASE)
    assert document == {
        "id": "3f1c0d2e-8b7a-4c55-9d1e-2a6b4f0c9e11",
        "typeId": "StandardEvent",
        "correlationId": "c-1",
        "timestamp": "2018-07-29T06:09:29.743Z",
        "entityType": "Device",
        "entityId": "pump-7",
        "domain": "/root/sub1",
        "etag": 3,
        "_links": {"self": {"href": f"{BASE}/events/3f1c0d2e-8b7a-4c55-9d1e-2a6b4f0c9e11"}},
        "severity": 2,
        "code": "123",
        "acknowledged": True,
        "acknowledgementRequired": True,
        "acknowledgedAt": "2018-07-29T06:10:00.123456Z",
        "acknowledgedBy": "operator",
        "description": "Error happened in the engine",
        "source": {"thingName": "pump"},
        "classification": "ALARM",
        "category": "YOUR.CATEGORY",
        "appId": "app-1",
        "payload": {"contentType": "text/plain", "data": "raw"},
        "createTime": "2018-07-29T06:09:30.000Z",
        "updateTime": "2018-07-29T06:09:31.000500Z",
        "pressure": 4.5,
    }


def test_acknowledge_document_has_the_documented_names_and_epoch_millis() -> None:
    document = rest_json.acknowledge_document(full_event())
    assert document == {
        "id": "3f1c0d2e-8b7a-4c55-9d1e-2a6b4f0c9e11",
        "timestamp": 1532844569743,
        "message": "Error happened in the engine",
        "classification": "ALARM",
        "acknowledgementRequired": True,
        "acknowledged": True,
        "acknowledgedAt": 1532844600123,
        "acknowledgedBy": "operator",
        "type": "StandardEvent",
        "source": {"thingName": "pump"},
        "etag": 3,
    }


def test_acknowledge_document_of_an_unacknowledged_event() -> None:
    document = rest_json.acknowledge_document(
        full_event(acknowledged=False, acknowledged_at=None, acknowledged_by="", classification="")
    )
    assert document["acknowledged"] is False
    assert document["acknowledgedAt"] is None
    assert document["classification"] is None
    json.dumps(document, allow_nan=False)


# --- HAL pages -------------------------------------------------------------------------------


def page(total: int, number: int, size: int) -> dict[str, Any]:
    shown = max(0, min(size, total - number * size))
    events = [full_event(id=str(uuid.uuid4())) for _ in range(shown)]
    query = EventQuery(offset=number * size, limit=size)
    # The next page is reached by a cursor; this one's text names the page it leads to.
    token = f"cursor{number + 1}" if (number + 1) * size < total else ""

    def query_string(n: int | None, token: str = "") -> str:
        return f"pageToken={token}&size={size}" if token else f"page={n}&size={size}"

    return rest_json.page_document(
        EventPage(events, total, query, number=number, next_token=token), BASE, query_string
    )


def link_pages(document: dict[str, Any]) -> dict[str, int]:
    numbers = {}
    for name, link in document["_links"].items():
        query = link["href"].split("?", 1)[1]
        if name == "next":
            assert query.startswith("pageToken=cursor")
            numbers[name] = int(query.removeprefix("pageToken=cursor").split("&")[0])
        else:
            numbers[name] = int(query.removeprefix("page=").split("&")[0])
    return numbers


@pytest.mark.parametrize(
    ("total", "number", "size", "links", "total_pages"),
    [
        (45, 0, 20, {"self": 0, "first": 0, "next": 1, "last": 2}, 3),
        (45, 1, 20, {"self": 1, "first": 0, "prev": 0, "next": 2, "last": 2}, 3),
        (45, 2, 20, {"self": 2, "first": 0, "prev": 1, "last": 2}, 3),
        (40, 1, 20, {"self": 1, "first": 0, "prev": 0, "last": 1}, 2),
        (20, 0, 20, {"self": 0, "first": 0, "last": 0}, 1),
        (1, 0, 1, {"self": 0, "first": 0, "last": 0}, 1),
        (0, 0, 20, {"self": 0, "first": 0}, 0),
        (45, 5, 20, {"self": 5, "first": 0, "prev": 4, "last": 2}, 3),
    ],
)
def test_hal_page_links_and_numbers(
    total: int, number: int, size: int, links: dict[str, int], total_pages: int
) -> None:
    document = page(total, number, size)
    assert link_pages(document) == links
    assert document["page"] == {
        "size": size,
        "totalElements": total,
        "totalPages": total_pages,
        "number": number,
        "totalElementsRelation": "eq",
    }
    assert len(document["_embedded"]["events"]) == max(0, min(size, total - number * size))
    for link in document["_links"].values():
        assert link["href"].startswith(f"{BASE}/events?")


def test_hal_page_embeds_event_documents() -> None:
    document = page(3, 0, 20)
    embedded = document["_embedded"]["events"]
    assert [e["_links"]["self"]["href"] for e in embedded] == [
        f"{BASE}/events/{e['id']}" for e in embedded
    ]
    assert all(e["timestamp"] == "2018-07-29T06:09:29.743Z" for e in embedded)


def test_deeply_nested_json_is_bad_input_not_a_crash() -> None:
    depth = 100_000
    raw = b'{"source": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    reason, field, rule = reason_and_rule(raw)
    assert (reason, field) == ("MALFORMED_JSON", "body")
    assert rule == "must not nest arrays and objects this deeply"


@pytest.mark.parametrize(
    "name", ["count", "firstOccurrenceTime", "lastOccurrenceTime", "updateTime", "clearedBy"]
)
def test_a_create_that_sends_a_server_owned_field_is_told_it_is_output_only(name: str) -> None:
    rule = create_violations({"description": "x", name: 3})[name]
    assert rule == rest_json.OUTPUT_ONLY_RULE
    # A document read and sent back (PUT) carries them as extras, compared or ignored there.
    fields, extras = rest_json.parse_event(
        body({"description": "x", name: 3}), extra=("id", "etag", *rest_json.SERVER_OWNED)
    )
    assert (fields, extras) == ({"description": "x"}, {name: 3})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_rest_answers_encode_as_compact_utf8_json(document: Any) -> None:
    """The encoder made once (CPython's C one, when its answer to a sample is the public
    encoder's) writes what json.dumps would, compact and in UTF-8: clients parse it back."""
    expected = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    assert rest_json.dumps(document) == expected
    assert json.loads(rest_json.dumps(document)) == document
