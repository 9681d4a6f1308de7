"""Instructions per call of the server process, counted by valgrind's callgrind: a figure that
does not depend on what else the machine is doing (the rates of `bench.py` do).

One fresh SQLite database in a temporary directory; one real `eventmgmt serve` (its Envoy
gateway outside valgrind) run under `valgrind --tool=callgrind --instr-atstart=no`. For each
kind of call: a warm-up, then instrumentation on with zeroed counters, --calls calls driven by
h2load (gRPC; REST over HTTP/1.1 through Envoy), then a dump; the dump's total instructions (every
thread of the server: the event loop, gRPC's pollers, the writer) divided by the calls.

Each thread is counted apart (--separate-threads), and the event loop's thread, where grpc.aio
and every handler run and which holds the interpreter's lock for most of what it does, is
broken down by the library its instructions ran in. That thread bounds a process's rate: the
other threads' SQLite and gRPC core run beside it on another core.

Needs valgrind and h2load (`apt-get install valgrind nghttp2-client`). Slow (the server
runs some 50 times slower under callgrind): a few minutes. Flags: --calls, --only kind,...,
--keep (keeps the dumps, for callgrind_annotate).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import figures
from bench import (
    DESCRIPTION,
    LABELS,
    REST_BODY,
    Service,
    grpc_frame,
    process_name,
)

KINDS = ("health", "grpc_create", "grpc_get", "rest_create", "rest_get", "ingest")
# Streamed ingest is counted per event: each h2load request is one IngestEvents stream of
# INGEST_FRAMES batches of 100 events, and --calls / INGEST_CALLS_PER_STREAM streams are sent.
INGEST_FRAMES = 10
INGEST_CALLS_PER_STREAM = 100


class CallgrindService(Service):
    """The bench's service, its server process run under callgrind."""

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir, workers=1)  # one process: the one under callgrind
        self.out = work_dir / "callgrind.out"

    def start(self) -> None:
        import bench

        original = bench.EVENTMGMT
        bench.EVENTMGMT = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            f"--callgrind-out-file={self.out}",
            *original,
        ]
        try:
            super().start()
        finally:
            bench.EVENTMGMT = original

    def python_pid(self) -> int:
        # valgrind execs in place: the Popen's pid is the server's.
        return self.pid

    def control(self, *args: str) -> str:
        done = subprocess.run(
            ["callgrind_control", *args, str(self.python_pid())],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return done.stdout


def h2load(port: int, key: str, path: str, body: Path, calls: int) -> str:
    return subprocess.run(
        [
            "h2load",
            "-t1",
            "-c4",
            "-m8",
            "-n",
            str(calls),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-H",
            f"x-api-key: {key}",
            "-d",
            str(body),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout


def h1load(port: int, key: str, path: str, body: Path | None, calls: int) -> str:
    """REST calls through Envoy, HTTP/1.1 on 4 connections (h2load --h1 counts exactly; wrk
    runs for a duration): POST with `body`, else GET."""
    return subprocess.run(
        [
            "h2load",
            "--h1",
            "-t1",
            "-c4",
            "-n",
            str(calls),
            "-H",
            "content-type: application/json",
            "-H",
            f"x-api-key: {key}",
            *(["-d", str(body)] if body is not None else []),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout


def succeeded(output: str) -> int:
    """Calls answered 2xx (gRPC errors also answer 200: the kinds measured here succeed)."""
    done = re.search(r"status codes: (\d+) 2xx", output)
    if not done:
        raise RuntimeError(f"cannot read h2load's report:\n{output}")
    return int(done.group(1))


DUMP = re.compile(r"callgrind\.out\.(\d+)(?:-(\d+))?$")
# The libraries of the loop thread's instructions, by what their file names contain.
PARTS = (
    ("interpreter", ("libpython", "Python-3.", "/include/python3.")),
    ("gRPC core", ("cygrpc",)),
    ("protobuf", ("_message.abi3",)),
    ("SQLite", ("libsqlite3", "_sqlite3")),
    ("uvloop", ("uvloop", "loop.cpython")),
    ("libc", ("libc.so", "ld-linux")),
    ("libcrypto", ("libcrypto",)),
)


def collect_dump(work: Path, kind: str) -> dict[int, Path]:
    """The newest dump's per-thread files (`callgrind.out.<n>-<thread>`), renamed after the kind:
    thread number -> file. Thread 1 is the main thread, which runs the event loop."""
    numbered: dict[int, dict[int, Path]] = {}
    for path in work.glob("callgrind.out.*"):
        match = DUMP.match(path.name)
        if match:
            numbered.setdefault(int(match.group(1)), {})[int(match.group(2) or 1)] = path
    threads = numbered[max(numbered)]
    return {
        thread: path.rename(work / f"{kind}.out-{thread:02d}")
        for thread, path in sorted(threads.items())
    }


def total_instructions(dump: Path) -> int:
    """The dump's `summary:` (or `totals:`) line."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


def breakdown(dump: Path) -> dict[str, int]:
    """The dump's instructions by library (PARTS, else `other`), from callgrind_annotate."""
    listing = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    parts = dict.fromkeys([name for name, _ in PARTS] + ["other"], 0)
    for line in listing.splitlines():
        match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)", line)
        if not match or "PROGRAM TOTALS" in line:
            continue
        where = match.group(2)
        name = next((n for n, marks in PARTS if any(m in where for m in marks)), "other")
        parts[name] += int(match.group(1).replace(",", ""))
    return parts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--only", default=",".join(KINDS))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool}: apt-get install valgrind nghttp2-client")
    kinds = [k for k in args.only.split(",") if k]
    work = Path(tempfile.mkdtemp(prefix="eventmgmt-callgrind-"))
    service = CallgrindService(work)
    results: dict[str, tuple[float, float]] = {}  # kind: (all threads, loop) per call
    try:
        key = service.create_key("bench")
        service.start()
        assert process_name(service.pid)
        event_id = service.post_once(key)["id"]
        from service.v1 import event_pb2, event_service_pb2

        bodies = {
            "health": ("/grpc.health.v1.Health/Check", b"\0\0\0\0\0"),
            "grpc_create": (
                "/eventmgmt.v1.EventService/CreateEvent",
                grpc_frame(
                    event_service_pb2.CreateEventRequest(
                        event=event_pb2.Event(description=DESCRIPTION, severity=3)
                    )
                ),
            ),
            "grpc_get": (
                "/eventmgmt.v1.EventService/GetEvent",
                grpc_frame(event_service_pb2.GetEventRequest(id=event_id)),
            ),
        }
        for kind in kinds:
            per_request = 1
            if kind == "ingest":
                from bench_memory import BATCH, ingest_body

                body = work / "ingest.bin"
                per_request = ingest_body(body, INGEST_FRAMES)
                assert per_request == INGEST_FRAMES * BATCH

                def run(calls: int, body: Path = body) -> str:
                    streams = max(4, calls // INGEST_CALLS_PER_STREAM)
                    path = "/eventmgmt.v1.EventStreamService/IngestEvents"
                    return h2load(service.grpc_port, key, path, body, streams)
            elif kind in bodies:
                path, frame = bodies[kind]
                body = work / f"{kind}.bin"
                body.write_bytes(frame)

                def run(calls: int, path: str = path, body: Path = body) -> str:
                    return h2load(service.grpc_port, key, path, body, calls)
            else:
                rest_body: Path | None = None
                path = f"/events/{event_id}"
                if kind == "rest_create":
                    rest_body, path = work / "rest_create.json", "/events"
                    rest_body.write_text(REST_BODY)

                def run(calls: int, path: str = path, body: Path | None = rest_body) -> str:
                    return h1load(service.rest_port, key, path, body, calls)

            run(max(50, args.calls // 10))  # warm-up: caches, first-call paths
            service.control("-i", "on")
            service.control("-z")
            started = time.monotonic()
            done = max(1, succeeded(run(args.calls)) * per_request)
            service.control("-d", kind)
            service.control("-i", "off")
            threads = {n: total_instructions(d) for n, d in collect_dump(work, kind).items()}
            loop = threads.get(1, 0)
            results[kind] = (sum(threads.values()) / done, loop / done)
            parts = breakdown(work / f"{kind}.out-01")
            print(
                f"  {kind:<12} {sum(threads.values()) / done / 1000:>8,.0f}k instructions per "
                f"{'event' if per_request > 1 else 'call'}, {loop / done / 1000:,.0f}k of them "
                f"on the event loop's thread ({done} of them, "
                f"{time.monotonic() - started:.0f} s under callgrind)\n"
                f"               the loop's: "
                + ", ".join(f"{name} {value / done / 1000:,.0f}k" for name, value in parts.items()),
                flush=True,
            )
    finally:
        service.stop()
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    health = results.get("health")
    for kind, (total, loop) in results.items():
        # An event of a stream is no call: its count is context, not a rate bound.
        bound = ""
        if health and kind not in ("health", "ingest"):
            bound = f" ({health[0] / total:.2f} of Health/Check's; loop {health[1] / loop:.2f})"
            print(
                f"  {kind:<12} rate bound against Health/Check: {health[0] / total:.2f} by all "
                f"instructions, {health[1] / loop:.2f} by the event loop's thread"
            )
        figures.record(
            2,
            f"instructions per {'event' if kind == 'ingest' else 'call'} under callgrind: "
            f"{LABELS[kind]}",
            f"{total / 1000:,.0f}k, loop thread {loop / 1000:,.0f}k{bound}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
