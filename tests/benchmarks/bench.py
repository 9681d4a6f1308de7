"""`make bench`: create rates over gRPC and REST against a no-database RPC, and server memory.

One run, one fresh SQLite database in a temporary directory, one real `eventmgmt serve`
(gRPC server + Envoy gateway) in a child process. Load generators run in separate processes
(this same file in worker mode, or `wrk` for REST) so they do not share the server's GIL:

  1. gRPC CreateEvent rate, 64 calls in flight (grpc.aio client).
  2. grpc.health.v1.Health/Check rate on the same server, same client and concurrency:
     same server, transport and interceptor chain, no database.
  3. REST POST /events through Envoy, 64 connections (wrk if installed, else a Python
     asyncio HTTP/1.1 keep-alive client; the report says which).
  4. Ratios gRPC create / no-db (target >= 0.80) and REST / gRPC (target >= 0.80).
  5. Server RSS (VmRSS of the Python server process, not Envoy) once 100,000 events are
     stored (target < 150 MB); the rest of the 100k is inserted over gRPC at high concurrency.

The machine has 2 cores shared by server, Envoy and client: absolute rates are noisy, the
ratios measured within one run are what to compare. CPU seconds per phase and process are
printed so one can see who was saturated.

Overrides (flags or env): --quick, --duration/BENCH_DURATION (seconds per rate, split over
--rounds/BENCH_ROUNDS interleaved rounds), --warmup/BENCH_WARMUP (per round),
--concurrency/BENCH_CONCURRENCY, --channels/BENCH_CHANNELS, --fill-total/BENCH_FILL_TOTAL,
--fill-concurrency/BENCH_FILL_CONCURRENCY, --rest-client/BENCH_REST_CLIENT (auto|wrk|python),
--keep (keep the temp dir and print its path), --strict (exit 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EVENTMGMT = [sys.executable, "-m", "service"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
DESCRIPTION = "Error happened in the engine (bench)"
REST_BODY = json.dumps({"description": DESCRIPTION, "severity": 3})

KINDS = ("health", "grpc", "rest")
LABELS = {
    "health": "gRPC Health/Check (no db)",
    "grpc": "gRPC CreateEvent",
    "rest": "REST POST /events ({rest_client})",
}
TARGET_CREATE_VS_NODB = 0.80
TARGET_REST_VS_GRPC = 0.80
TARGET_RSS_MB = 150.0
TARGET_RSS_EVENTS = 100_000


# --------------------------------------------------------------------------- process stats


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a live process, in seconds (None when it is gone or unknown)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class CpuWindow:
    """CPU seconds used by some processes between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.begin: dict[str, float | None] = {}
        self.used: dict[str, float | None] = {}

    def start(self) -> None:
        self.begin = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float | None]:
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.begin.get(name)
            self.used[name] = None if now is None or then is None else now - then
        return self.used


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99)}


# --------------------------------------------------------------------------- gRPC worker


async def grpc_load(args: argparse.Namespace) -> dict[str, Any]:
    """Keeps `concurrency` unary calls in flight over `channels` channels. Duration mode:
    warm up, then count completions inside the window. Count mode: stop after `count` OKs."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

    channels = [grpc.aio.insecure_channel(args.target) for _ in range(args.channels)]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 10)
    metadata = (("x-api-key", args.key),)
    if args.method == "health":
        stubs = [health_pb2_grpc.HealthStub(c).Check for c in channels]
        request: Any = health_pb2.HealthCheckRequest()
        call_metadata: Any = None
    else:
        stubs = [event_service_pb2_grpc.EventServiceStub(c).CreateEvent for c in channels]
        request = event_service_pb2.CreateEventRequest(
            event=event_pb2.Event(description=DESCRIPTION, severity=3)
        )
        call_metadata = metadata

    counting = args.count > 0
    measuring = counting  # count mode has no warm-up
    state = {"ok": 0, "errors": 0, "issued": 0}
    errors: dict[str, int] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def client(index: int) -> None:
        call = stubs[index % len(stubs)]
        while not stop.is_set():
            if counting:
                if state["issued"] >= args.count:
                    return
                state["issued"] += 1
            started = time.perf_counter()
            try:
                await call(request, metadata=call_metadata, timeout=30)
            except grpc.aio.AioRpcError as error:
                if measuring and not stop.is_set():
                    state["errors"] += not counting
                    code = error.code().name
                    errors[code] = errors.get(code, 0) + 1
                if counting:
                    state["issued"] -= 1  # retry it, unless the server keeps failing
                    state["errors"] += 1
                    if state["errors"] > max(100, args.count // 10):
                        raise
                continue
            if measuring and not stop.is_set():
                state["ok"] += 1
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(client(i)) for i in range(args.concurrency)]
    window = CpuWindow({"server": args.server_pid, "envoy": args.envoy_pid})
    if not counting:
        await asyncio.sleep(args.warmup)
        measuring = True
    window.start()
    client_cpu0 = time.process_time()
    t0 = time.perf_counter()
    if counting:
        await asyncio.gather(*tasks)
    else:
        await asyncio.sleep(args.duration)
        stop.set()
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - client_cpu0
    cpu = window.stop()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {
        "ok": state["ok"],
        "errors": state["errors"],
        "error_codes": errors,
        "seconds": elapsed,
        "rate": state["ok"] / elapsed,
        "cpu": {**cpu, "client": client_cpu},
        **percentiles(latencies),
    }


# --------------------------------------------------------------------------- REST worker


async def rest_load(args: argparse.Namespace) -> dict[str, Any]:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: one connection per
    concurrent client, one POST at a time on each."""
    body = REST_BODY.encode()
    request = (
        f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{args.rest_port}\r\n"
        f"Content-Type: application/json\r\nx-api-key: {args.key}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    measuring = False
    state = {"ok": 0, "errors": 0}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def read_response(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await reader.readexactly(length)
        return status

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", args.rest_port)
        try:
            while not stop.is_set():
                started = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                if measuring and not stop.is_set():
                    if status == 201:
                        state["ok"] += 1
                        latencies.append(time.perf_counter() - started)
                    else:
                        state["errors"] += 1
                        statuses[str(status)] = statuses.get(str(status), 0) + 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(args.concurrency)]
    window = CpuWindow({"server": args.server_pid, "envoy": args.envoy_pid})
    await asyncio.sleep(args.warmup)
    measuring = True
    window.start()
    client_cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.sleep(args.duration)
    stop.set()
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - client_cpu0
    cpu = window.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "ok": state["ok"],
        "errors": state["errors"],
        "error_codes": statuses,
        "seconds": elapsed,
        "rate": state["ok"] / elapsed,
        "cpu": {**cpu, "client": client_cpu},
        **percentiles(latencies),
    }


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.py _worker")
    parser.add_argument("kind", choices=["grpc", "rest"])
    parser.add_argument("--method", choices=["create", "health"], default="create")
    parser.add_argument("--target", default="")
    parser.add_argument("--rest-port", type=int, default=0)
    parser.add_argument("--key", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--envoy-pid", type=int)
    args = parser.parse_args(argv)
    run = grpc_load if args.kind == "grpc" else rest_load
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- wrk


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = {key}
"""


def _wrk_duration(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        return float("nan")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[match.group(2)]
    return float(match.group(1)) * scale


def run_wrk(
    rest_port: int,
    key: str,
    concurrency: int,
    duration: float,
    script: Path,
    pids: dict[str, int | None],
) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{rest_port}/events",
    ]
    window = CpuWindow(pids)
    window.start()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = window.stop()
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    total = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", output).group(1))  # type: ignore[union-attr]
    seconds = _wrk_duration(re.search(r"requests in ([\d.]+\w+)", output).group(1)) / 1000  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sock = re.search(r"Socket errors: (.*)", output)
    errors = int(bad.group(1)) if bad else 0
    p50 = re.search(r"\n\s+50%\s+(\S+)", output)
    p99 = re.search(r"\n\s+99%\s+(\S+)", output)
    result: dict[str, Any] = {
        "ok": total - errors,
        "errors": errors,
        "error_codes": {"non-2xx": errors, **({"socket": sock.group(1)} if sock else {})},
        "seconds": seconds,
        "rate": (total - errors) / seconds,
        "cpu": {**cpu, "client": usage.ru_utime + usage.ru_stime},
    }
    if p50 and p99:
        result.update(p50_ms=_wrk_duration(p50.group(1)), p99_ms=_wrk_duration(p99.group(1)))
    return result


# --------------------------------------------------------------------------- the service


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.db_path = work_dir / "events.db"
        self.database_url = f"sqlite:///{self.db_path}"
        self.grpc_port, self.rest_port, self.admin_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.envoy_pid: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*EVENTMGMT, "--database", self.database_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"eventmgmt {' '.join(args)} failed: {done.stderr}")
        return done.stdout.strip()

    def create_key(self, tenant: str) -> str:
        self.cli("admin", "create-tenant", tenant)
        return self.cli(
            "admin", "create-key", "--tenant", tenant, "--role", "ReadWrite", "--name", "bench"
        ).splitlines()[-1]

    def start(self) -> None:
        log = open(self.work_dir / "serve.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [
                *EVENTMGMT,
                "--database",
                self.database_url,
                "--log-level",
                "WARNING",
                "serve",
                "--grpc-address",
                f"127.0.0.1:{self.grpc_port}",
                "--rest-port",
                str(self.rest_port),
                "--admin-port",
                str(self.admin_port),
                "--data-dir",
                str(self.work_dir / "data"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            if "Press Ctrl-C to stop." in self.log_tail():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"server not ready in 60 s: {self.log_tail()}")
        envoys = [p for p in child_pids(self.pid) if "envoy" in process_name(p)]
        self.envoy_pid = envoys[0] if envoys else None

    def log_tail(self) -> str:
        try:
            return (self.work_dir / "serve.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def rss_kb(self) -> tuple[int | None, int | None]:
        return status_kb(self.pid, "VmRSS"), status_kb(self.pid, "VmHWM")

    def stored_events(self) -> int:
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return int(connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        finally:
            connection.close()

    def post_once(self, key: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}/events",
            data=REST_BODY.encode(),
            method="POST",
            headers={"Content-Type": "application/json", "x-api-key": key},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code)


# --------------------------------------------------------------------------- the run


def run_worker(kind: str, service: Service, key: str, **options: Any) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_worker",
        kind,
        "--key",
        key,
        "--target",
        f"127.0.0.1:{service.grpc_port}",
        "--rest-port",
        str(service.rest_port),
        "--server-pid",
        str(service.pid),
    ]
    if service.envoy_pid is not None:
        argv += ["--envoy-pid", str(service.envoy_pid)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr[-3000:]}\n{service.log_tail()}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def describe(name: str, result: dict[str, Any]) -> None:
    cpu = result.get("cpu", {})
    seconds = result["seconds"] or 1.0
    shares = "  ".join(
        f"{who} {100 * used / seconds:.0f}%" for who, used in cpu.items() if used is not None
    )
    server_us = (cpu.get("server") or 0) / max(1, result["ok"]) * 1e6
    latency = (
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
        if "p50_ms" in result
        else ""
    )
    print(
        f"  {name:<36} {result['rate']:>8.0f}/s  ({result['ok']} ok, {result['errors']} errors "
        f"in {result['seconds']:.1f} s; {latency})",
        flush=True,
    )
    print(f"  {'':<36} CPU: {shares}; server {server_us:.0f} µs CPU per call", flush=True)
    if result["errors"]:
        print(f"  {'':<36} errors: {result['error_codes']}", flush=True)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def env_default(name: str, fallback: Any) -> Any:
    value = os.environ.get(name)
    return type(fallback)(value) if value not in (None, "") else fallback


def main(argv: list[str]) -> int:
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run: 3 s windows, 1 s warm-up, 20,000 events for memory",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per rate, all rounds"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--concurrency", type=int, default=env_default("BENCH_CONCURRENCY", 64))
    parser.add_argument("--channels", type=int, default=env_default("BENCH_CHANNELS", 1))
    parser.add_argument("--fill-total", type=int, default=None)
    parser.add_argument(
        "--fill-concurrency", type=int, default=env_default("BENCH_FILL_CONCURRENCY", 64)
    )
    parser.add_argument(
        "--rest-client",
        choices=["auto", "wrk", "python"],
        default=env_default("BENCH_REST_CLIENT", "auto"),
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("BENCH_QUICK") in ("1", "true")
    duration = args.duration or env_default("BENCH_DURATION", 3.0 if quick else 12.0)
    rounds = max(1, args.rounds or env_default("BENCH_ROUNDS", 1 if quick else 3))
    per_round = max(1, round(duration / rounds))  # wrk takes whole seconds
    warmup = args.warmup if args.warmup is not None else env_default("BENCH_WARMUP", 1.0)
    fill_total = args.fill_total or env_default(
        "BENCH_FILL_TOTAL", 20_000 if quick else TARGET_RSS_EVENTS
    )

    rest_client = args.rest_client
    if rest_client == "auto":
        rest_client = "wrk" if shutil.which("wrk") else "python"
    elif rest_client == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed; using the Python client", file=sys.stderr)
        rest_client = "python"

    started = time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="eventmgmt-bench-"))
    service = Service(work_dir)
    print(
        f"eventmgmt bench: {os.cpu_count()} CPUs, {args.concurrency} in flight, "
        f"{args.channels} gRPC channel(s), {rounds} round(s) of {warmup:g} s warm-up "
        f"+ {per_round:g} s per rate, "
        f"REST client: {rest_client}, SQLite in {work_dir}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    per_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    try:
        key = service.create_key("bench")
        service.start()
        rss0, _ = service.rss_kb()
        print(
            f"  server pid {service.pid} (RSS {(rss0 or 0) / 1024:.0f} MB at start), "
            f"envoy pid {service.envoy_pid}",
            flush=True,
        )
        common = {"concurrency": args.concurrency, "duration": per_round, "warmup": warmup}

        status = service.post_once(key)
        if status != 201:
            raise RuntimeError(f"POST /events answered {status}, not 201")
        script = work_dir / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(REST_BODY), key=json.dumps(key)))
        pids = {"server": service.pid, "envoy": service.envoy_pid}

        def measure(kind: str) -> dict[str, Any]:
            if kind in ("health", "grpc"):
                method = "health" if kind == "health" else "create"
                return run_worker(
                    "grpc", service, key, method=method, channels=args.channels, **common
                )
            if rest_client == "python":
                return run_worker("rest", service, key, **common)
            if warmup > 0:
                run_wrk(service.rest_port, key, args.concurrency, warmup, script, pids)
            return run_wrk(service.rest_port, key, args.concurrency, per_round, script, pids)

        # The three rates are taken in interleaved rounds, so a burst of load from anything
        # else on the machine hits all of them alike; each ratio is the median of its rounds.
        for number in range(1, rounds + 1):
            for kind in KINDS:
                result = measure(kind)
                per_kind[kind].append(result)
                describe(
                    f"{LABELS[kind].format(rest_client=rest_client)} [{number}/{rounds}]", result
                )

        stored = service.stored_events()
        missing = max(0, fill_total - stored)
        fill_seconds = 0.0
        if missing:
            print(
                f"  filling: {stored} events stored, inserting {missing} more over gRPC "
                f"({args.fill_concurrency} in flight)...",
                flush=True,
            )
            fill = run_worker(
                "grpc",
                service,
                key,
                method="create",
                count=missing,
                concurrency=args.fill_concurrency,
                channels=max(2, args.channels),
            )
            results["fill"] = fill
            fill_seconds = fill["seconds"]
            describe("gRPC CreateEvent (fill)", fill)
        time.sleep(1.0)
        stored = service.stored_events()
        rss, hwm = service.rss_kb()
        results["memory"] = {
            "events": stored,
            "rss_kb": rss,
            "hwm_kb": hwm,
            "fill_seconds": fill_seconds,
        }
    finally:
        service.stop()
        if args.keep:
            print(f"  kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    def rate(kind: str) -> float:
        runs = per_kind[kind]
        return sum(r["ok"] for r in runs) / max(1e-9, sum(r["seconds"] for r in runs))

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(
            a["rate"] / b["rate"] if b["rate"] else 0.0
            for a, b in zip(per_kind[top], per_kind[bottom], strict=True)
        )

    grpc_rate, nodb_rate, rest_rate = rate("grpc"), rate("health"), rate("rest")
    create_ratio, rest_ratio = ratio("grpc", "health"), ratio("rest", "grpc")
    spread = {
        name: ", ".join(
            f"{a['rate'] / b['rate']:.2f}"
            for a, b in zip(per_kind[top], per_kind[bottom], strict=True)
            if b["rate"]
        )
        for name, top, bottom in (("create", "grpc", "health"), ("rest", "rest", "grpc"))
    }
    memory = results["memory"]
    rss_mb = (memory["rss_kb"] or 0) / 1024
    memory_ok = None if memory["events"] < TARGET_RSS_EVENTS else rss_mb < TARGET_RSS_MB
    checks = [create_ratio >= TARGET_CREATE_VS_NODB, rest_ratio >= TARGET_REST_VS_GRPC, memory_ok]

    rows = [
        ("gRPC CreateEvent", f"{grpc_rate:,.0f} events/s", "", ""),
        ("gRPC Health/Check (no db)", f"{nodb_rate:,.0f} calls/s", "", ""),
        (f"REST POST /events ({rest_client})", f"{rest_rate:,.0f} events/s", "", ""),
        (
            "gRPC create / no-db",
            f"{create_ratio:.2f}" + (f" ({spread['create']})" if rounds > 1 else ""),
            f">= {TARGET_CREATE_VS_NODB:.2f}",
            verdict(checks[0]),
        ),
        (
            "REST / gRPC create",
            f"{rest_ratio:.2f}" + (f" ({spread['rest']})" if rounds > 1 else ""),
            f">= {TARGET_REST_VS_GRPC:.2f}",
            verdict(checks[1]),
        ),
        (
            f"server RSS, {memory['events']:,} events",
            f"{rss_mb:.0f} MB (peak {(memory['hwm_kb'] or 0) / 1024:.0f})",
            f"< {TARGET_RSS_MB:.0f} MB at {TARGET_RSS_EVENTS:,}",
            verdict(memory_ok),
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"\nResults ({args.concurrency} in flight, {time.monotonic() - started:.0f} s total):")
    for row in rows:
        print(
            "  "
            + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if memory_ok is None:
        print(
            f"  (memory target applies at {TARGET_RSS_EVENTS:,} events; "
            "run without --quick to check it)"
        )
    return 1 if args.strict and False in checks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
