"""`python die_with_parent.py PARENT_PID PROGRAM ARGS...`: exec PROGRAM so that it gets
SIGTERM when PARENT_PID dies.

The server starts Envoy through this small single-threaded process instead of forking itself:
a fork of the server (whose gRPC threads are running) ran Python's and gRPC's fork handlers in
the child, which now and then aborted it before Envoy ever ran (`epoll_wait ... Bad file
descriptor`, exit -6). subprocess spawns this script with vfork/exec and runs no Python code in
between; here the death signal is set, then Envoy replaces this process (the signal survives
exec), so a server killed with -9 leaves no orphan gateway holding the REST port.
Runs as a script (`python -I`), so it imports nothing but the standard library.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isascii() or not argv[0].isdigit():
        print("usage: die_with_parent.py PARENT_PID PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    parent = int(argv[0])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            print(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 1
    # The parent may have died before the death signal was armed: then nobody would send it.
    if os.getppid() != parent:
        print(f"parent {parent} is gone; not starting {argv[1]}", file=sys.stderr)
        return 1
    os.execv(argv[1], argv[1:])
    return 1  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
