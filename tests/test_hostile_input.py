"""Hostile input, one regression test per class (issue 10): strings no backend can store,
bytes that are no UTF-8, digits that `str.isdigit` accepts and `int` does not. Each answers a
400 naming the field and the rule, through the real Envoy on both backends, and stores
nothing. The fuzz tests (test_fuzz_*.py) look for new members of these classes."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.errors import InvalidInput
from service.domain.parsing import loads_json, parse_digits

if TYPE_CHECKING:
    from conftest import Response, Service

LONE_SURROGATE = "a \\ud800 b"
UNSTORABLE_RULE = "must be valid Unicode text"


def violations(answer: Response) -> dict[str, str]:
    body = answer.json()
    bad_request = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    return {v["field"]: v["description"] for v in bad_request["fieldViolations"]}


@pytest.fixture(scope="module")
def key(service: Service) -> str:
    return service.create_key(f"hostile-{uuid.uuid4().hex[:6]}", "Admin")


def stored_with(service: Service, key: str, marker: str) -> int:
    """How many events of the key's tenant carry `marker` as their description."""
    query = urllib.parse.quote(json.dumps({"description": marker}))
    answer = service.request("GET", f"/events?filter={query}", key=key)
    assert answer.status == 200, answer.body
    return int(answer.json()["page"]["totalElements"])


# --- strict JSON: one loader for every body and every JSON parameter -----------------------


@given(
    prefix=st.text(max_size=5),
    surrogate=st.integers(0xD800, 0xDFFF),
    where=st.sampled_from(["value", "key", "nested"]),
)
def test_the_loader_refuses_every_lone_surrogate_escape(
    prefix: str, surrogate: int, where: str
) -> None:
    text = json.dumps(prefix)[1:-1] + f"\\u{surrogate:04x}"
    document = {
        "value": f'{{"a": "{text}"}}',
        "key": f'{{"{text}": 1}}',
        "nested": f'{{"a": [1, {{"b": "{text}"}}]}}',
    }[where]

    with pytest.raises(InvalidInput) as caught:
        loads_json(document.encode())

    (violation,) = caught.value.violations
    if where != "key":  # a bad key is named by itself
        assert violation.field == {"value": "a", "nested": "a[1].b"}[where]
    assert violation.rule.startswith(UNSTORABLE_RULE)


def test_the_loader_keeps_escaped_pairs_and_other_escapes() -> None:
    assert loads_json(b'{"a": "\\ud83d\\ude00 \\u00e9 \\u0001"}') == {"a": "\U0001f600 é \x01"}


def test_the_loader_refuses_nul_and_names_the_parameter() -> None:
    with pytest.raises(InvalidInput) as caught:
        loads_json('{"description": "a\\u0000"}', "filter")
    assert caught.value.violations[0].field == "filter.description"


def test_the_loader_reads_utf8_only() -> None:
    # json.loads would guess UTF-16 from the zero bytes and read this as {"a": 1}.
    with pytest.raises(InvalidInput) as caught:
        loads_json('{"a": 1}'.encode("utf-16-le"))
    assert caught.value.reason == "MALFORMED_JSON"


BODY_PATHS = [
    ("POST", "/events", lambda m, bad: {"description": m, "code": bad}, "code"),
    ("POST", "/events", lambda m, bad: {"description": m, bad: 1}, None),
    ("POST", "/events/find", lambda m, bad: {"query": {"term": {"description": bad}}}, None),
    ("POST", "/createEventsJobs", lambda m, bad: {"events": [{"description": bad}]}, None),
    ("POST", "/sharedEntities", lambda m, bad: {"entityId": bad, "tenantId": "x"}, "entityId"),
    ("POST", "/eventTypes", lambda m, bad: {"id": "t", "name": bad}, "name"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("method", "path", "body", "field"), BODY_PATHS)
def test_lone_surrogates_in_bodies_are_named_400s(
    service: Service, key: str, method: str, path: str, body: Any, field: str | None
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    # json.dumps would escape the backslash; the client sends the escape itself.
    raw = json.dumps(body(marker, "@BAD@")).replace("@BAD@", LONE_SURROGATE).encode()

    answer = service.request(method, path, raw, key=key)

    assert answer.status == 400, answer.body
    ((named, rule),) = violations(answer).items()
    assert rule.startswith(UNSTORABLE_RULE)
    if field is not None:
        assert named == field
    assert stored_with(service, key, marker) == 0


@pytest.mark.integration
def test_a_lone_surrogate_in_the_list_filter_is_a_named_400(service: Service, key: str) -> None:
    query = urllib.parse.quote('{"description": "' + LONE_SURROGATE + '"}')

    answer = service.request("GET", f"/events?filter={query}", key=key)

    assert answer.status == 400, answer.body
    assert list(violations(answer)) == ["filter.description"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sharedEntities", b'{"entityId": "\xff\xfe", "tenantId": "x"}'),
        ("/events", b'{"description": "\xc3\x28"}'),
        ("/events/find", b'{"query": {"term": {"code": "\xed\xa0\x80"}}}'),
    ],
)
def test_bodies_that_are_no_utf8_are_named_400s(
    service: Service, key: str, path: str, body: bytes
) -> None:
    answer = service.request("POST", path, body, key=key)

    assert answer.status == 400, answer.body
    ((field, rule),) = violations(answer).items()
    assert (field, rule.startswith("must be valid JSON")) == ("body", True)


# --- one integer parser: ASCII digits only -------------------------------------------------

UNICODE_DIGITS = st.text(
    st.characters(categories=["Nd", "No"]).filter(lambda c: not ("0" <= c <= "9")), min_size=1
)


@given(UNICODE_DIGITS)
def test_only_ascii_digits_are_integers(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_digits(text, "cursor", "must be digits")
    assert caught.value.violations[0].field == "cursor"


@pytest.mark.integration
@pytest.mark.parametrize("digits", ["²", "١٢", "\U0001d7d9"])
@pytest.mark.parametrize("parameter", ["startTime", "endTime"])
def test_unicode_digits_in_time_parameters_are_named_400s(
    service: Service, key: str, parameter: str, digits: str
) -> None:
    answer = service.request("GET", f"/events?{parameter}={urllib.parse.quote(digits)}", key=key)

    assert answer.status == 400, answer.body
    assert list(violations(answer)) == [parameter]


@pytest.mark.integration
@pytest.mark.parametrize("digits", ["²", "١٢"])
def test_unicode_digits_as_live_cursors_are_named_400s(
    service: Service, key: str, digits: str
) -> None:
    by_query = service.request("GET", f"/liveEvents?cursor={urllib.parse.quote(digits)}", key=key)
    # HTTP headers are Latin-1 on the wire; the client sends the UTF-8 bytes.
    by_header = service.request(
        "GET",
        "/liveEvents",
        key=key,
        headers={"Last-Event-ID": digits.encode().decode("latin-1")},
    )

    assert (by_query.status, list(violations(by_query))) == (400, ["cursor"])
    assert (by_header.status, list(violations(by_header))) == (400, ["Last-Event-ID"])


# --- one request's failure is its own --------------------------------------------------------

HOSTILE_BODIES = [
    b'{"description": "a \\ud800 b"}',
    b'{"description": "\xff\xfe"}',
    b'{"description": "x", "code": "\\u0000"}',
    b'{"description": "x", "a \\udfff": 1}',
]


@pytest.mark.integration
def test_hostile_writes_of_one_tenant_fail_no_valid_write_of_others(service: Service) -> None:
    writers = [service.create_key(f"writer-{uuid.uuid4().hex[:6]}", "ReadWrite") for _ in "ab"]
    attacker = service.create_key(f"attacker-{uuid.uuid4().hex[:6]}", "ReadWrite")
    marker = f"valid-{uuid.uuid4().hex}"
    per_thread = 12

    def valid_writes(key: str) -> list[int]:
        return [
            service.request("POST", "/events", {"description": marker}, key=key).status
            for _ in range(per_thread)
        ]

    def hostile_writes() -> list[int]:
        return [
            service.request("POST", "/events", body, key=attacker).status
            for body in HOSTILE_BODIES * per_thread
        ]

    with ThreadPoolExecutor(18) as pool:
        valid = [pool.submit(valid_writes, writers[i % 2]) for i in range(16)]
        hostile = [pool.submit(hostile_writes) for _ in range(2)]
        valid_statuses = [s for f in valid for s in f.result()]
        hostile_statuses = [s for f in hostile for s in f.result()]

    assert valid_statuses == [201] * 16 * per_thread
    assert hostile_statuses == [400] * 2 * per_thread * 4
    assert [stored_with(service, key, marker) for key in writers] == [8 * per_thread] * 2
    everything = service.request("GET", "/events", key=attacker).json()
    assert everything["page"]["totalElements"] == 0
