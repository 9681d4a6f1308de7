"""Fuzzes every REST path through the real Envoy, on both backends: generated bodies (from
the OpenAPI schemas the gateway serves, then mutated with hostile JSON, or plain garbage),
query strings, path values and headers. No answer may be 5xx, the service must keep
answering, and a refused request must leave the tenant's stored state as it was.

The routes come from gateway/openapi.json, which is generated from the google.api.http
annotations (and checked fresh by `make lint`), so a new REST path is fuzzed without a
change here. Budget and seed: see tests/fuzzing.py."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fuzzing import (
    JSON_VALUES,
    TEXT,
    Budget,
    TenantState,
    changed,
    open_state,
    seeded,
    with_hostile,
)
from hypothesis import given
from hypothesis import strategies as st

if TYPE_CHECKING:
    from helpers import Service

pytestmark = pytest.mark.integration
OPENAPI = json.loads((Path(__file__).parent.parent / "gateway" / "openapi.json").read_text())
_SCHEMAS = OPENAPI["components"]["schemas"]
# Paths that serve files rather than the API: fuzzed too, they just have nothing to parse.
_STREAMS = re.compile(r"/liveEvents$")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    header_params: tuple[str, ...]
    body_schema: dict[str, Any] | None


def _inline(schema: Any, depth: int = 0) -> Any:
    """The schema with component references replaced by the components (cut at depth 4,
    where any JSON value will do)."""
    if isinstance(schema, list):
        return [_inline(item, depth) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if ref is not None:
        if depth > 4:
            return {}
        return _inline(_SCHEMAS[ref.rsplit("/", 1)[1]], depth + 1)
    return {k: _inline(v, depth) for k, v in schema.items() if k not in ("description",)}


def _routes() -> list[Route]:
    routes = []
    for template, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            names = {
                where: tuple(p["name"] for p in params if p["in"] == where)
                for where in ("path", "query", "header")
            }
            content = operation.get("requestBody", {}).get("content", {})
            schema = next(iter(content.values()), {}).get("schema") if content else None
            routes.append(
                Route(
                    method.upper(),
                    template,
                    names["path"],
                    names["query"],
                    names["header"],
                    _inline(schema) if schema is not None else None,
                )
            )
    return routes


ROUTES = _routes()
_BODIES: dict[str, st.SearchStrategy[Any]] = {}
_NAMES = st.text(max_size=12)


def from_schema(schema: Any) -> st.SearchStrategy[Any]:
    """Documents of (roughly) a JSON Schema: the types, properties, enums, items and bounds
    our OpenAPI schemas use. Optional members come and go; other members are added where
    the schema allows them (custom fields)."""
    if not isinstance(schema, dict) or not schema:
        return JSON_VALUES
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema.get("type", ["string", "integer", "object", "array", "boolean", "null"])
    options = []
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        if kind == "null":
            options.append(st.none())
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "integer":
            low, high = schema.get("minimum", -(2**40)), schema.get("maximum", 2**40)
            options.append(st.integers(low, high))
        elif kind == "number":
            options.append(st.floats(allow_nan=False, allow_infinity=False))
        elif kind == "string":
            options.append(st.text(max_size=schema.get("maxLength", 24)))
        elif kind == "array":
            options.append(
                st.lists(
                    from_schema(schema.get("items", {})), max_size=min(schema.get("maxItems", 3), 3)
                )
            )
        elif kind == "object":
            members = {k: from_schema(v) for k, v in schema.get("properties", {}).items()}
            extra = schema.get("additionalProperties", True)
            options.append(
                st.builds(
                    lambda fixed, more: {**more, **fixed},
                    st.fixed_dictionaries({}, optional=members),
                    st.dictionaries(_NAMES, JSON_VALUES, max_size=2) if extra else st.just({}),
                )
            )
    return st.one_of(options) if options else JSON_VALUES


def _documents(route: Route) -> st.SearchStrategy[Any]:
    key = f"{route.method} {route.template}"
    if key not in _BODIES:
        _BODIES[key] = from_schema(route.body_schema)
    return _BODIES[key]


@dataclass
class Targets:
    """Things of the fuzz tenant worth aiming at, so that requests get past "not found"."""

    tenant: str
    keys: list[str]
    event_ids: list[str]
    type_ids: list[str]
    entity_ids: list[str]
    job_ids: list[str]
    device_ids: list[str]


def _encode(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return urllib.parse.quote(raw, safe="")


@st.composite
def requests(draw: st.DrawFn, targets: Targets) -> tuple[str, str, bytes | None, dict[str, str]]:
    route = draw(st.sampled_from(ROUTES))
    path = route.template
    for name in route.path_params:
        pool = {
            "id": targets.event_ids + targets.type_ids + targets.job_ids,
            "tenantId": [targets.tenant, "globex"],
            "entityId": targets.entity_ids,
            "deviceId": targets.device_ids,
        }.get(name, [])
        value = draw(
            st.one_of(
                st.sampled_from(pool or ["x"]),
                TEXT,
                st.binary(max_size=8),
                st.uuids().map(str),
            )
        )
        path = path.replace("{" + name + "}", _encode(value) or "x")
    query: list[tuple[str, str]] = []
    names = list(route.query_params) or ["q"]
    for name in draw(st.lists(st.sampled_from([*names, "unknownParam", "page_size"]), max_size=4)):
        value = draw(
            st.one_of(
                TEXT,
                st.integers(-(2**64), 2**64).map(str),
                st.sampled_from(["true", "false", "1", "0", "timestamp,desc", "severity,asc"]),
                JSON_VALUES.map(json.dumps),
                st.builds(
                    lambda doc, r: with_hostile(doc, r).decode("utf-8", "surrogatepass"),
                    st.dictionaries(
                        st.sampled_from(["typeId", "severity", "code", "and"]),
                        JSON_VALUES,
                        max_size=3,
                    ),
                    st.randoms(use_true_random=False),
                ),
                st.binary(max_size=8),
            )
        )
        query.append((name, _encode(value)))
    target = path + ("?" + "&".join(f"{_encode(k)}={v}" for k, v in query) if query else "")
    body: bytes | None = None
    if route.body_schema is not None or draw(st.integers(0, 9)) == 0:
        kind = draw(st.sampled_from(["schema", "schema", "hostile", "json", "bytes"]))
        if kind == "bytes" or route.body_schema is None:
            body = draw(
                st.one_of(st.binary(max_size=64), JSON_VALUES.map(lambda v: json.dumps(v).encode()))
            )
        elif kind == "json":
            body = json.dumps(draw(JSON_VALUES)).encode()
        else:
            document = draw(_documents(route))
            if kind == "hostile":
                copied = json.loads(json.dumps(document))
                body = with_hostile(copied, draw(st.randoms(use_true_random=False)))
            else:
                body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json"}
    key = draw(st.sampled_from([*targets.keys, *targets.keys, "", "not-a-key"]))
    if key:
        headers["x-api-key"] = key
    header_names = [
        *route.header_params,
        "Content-Type",
        "Prefer",
        "X-Custom",
        "Accept",
        "grpc-timeout",
        "Last-Event-ID",
        "If-Match",
        "traceparent",
    ]
    for name in draw(st.lists(st.sampled_from(header_names), max_size=3)):
        value = draw(
            st.one_of(
                TEXT,
                st.integers(-(2**64), 2**64).map(str),
                st.sampled_from(['"1"', 'W/"2"', "1S", "return=minimal"]),
            )
        )
        latin = value.encode("utf-8", "surrogatepass").decode("latin-1")
        headers[name] = re.sub(r"[\r\n\x00]", "", latin)
    return route.method, target, body, headers


@pytest.fixture(scope="module")
def targets(service: Service) -> Targets:
    tenant = f"fuzz-{uuid.uuid4().hex[:8]}"
    admin = service.create_key(tenant, "Admin")
    keys = [
        admin,
        service.create_key(tenant, "ReadWrite", "/root/sub1"),
        service.create_key(tenant, "Read"),
    ]
    service.cli("admin", "create-tenant", "globex")
    events, entities = [], []
    for n in range(3):
        entity = f"fuzz-asset-{n}"
        answer = service.request(
            "POST", "/events", {"entityId": entity, "domain": "/root/sub1"}, key=admin
        )
        assert answer.status == 201, answer.body
        events.append(answer.json()["id"])
        entities.append(entity)
    shared = service.request(
        "POST", "/sharedEntities", {"entityId": entities[0], "tenantId": "globex"}, key=admin
    )
    assert shared.status == 201, shared.body
    created_type = service.request(
        "POST",
        "/eventTypes",
        {
            "id": f"FuzzType{uuid.uuid4().hex[:6]}",
            "name": "fuzz",
            "fields": [{"name": "level", "type": "INTEGER"}],
        },
        key=admin,
    )
    assert created_type.status in (200, 201), created_type.body
    job = service.request(
        "POST", "/createEventsJobs", {"events": [{"description": "j"}]}, key=admin
    )
    assert job.status in (200, 201, 202), job.body
    return Targets(
        tenant,
        keys,
        events,
        [created_type.json()["id"]],
        entities,
        [job.json()["id"]],
        ["fuzz-device"],
    )


@pytest.fixture(scope="module")
def state(service: Service, targets: Targets) -> Iterator[TenantState]:
    opened = open_state(service.database_url, targets.tenant)
    yield opened
    opened.close()


def _send(
    service: Service,
    method: str,
    target: str,
    body: bytes | None,
    headers: dict[str, str],
    stream: bool,
) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", service.rest_port, timeout=30)
    try:
        connection.request(method, target, body=body, headers=headers)
        answer = connection.getresponse()
        if not stream or answer.status != 200:
            answer.read()
        return answer.status
    finally:
        connection.close()


def test_fuzz_every_rest_path(service: Service, targets: Targets, state: TenantState) -> None:
    budget = Budget(f"REST fuzz ({service.database_url.split(':')[0]})")
    before = [state.digest()]

    def make_test() -> Callable[[], None]:
        @given(request=requests(targets))
        def fuzz(request: tuple[str, str, bytes | None, dict[str, str]]) -> None:
            if budget.spent:
                return
            method, target, body, headers = request
            stream = bool(_STREAMS.search(target.split("?", 1)[0]))
            try:
                status = _send(service, method, target, body, headers, stream)
            except (OSError, http.client.HTTPException) as error:
                raise AssertionError(seeded(f"{method} {target}: no answer ({error!r})")) from None
            budget.record(str(status))
            if status >= 500:
                raise AssertionError(seeded(f"{status} for {method} {target}: {body!r:.300}"))
            after = state.digest() if method != "GET" else before[0]
            if status >= 400 and after != before[0]:
                tables = changed(before[0], after)
                raise AssertionError(
                    seeded(f"refused {method} {target} ({status}) changed {tables}")
                )
            before[0] = after

        return fuzz

    budget.run(make_test)
    still = service.request("GET", "/events", key=targets.keys[0])
    assert still.status == 200, seeded(f"the service stopped answering: {still.status}")
    assert budget.sent > 0
