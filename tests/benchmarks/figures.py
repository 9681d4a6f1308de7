"""Issue 15's figures from one `make bench` run, each beside its target, in one table.

Each bench script records what it measured with `record()` (a JSON line appended to
build/bench/figures.jsonl, or to $BENCH_FIGURES); `python tests/benchmarks/figures.py run`
empties that file, runs the scripts in turn (a failing one is reported in the table, the others
still run) and prints the table; `figures.py` alone prints the table of the last run.

Every row says what was measured, its target from the issue, the measured value (medians of
rounds; ratios against a baseline measured in the same run where the issue asks for one), a
verdict, and the load average of the machine when it was measured: the machine may be shared,
so absolute figures are noisy and the ratios are what compare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIGURES = Path(
    os.environ.get("BENCH_FIGURES") or HERE.parents[1] / "build" / "bench" / "figures.jsonl"
)

# The items, as its table groups them.
ITEMS = {
    1: "benchmark honestly",
    2: "per process",
    3: "scale with cores",
    4: "lists at millions",
    5: "PostgreSQL at scale",
    6: "find aggregations",
    7: "streams",
    8: "memory",
}
# The scripts `make bench` runs, in order, each with its arguments.
SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("bench.py",),
    ("bench_calls.py",),
    ("bench_jobs.py",),
    ("bench_find.py",),
    ("bench_live.py",),
    ("bench_list.py",),
    ("bench_alarms.py",),
    ("bench_memory.py",),
)


def record(item: int, figure: str, measured: str, target: str = "", ok: bool | None = None) -> None:
    """Adds one row to this run's table; `ok` None: context, no verdict."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    row = {
        "item": item,
        "figure": figure,
        "target": target,
        "measured": measured,
        "ok": ok,
        "script": Path(sys.argv[0]).name,
        "load": round(os.getloadavg()[0], 1),
    }
    with FIGURES.open("a") as out:
        out.write(json.dumps(row) + "\n")


def verdict(ok: bool | None, target: str) -> str:
    if not target:
        return ""
    return "n/a" if ok is None else ("ok" if ok else "MISSED")


def table(rows: list[dict[str, Any]]) -> str:
    head = ("#", "figure", "target", "measured", "verdict", "load")
    cells = [
        (
            str(r["item"]),
            r["figure"],
            r["target"],
            r["measured"],
            verdict(r["ok"], r["target"]),
            f"{r['load']:.1f}",
        )
        for r in sorted(rows, key=lambda r: r["item"])  # stable: each script's order kept
    ]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    item = None
    for row, c in zip(sorted(rows, key=lambda r: r["item"]), cells, strict=True):
        if row["item"] != item and item is not None:
            lines.append("")
        item = row["item"]
        lines.append(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    return "\n".join(lines)


def read() -> list[dict[str, Any]]:
    if not FIGURES.exists():
        return []
    return [json.loads(line) for line in FIGURES.read_text().splitlines() if line.strip()]


def show(took: float | None = None) -> int:
    rows = read()
    if not rows:
        print(f"no figures recorded in {FIGURES}: run `make bench`")
        return 1
    missed = sum(1 for r in rows if r["target"] and r["ok"] is False)
    met = sum(1 for r in rows if r["target"] and r["ok"])
    span = f" in {took:.0f} s" if took is not None else ""
    cpus = len(os.sched_getaffinity(0))
    print(f"\nIssue 15, one run{span}: {met} targets met, {missed} missed ({cpus} CPUs)")
    for number, name in ITEMS.items():
        if not any(r["item"] == number for r in rows):
            rows.append(
                {
                    "item": number,
                    "figure": name,
                    "target": "",
                    "measured": "not measured",
                    "ok": None,
                    "load": 0.0,
                }
            )
    print(table(rows))
    return 0


def run_all() -> int:
    """Runs every bench script of `make bench` and prints the one table."""
    began = time.monotonic()
    FIGURES.unlink(missing_ok=True)
    failed = []
    for script, *args in SCRIPTS:
        print(f"\n=== {script} {' '.join(args)}".rstrip(), flush=True)
        done = subprocess.run([sys.executable, str(HERE / script), *args], check=False)
        if done.returncode != 0:
            failed.append(script)
            record(1, f"{script} failed", f"exit status {done.returncode}", "runs", False)
    show(time.monotonic() - began)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_all() if sys.argv[1:] == ["run"] else show())
