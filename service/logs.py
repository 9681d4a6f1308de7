"""Log output: one JSON object per line (the default, for log collectors) or readable text
for a terminal (`--log-format text`). Fields given as `extra` (the request log's rpc, tenant,
key_id, status, duration_ms, request_id) become JSON fields. Secrets are never logged: API
keys are named by their id only."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, log_format: str) -> None:
    """Sends every log record to stderr in `log_format`, at `level` and above; `auto` is
    text on a terminal and JSON otherwise (a service manager, a container, a file)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
