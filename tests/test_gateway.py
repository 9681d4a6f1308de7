"""The Envoy REST gateway's own behaviour, checked against the real Envoy binary."""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.api import httpbody_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.launcher import (
    Envoy,
    EnvoyStartError,
    GatewaySettings,
    find_envoy,
    render_config,
)
from gateway.routes import http_bindings
from helpers import free_port
from service.catalog import TRANSCODED
from service.protogen import build_descriptor_set
from service.rest_headers import content_type_with
from service.v1 import auth_service_pb2 as auth_pb2
from service.v1 import auth_service_pb2_grpc as auth_grpc
from service.v1 import event_rest_service_pb2 as rest_pb2
from service.v1 import event_rest_service_pb2_grpc as rest_grpc

pytestmark = pytest.mark.integration

MAX_REQUEST_BYTES = 64 * 1024
GATEWAY_TOKEN = "gateway-token-of-these-tests"
# The canned upstream's largest answer is 4 MiB: over this limit.
MAX_RESPONSE_BYTES = 1024 * 1024


@dataclass
class Call:
    method: str
    request: object
    metadata: dict[str, str]


@dataclass
class CannedUpstream(rest_grpc.EventRestServiceServicer):
    """A test-only upstream standing in for the real service.

    It answers with canned bytes and errors and records what arrived, so that the gateway's own
    behaviour (transcoding, status rewriting, error shapes) is checked in isolation; the real
    service's end-to-end tests through Envoy are written elsewhere.
    """

    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, method: str, request: object, context: grpc.ServicerContext) -> None:
        metadata = {
            key: value for key, value in context.invocation_metadata() if isinstance(value, str)
        }
        with self.lock:
            self.calls.append(Call(method, request, metadata))

    def last_call(self) -> Call:
        with self.lock:
            return self.calls[-1]

    def RestCreateEvent(self, request, context):
        self._record("RestCreateEvent", request, context)
        context.send_initial_metadata(
            (
                ("x-http-code", "201"),
                ("location", "http://gateway.test/events/e1"),
            )
        )
        return httpbody_pb2.HttpBody(
            content_type="application/hal+json", data=b'{"id": "e1", "value": 1.0}'
        )

    def RestGetEvent(self, request, context):
        self._record("RestGetEvent", request, context)
        if request.id in ERRORS:
            context.abort_with_status(rpc_status.to_status(ERRORS[request.id]))
        if request.id == "late-error":
            # Metadata with a success status first, then a failure: the failure must win.
            context.send_initial_metadata((("x-http-code", "201"),))
            context.abort_with_status(rpc_status.to_status(ERRORS["invalid"]))
        if request.id == "slow":
            time.sleep(2)
        if request.id == "huge":
            return httpbody_pb2.HttpBody(
                content_type="application/json", data=b'"' + b"x" * (4 * 1024 * 1024) + b'"'
            )
        return httpbody_pb2.HttpBody(
            content_type="application/json", data=json.dumps({"id": request.id}).encode()
        )

    def RestListEvents(self, request, context):
        self._record("RestListEvents", request, context)
        return httpbody_pb2.HttpBody(content_type="application/hal+json", data=b'{"page": {}}')

    def RestUpdateEvent(self, request, context):
        self._record("RestUpdateEvent", request, context)
        # The answer's headers in its content type, as the service sends them.
        headers = [("etag", '"4"'), ("warning", '299 - "not updatable; kept: createTime"')]
        return httpbody_pb2.HttpBody(
            content_type=content_type_with("application/json", headers), data=request.body.data
        )

    def RestAcknowledgeEvent(self, request, context):
        self._record("RestAcknowledgeEvent", request, context)
        return httpbody_pb2.HttpBody(content_type="application/json", data=b'{"ok": true}')


@dataclass
class CannedLogin(auth_grpc.AuthServiceServicer):
    """The AuthService beside the canned upstream, recording into its calls."""

    upstream: CannedUpstream

    def Login(self, request, context):
        self.upstream._record("Login", request, context)
        return auth_pb2.LoginResponse()


def _status(code: int, message: str, *details: object) -> status_pb2.Status:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code, message=message, details=packed)


ERRORS = {
    "invalid": _status(
        code_pb2.INVALID_ARGUMENT,
        "severity is not valid",
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="severity", description="unknown"
                ),
            ]
        ),
        error_details_pb2.ErrorInfo(reason="INVALID_FIELD", domain="eventmgmt"),
    ),
    "missing": _status(code_pb2.NOT_FOUND, "event not found"),
    "forbidden": _status(code_pb2.PERMISSION_DENIED, "not your tenant"),
    "anonymous": _status(code_pb2.UNAUTHENTICATED, "no api key"),
}


@dataclass
class Gateway:
    envoy: Envoy
    upstream: CannedUpstream

    @property
    def port(self) -> int:
        return self.envoy.settings.listen_port


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[tuple[CannedUpstream, int]]:
    upstream = CannedUpstream()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rest_grpc.add_EventRestServiceServicer_to_server(upstream, server)
    auth_grpc.add_AuthServiceServicer_to_server(CannedLogin(upstream), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield upstream, port
    server.stop(grace=None).wait()


def _settings(work_dir: Path, grpc_port: int) -> GatewaySettings:
    return GatewaySettings(
        listen_host="127.0.0.1",
        listen_port=free_port(),
        admin_port=free_port(),
        grpc_host="127.0.0.1",
        grpc_port=grpc_port,
        work_dir=work_dir,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_response_bytes=MAX_RESPONSE_BYTES,
        token=GATEWAY_TOKEN,
    )


@pytest.fixture(scope="module")
def gateway(upstream_server, tmp_path_factory) -> Iterator[Gateway]:
    upstream, grpc_port = upstream_server
    with Envoy(_settings(tmp_path_factory.mktemp("gateway"), grpc_port)) as envoy:
        yield Gateway(envoy, upstream)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


def send(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


def assert_no_grpc_headers(answer: Answer) -> None:
    leaked = [name for name in answer.headers if name.startswith("grpc-") or name == "x-http-code"]
    assert not leaked, answer.headers


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize("worker_ports", [(), (50061, 50062)], ids=["one-port", "workers"])
def test_rendered_config_is_valid_for_envoy_and_carries_the_settings(tmp_path, worker_ports):
    settings = GatewaySettings(
        listen_host="0.0.0.0",
        listen_port=8080,
        admin_port=9901,
        grpc_host="service",
        grpc_port=50051,
        grpc_ports=worker_ports,
        work_dir=tmp_path,
        max_request_bytes=1234,
        services=("eventmgmt.v1.EventRestService", "eventmgmt.v1.EventService"),
    )
    descriptor = build_descriptor_set(tmp_path / "api.pb")
    config = render_config(settings, descriptor)
    (tmp_path / "envoy.yaml").write_text(config)

    validation = subprocess.run(
        [
            find_envoy(),
            "--mode",
            "validate",
            "--config-path",
            str(tmp_path / "envoy.yaml"),
            "--use-dynamic-base-id",
            "--log-level",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert validation.returncode == 0, validation.stdout + validation.stderr
    filters = re.findall(r"^          - name: ([\w.]+)", config, re.MULTILINE)
    assert filters == [
        "eventmgmt.request_guard",
        "envoy.filters.http.buffer",
        "envoy.filters.http.lua",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.router",
    ]
    assert "max_request_bytes: 1234\n" in config
    assert 'services: ["eventmgmt.v1.EventRestService", "eventmgmt.v1.EventService"]' in config
    assert f'proto_descriptor: "{descriptor.resolve()}"' in config
    assert "{address: 127.0.0.1, port_value: 9901}" in config
    upstreams = re.findall(r"\{address: service, port_value: (\d+)\}", config)
    # Both clusters (unary calls, streams) over the same endpoints.
    assert upstreams == [str(p) for p in worker_ports or (50051,)] * 2


def test_start_failure_names_the_cause_of_both_attempts(tmp_path, upstream_server):
    _, grpc_port = upstream_server
    settings = _settings(tmp_path, grpc_port)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", settings.admin_port))
        taken.listen()
        envoy = Envoy(settings)
        with pytest.raises(EnvoyStartError) as failure:
            envoy.start()
        envoy.stop()  # idempotent after a failed start
    finally:
        taken.close()
    message = str(failure.value)
    assert "did not start in 2 attempts" in message
    assert "attempt 1: envoy exited with 1" in message
    assert "attempt 2: envoy exited with 1" in message
    assert "ddress already in use" in message


def test_a_failed_start_is_tried_once_more(tmp_path, upstream_server):
    _, grpc_port = upstream_server
    settings = _settings(tmp_path, grpc_port)
    envoy = Envoy(settings)
    taken = socket.socket()
    taken.bind(("127.0.0.1", settings.admin_port))
    taken.listen()

    def free_the_port_after_the_first_failure() -> None:
        # The first attempt fails on the taken admin port; the port is freed during the pause
        # before the second attempt (RETRY_PAUSE_S).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if envoy.log_path.exists() and b"ddress already in use" in envoy.log_path.read_bytes():
                break
            time.sleep(0.01)
        taken.close()

    freer = threading.Thread(target=free_the_port_after_the_first_failure)
    freer.start()
    try:
        envoy.start()
        assert send(settings.listen_port, "GET", "/events").status == 200
    finally:
        freer.join()
        taken.close()
        envoy.stop()


def test_the_gateway_dies_with_the_process_that_started_it(tmp_path, upstream_server):
    _, grpc_port = upstream_server
    settings = _settings(tmp_path, grpc_port)
    # A parent that starts the gateway and is then killed with -9, as a server can be.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from gateway.launcher import Envoy, GatewaySettings\n"
            f"Envoy(GatewaySettings('127.0.0.1', {settings.listen_port}, {settings.admin_port},"
            f" '127.0.0.1', {grpc_port}, Path({str(tmp_path)!r}))).start()\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
        assert send(settings.listen_port, "GET", "/events").status == 200
    finally:
        parent.kill()
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", settings.listen_port)) != 0:
                return
        time.sleep(0.05)
    raise AssertionError("the gateway outlived the process that started it")


# --- success paths ------------------------------------------------------------------------


def test_post_passes_raw_json_and_the_service_chooses_201(gateway):
    sent = b'{"value": 1.0, "unknownField": {"n": 1},  "severity": "HIGH"}'
    answer = send(
        gateway.port,
        "POST",
        "/events",
        sent,
        {"Content-Type": "application/json", "X-Forwarded-Host": "evil.example"},
    )

    assert answer.status == 201
    assert answer.headers["content-type"] == "application/hal+json"
    assert answer.body == b'{"id": "e1", "value": 1.0}'
    assert answer.headers["location"] == "http://gateway.test/events/e1"
    assert_no_grpc_headers(answer)
    call = gateway.upstream.last_call()
    assert call.method == "RestCreateEvent"
    assert call.request.body.data == sent
    assert call.request.body.content_type == "application/json"
    # The client's own value is replaced: links must name the host the client really used.
    assert call.metadata["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"


def test_put_passes_path_id_and_raw_body(gateway):
    answer = send(
        gateway.port,
        "PUT",
        "/events/e7",
        b'{"acknowledged": true}',
        {"Content-Type": "application/json", "If-Match": '"3"'},
    )

    assert answer.status == 200
    assert answer.body == b'{"acknowledged": true}'
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["etag"] == '"4"'
    assert answer.headers["warning"] == '299 - "not updatable; kept: createTime"'
    call = gateway.upstream.last_call()
    assert (call.method, call.request.id) == ("RestUpdateEvent", "e7")
    assert call.metadata["if-match"] == '"3"'
    assert_no_grpc_headers(answer)


def test_list_maps_query_parameters_including_repeated_sort(gateway):
    answer = send(gateway.port, "GET", "/events?page=1&size=5&sort=timestamp,desc&sort=severity")

    assert answer.status == 200
    assert answer.headers["content-type"] == "application/hal+json"
    assert_no_grpc_headers(answer)
    request = gateway.upstream.last_call().request
    assert isinstance(request, rest_pb2.RestListEventsRequest)
    assert (request.page, request.size) == (1, 5)
    assert list(request.sort) == ["timestamp,desc", "severity"]


def test_acknowledge_without_body(gateway):
    answer = send(gateway.port, "POST", "/events/e9/acknowledge")

    assert (answer.status, answer.json()) == (200, {"ok": True})
    assert gateway.upstream.last_call().request.id == "e9"


def test_native_grpc_clients_pass_through_untouched(gateway):
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        reply = rest_grpc.EventRestServiceStub(channel).RestGetEvent(
            rest_pb2.RestGetEventRequest(id="e3"), timeout=5
        )
        assert json.loads(reply.data) == {"id": "e3"}
        with pytest.raises(grpc.RpcError) as failure:
            rest_grpc.EventRestServiceStub(channel).RestGetEvent(
                rest_pb2.RestGetEventRequest(id="missing"), timeout=5
            )
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        health_reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health_reply.status == health_pb2.HealthCheckResponse.SERVING


# --- errors from the service --------------------------------------------------------------


def test_invalid_argument_with_details_is_400_json(gateway):
    answer = send(gateway.port, "GET", "/events/invalid")

    assert answer.status == 400
    body = answer.json()
    assert body["code"] == code_pb2.INVALID_ARGUMENT
    assert body["message"] == "severity is not valid"
    types = [detail["@type"] for detail in body["details"]]
    assert types == [
        "type.googleapis.com/google.rpc.BadRequest",
        "type.googleapis.com/google.rpc.ErrorInfo",
    ]
    violation = body["details"][0]["fieldViolations"][0]
    assert (violation["field"], violation["description"]) == ("severity", "unknown")
    assert_no_grpc_headers(answer)


@pytest.mark.parametrize(
    ("event_id", "status", "code"),
    [
        ("missing", 404, code_pb2.NOT_FOUND),
        ("forbidden", 403, code_pb2.PERMISSION_DENIED),
        ("anonymous", 401, code_pb2.UNAUTHENTICATED),
    ],
)
def test_grpc_errors_map_to_http_statuses(gateway, event_id, status, code):
    answer = send(gateway.port, "GET", f"/events/{event_id}")

    assert answer.status == status
    assert answer.json()["code"] == code
    assert_no_grpc_headers(answer)


def test_error_after_x_http_code_metadata_keeps_the_error_status(gateway):
    answer = send(gateway.port, "GET", "/events/late-error")

    assert answer.status == 400
    assert answer.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert_no_grpc_headers(answer)


# --- errors from Envoy itself -------------------------------------------------------------


def test_unknown_query_parameter_is_400_json(gateway):
    answer = send(gateway.port, "GET", "/events?page=1&sizee=5")

    assert answer.status == 400
    body = answer.json()
    assert body["code"] == code_pb2.INVALID_ARGUMENT
    assert "sizee" in body["message"]


def test_bad_query_value_is_400_json(gateway):
    answer = send(gateway.port, "GET", "/events?page=first")

    assert answer.status == 400
    assert answer.json()["code"] == code_pb2.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("DELETE", "/events/x/y/z"),
        # A plain HTTP request spelling the internal gRPC path must not reach the server raw.
        ("POST", "/eventmgmt.v1.EventRestService/RestGetEvent"),
    ],
)
def test_unrouted_requests_are_404_json(gateway, method, path):
    answer = send(gateway.port, method, path)

    assert answer.status == 404
    assert answer.json() == {"code": 5, "message": "no route for this path"}


def test_body_over_the_limit_is_413_json(gateway):
    answer = send(
        gateway.port,
        "POST",
        "/events",
        b"x" * (MAX_REQUEST_BYTES + 1),
        {"Content-Type": "application/json"},
    )

    assert answer.status == 413
    assert answer.json()["code"] == code_pb2.RESOURCE_EXHAUSTED


def test_response_over_the_buffer_is_json(gateway):
    answer = send(gateway.port, "GET", "/events/huge")

    assert answer.status >= 500
    assert "code" in answer.json()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_device_path_allows_only_post(gateway, method):
    answer = send(gateway.port, method, "/rest/v1/api/tenants/t1/devices/d1/events?x=1")

    assert answer.status == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json() == {"error": 6, "message": "method not allowed; use POST"}


@pytest.fixture(scope="module")
def served_methods(gateway) -> dict[str, set[str]]:
    """Every REST binding's path template with the methods bound on it, from the protos."""
    bindings = http_bindings(gateway.envoy.descriptor_path, TRANSCODED)
    served: dict[str, set[str]] = {}
    for verb, template in bindings:
        served.setdefault(template, set()).add(verb)
    return served


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _matches(template: str, path: str) -> bool:
    """Whether `path` is one of `template`'s paths, segment by segment."""
    parts, segments = template.strip("/").split("/"), path.strip("/").split("/")
    for index, part in enumerate(parts):
        if part.endswith("=**}"):
            return len(segments) > index
        if index >= len(segments) or (not part.startswith("{") and part != segments[index]):
            return False
    return len(parts) == len(segments)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_method_nothing_serves_on_a_known_path_is_405_with_allow(gateway, served_methods, data):
    # A concrete path of a template: each variable one segment that is no literal of the API.
    template = data.draw(st.sampled_from(sorted(served_methods)))
    if template.startswith(DEVICE_PATH.split("/t1/")[0]):
        return  # the device path answers its own 405 (test_device_path_allows_only_post)
    path = re.sub(r"\{[^}=]+=\*\*\}", "a/b", re.sub(r"\{[^}=]+\}", "x7", template))
    method = data.draw(st.sampled_from(METHODS))

    answer = send(gateway.port, method, path + "?q=1")

    # What the transcoder serves on this path: the methods of every template it matches.
    served = set().union(
        *(methods for other, methods in served_methods.items() if _matches(other, path))
    )
    if method in served:
        assert answer.status != 405, (method, path, answer)
    else:
        # Allow names what the document lists for the path: its own template's methods.
        assert answer.status == 405, (method, path, answer)
        allowed = answer.headers["allow"].split(", ")
        assert set(allowed) == served_methods[template]
        assert answer.json()["message"] == "method not allowed; use " + " or ".join(allowed)


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/console", "/console/console.js"])
def test_the_gateways_own_pages_are_get_only(gateway, path):
    assert send(gateway.port, "GET", path).status == 200
    answer = send(gateway.port, "DELETE", path)
    assert answer.status == 405
    assert answer.headers["allow"] == "GET"


def test_service_down_is_503_json(tmp_path):
    with Envoy(_settings(tmp_path, free_port())) as envoy:
        answer = send(envoy.settings.listen_port, "GET", "/events/e1")

    assert answer.status == 503
    assert answer.json()["code"] == code_pb2.UNAVAILABLE
    assert answer.headers["retry-after"] == "1"


DEVICE_PATH = "/rest/v1/api/tenants/t1/devices/d1/events"


def test_device_path_gateway_errors_have_the_device_body(gateway):
    too_big = send(
        gateway.port, "POST", DEVICE_PATH, b"x" * (MAX_REQUEST_BYTES + 1), {"Content-Type": "x"}
    )
    unknown_parameter = send(gateway.port, "POST", DEVICE_PATH + "?colour=red", b"{}")

    assert too_big.status == 413
    assert set(too_big.json()) == {"error", "message"} and too_big.json()["error"] == 6
    assert unknown_parameter.status == 400
    assert unknown_parameter.json()["error"] == 6
    assert "colour" in unknown_parameter.json()["message"]
    # Other paths keep the gRPC error shape.
    assert "code" in send(gateway.port, "GET", "/events?colour=red").json()


def test_device_path_with_the_service_down_is_503_error_minus_1(tmp_path):
    with Envoy(_settings(tmp_path, free_port())) as envoy:
        answer = send(envoy.settings.listen_port, "POST", DEVICE_PATH, b"{}")

    assert answer.status == 503
    assert set(answer.json()) == {"error", "message"}
    assert answer.json()["error"] == -1
    assert answer.headers["retry-after"] == "1"


# --- what a REST client may not decide (issue 10) -----------------------------------------


def test_grpc_and_envoy_control_headers_of_rest_clients_never_reach_the_service(gateway):
    answer = send(
        gateway.port,
        "GET",
        "/events/e1",
        headers={
            "grpc-timeout": "1n",
            "grpc-encoding": "gzip",
            "trace-bin": "!!!",
            "x-envoy-upstream-rq-timeout-ms": "1",
            "x-envoy-retry-on": "5xx",
            "x-eventmgmt-refused-field": "id",
            "x-eventmgmt-gateway": "forged",
            "x-custom": "kept",
        },
    )

    assert answer.status == 200, answer.body
    metadata = gateway.upstream.last_call().metadata
    assert metadata["x-custom"] == "kept"
    # The gateway's token goes to logins only (below), and a client's never.
    sent = [n for n in metadata if n.startswith(("grpc-", "x-envoy-u", "x-envoy-r", "x-eventmgmt"))]
    assert sent == [] and "trace-bin" not in metadata


def test_envoys_own_request_headers_that_the_service_never_reads_are_not_sent(gateway):
    # Each metadata entry costs the service on every call.
    assert send(gateway.port, "GET", "/events/e1").status == 200

    metadata = gateway.upstream.last_call().metadata
    assert "x-envoy-expected-rq-timeout-ms" not in metadata
    assert "x-envoy-original-method" not in metadata
    assert metadata["x-envoy-original-path"] == "/events/e1"


def test_a_login_gets_the_peers_address_vouched_for_by_the_gateways_token(gateway):
    answer = send(
        gateway.port,
        "POST",
        "/auth/login",
        body=b'{"username": "u", "password": "p"}',
        headers={
            "content-type": "application/json",
            "X-Forwarded-For": "203.0.113.9",
            "x-eventmgmt-gateway": "forged",
        },
    )

    assert answer.status == 200, answer.body
    call = gateway.upstream.last_call()
    assert call.method == "Login"
    assert call.metadata["x-forwarded-for"] == "127.0.0.1"
    assert call.metadata["x-eventmgmt-gateway"] == GATEWAY_TOKEN


def test_the_rendered_config_holding_the_token_is_the_owners_alone(gateway):
    config = gateway.envoy.config_path
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert GATEWAY_TOKEN in config.read_text()


def test_forwarded_headers_are_the_gateways_never_the_clients(gateway):
    answer = send(
        gateway.port,
        "GET",
        "/events/e1",
        headers={
            "X-Forwarded-Proto": "https://evil.example/x?",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-For": "203.0.113.9",
        },
    )

    assert answer.status == 200
    metadata = gateway.upstream.last_call().metadata
    # The service's default scheme, http, is the listener's.
    assert "x-forwarded-proto" not in metadata
    assert metadata["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    # Not vouched for by the gateway's token, so the service believes no address here.
    assert "x-eventmgmt-gateway" not in metadata


@pytest.mark.parametrize("host", ["a@b", "evil.example/x?", "a b", "x:y:z", "[::1]x"])
def test_a_malformed_host_is_a_400(gateway, host):
    calls = len(gateway.upstream.calls)
    answer = send(gateway.port, "GET", "/events/e1", headers={"Host": host})

    assert answer.status == 400
    assert answer.json()["code"] == code_pb2.INVALID_ARGUMENT
    # Envoy's HTTP/1 codec refuses some of them itself, with no field to name.
    if "details" in answer.json():
        assert _violations(answer.json()) == {"Host": "must be host or host:port"}
    assert len(gateway.upstream.calls) == calls


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/events/%FF%FE", "id"),
        ("/events?code=%FF", "code"),
        ("/events?co%C3de=1", "query parameter name"),
        ("/sharedEntities/e1/tenants/%ED%A0%80", "tenantId"),
        ("/rest/v1/api/tenants/t%F4%90%80%80/devices/d1/events", "tenantId"),
        ("/no%C0%AFsuch/path", "path"),
    ],
)
def test_percent_escapes_that_are_no_utf8_are_named_400s(gateway, path, field):
    calls = len(gateway.upstream.calls)
    answer = send(gateway.port, "GET", path)

    assert answer.status == 400
    assert len(gateway.upstream.calls) == calls
    if path.startswith("/rest/v1/"):  # the device path's error shape (docs/device-api.md#errors)
        assert answer.json() == {
            "error": 6,
            "message": f"{field}: must be UTF-8 once percent-decoded",
        }
    else:
        assert answer.json()["code"] == code_pb2.INVALID_ARGUMENT
        assert _violations(answer.json()) == {field: "must be UTF-8 once percent-decoded"}


def test_valid_utf8_escapes_pass_through(gateway):
    answer = send(gateway.port, "GET", "/events/caf%C3%A9%F0%9F%98%80")

    assert answer.status == 200
    assert gateway.upstream.last_call().request.id == "café😀"


# HTTP token characters that gRPC metadata names do not allow.
_NOT_IN_GRPC_NAMES = "!#$%&'*+^`|~"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.tuples(
        st.text("abcxyz019-_.", max_size=5),
        st.text(_NOT_IN_GRPC_NAMES, min_size=1, max_size=3),
        st.text("abcxyz019-_." + _NOT_IN_GRPC_NAMES, max_size=5),
    ).map("".join)
)
def test_header_names_that_grpc_cannot_carry_are_named_400s(gateway, name):
    calls = len(gateway.upstream.calls)
    answer = send(gateway.port, "GET", "/events/e1", headers={name: "x"})

    assert answer.status == 400, answer.body
    assert len(gateway.upstream.calls) == calls
    rule = "a header name may hold only letters, digits, '-', '_' and '.'"
    assert _violations(answer.json()) == {f"header {name.lower()}": rule}


def test_header_names_grpc_can_carry_pass_through(gateway):
    answer = send(gateway.port, "GET", "/events/e1", headers={"X-Trace.Id_2": "kept"})

    assert answer.status == 200
    assert gateway.upstream.last_call().metadata["x-trace.id_2"] == "kept"


def test_request_headers_over_the_limit_are_431_json(gateway):
    answer = send(gateway.port, "GET", "/events/e1", headers={"x-big": "a" * 40_000})

    assert answer.status == 431
    assert answer.json()["code"] == code_pb2.RESOURCE_EXHAUSTED


def _violations(body: dict) -> dict[str, str]:
    bad_request = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    return {v["field"]: v["description"] for v in bad_request["fieldViolations"]}


def test_calls_beyond_the_circuit_breaker_are_503_with_retry_after(upstream_server, tmp_path):
    upstream, grpc_port = upstream_server
    settings = dataclasses.replace(_settings(tmp_path, grpc_port), max_unary_calls=1)
    with Envoy(settings) as envoy:
        port = envoy.settings.listen_port
        calls = len(upstream.calls)
        slow = threading.Thread(target=send, args=(port, "GET", "/events/slow"))
        slow.start()
        try:
            deadline = time.monotonic() + 10
            while not any(c.request.id == "slow" for c in upstream.calls[calls:]):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            answer = send(port, "GET", "/events/e1")
        finally:
            slow.join()

    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["code"] == code_pb2.UNAVAILABLE
