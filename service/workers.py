"""`serve --workers N`: N server processes on the one gRPC port behind one Envoy.

Python runs one thread of bytecode at a time, so one process uses about one core. With N
workers, each is a whole server (its own store connections, group-commit writer, live feed and
background loops) and all of them listen on the same address with SO_REUSEPORT: the kernel
hands each new connection of a client to one of them. Each worker also listens on a loopback
port of its own, where Envoy sends it calls by least requests in flight (a hash of Envoy's few
upstream connections would often give one worker all of them).
Everything they share lives in the database (see the README, "Workers"): feed positions,
jobs and their leases, etags, device report duplicates, idempotency keys.

The parent process applies the migrations, creates the development key, reserves the port,
starts the workers and waits until each is serving, then starts Envoy and supervises: a worker
that dies is started again; SIGINT or SIGTERM stops them all. Each worker gets SIGTERM when
the parent dies (even by kill -9), so no orphan keeps the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from service import event_loop
from service.settings import ServerSettings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
# A worker that dies sooner than this after its start is not restarted in a loop at once.
RESTART_PAUSE_S = 1.0
PR_SET_PDEATHSIG = 1


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def reserve_port(address: str) -> tuple[socket.socket, int]:
    """Checks that nothing listens on `address` and keeps its port for the workers: a socket
    bound with SO_REUSEPORT but not listening takes no connections, yet holds the port (a
    port 0 picks one) for as long as the pool runs."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Without SO_REUSEPORT, binding fails while any other server holds the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder, port


@dataclasses.dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready_fd: int
    started: float


class WorkerPool:
    """Starts, restarts and stops the worker processes of one server."""

    def __init__(
        self,
        settings: ServerSettings,
        gateway_addresses: list[str],
        on_exit: Callable[[int], None],
    ) -> None:
        """One worker per address in `gateway_addresses`: where the gateway calls it."""
        self._settings = settings
        self._gateway_addresses = gateway_addresses
        # Told the pid of each worker that ended (its metrics no longer count as live).
        self._on_exit = on_exit
        self.workers: list[Worker] = []

    def _spawn(self, index: int) -> Worker:
        read_end, write_end = os.pipe()
        settings = dataclasses.asdict(self._settings)
        settings["data_dir"] = str(settings["data_dir"])
        given = {"settings": settings, "gateway_address": self._gateway_addresses[index]}
        # On stdin, not the command line: the database URL may hold a password.
        process = subprocess.Popen(
            [sys.executable, "-m", "service.workers", str(os.getpid()), str(write_end)],
            stdin=subprocess.PIPE,
            pass_fds=(write_end,),
            env={**os.environ, "EVENTMGMT_WORKER": str(index)},
        )
        os.close(write_end)
        assert process.stdin is not None
        process.stdin.write(json.dumps(given).encode())
        process.stdin.close()
        return Worker(index, process, read_end, time.monotonic())

    def start(self) -> None:
        """Starts every worker and waits until each serves (or fails with its exit code)."""
        self.workers = [self._spawn(index) for index in range(len(self._gateway_addresses))]
        for worker in self.workers:
            self._wait_ready(worker)

    def _wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                readable, _, _ = select.select([worker.ready_fd], [], [], 0.2)
                if readable:
                    if os.read(worker.ready_fd, 16):
                        return
                    break  # closed without a word: the worker ended
                if worker.process.poll() is not None:
                    break
            code = worker.process.poll()
            raise RuntimeError(
                f"worker {worker.index} did not start"
                + (f" (exit {code})" if code is not None else f" in {READY_TIMEOUT_S:.0f} s")
            )
        finally:
            os.close(worker.ready_fd)
            worker.ready_fd = -1

    def restart_dead(self) -> None:
        """Starts a new worker in place of each one that ended."""
        for position, worker in enumerate(self.workers):
            code = worker.process.poll()
            if code is None or time.monotonic() - worker.started < RESTART_PAUSE_S:
                continue
            log.error(
                "worker %s (pid %s) ended with %s; starting it again",
                worker.index,
                worker.process.pid,
                code,
            )
            self._on_exit(worker.process.pid)
            replacement = self._spawn(worker.index)
            self.workers[position] = replacement
            try:
                self._wait_ready(replacement)
            except RuntimeError as error:
                log.error("%s", error)

    def stop(self, grace_seconds: float) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds + 5
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.wait()
                self._on_exit(worker.process.pid)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this worker when the parent dies, whatever kills it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the signal was armed
        sys.exit(1)


def worker_main(argv: list[str]) -> int:
    """A worker: `python -m service.workers PARENT_PID READY_FD`, settings as JSON on stdin."""
    from service import logs
    from service.server import serve_worker

    parent, ready_fd = int(argv[0]), int(argv[1])
    _die_with_parent(parent)
    given = json.loads(sys.stdin.read())
    values = given["settings"]
    values["data_dir"] = Path(values["data_dir"])
    settings = ServerSettings(**values)
    # Set by the CLI for its workers.
    logs.configure(
        os.environ.get("EVENTMGMT_LOG_LEVEL", "INFO"),
        os.environ.get("EVENTMGMT_LOG_FORMAT", "auto"),
    )

    def ready() -> None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    event_loop.run(serve_worker(settings, ready, given["gateway_address"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
