"""What the fuzz tests share: their budget and seed, a tenant with things to aim at, the
tenant's stored state read straight from the database (a refused request must leave it as
it was), and hostile values that generators mix into what they send.

Budget: each fuzz test (one per API and backend) stops generating after
EVENTMGMT_FUZZ_SECONDS (default 20) or EVENTMGMT_FUZZ_EXAMPLES examples (default 2000),
whichever comes first, so that all of them together stay within two minutes in CI. Raise
both for a long run by hand. EVENTMGMT_FUZZ_SEED replays a run; a failure prints the seed."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import peewee
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st

from persistence.database import open_database

FUZZ_SECONDS = float(os.environ.get("EVENTMGMT_FUZZ_SECONDS", "20"))
FUZZ_EXAMPLES = int(os.environ.get("EVENTMGMT_FUZZ_EXAMPLES", "2000"))
FUZZ_SEED = int(os.environ.get("EVENTMGMT_FUZZ_SEED") or random.randrange(2**32))
# Tables whose rows a refused request may still write by design: rate-limit counters and
# failed sign-ins are how refusals are counted.
_BOOKKEEPING = frozenset({"rate_counters", "login_failures", "auth_state"})
_TENANT_COLUMNS = ("tenant_id", "owner_tenant_id")
CHUNK = 50


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(table for table in after if before.get(table) != after[table])


def seeded(message: str) -> str:
    return f"{message} (replay with EVENTMGMT_FUZZ_SEED={FUZZ_SEED})"


@dataclass
class Budget:
    """Counts what a fuzz test sent and stops it when its time or examples are spent."""

    name: str
    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)

    @property
    def spent(self) -> bool:
        return self.sent >= FUZZ_EXAMPLES or time.monotonic() - self.started > FUZZ_SECONDS

    def run(self, make_test: Callable[[], Callable[[], None]]) -> None:
        """Runs hypothesis tests of CHUNK examples each until the budget is spent: hypothesis
        itself counts examples, not seconds. Chunk n runs with seed FUZZ_SEED + n, so a seed
        replays the whole run."""
        chunk = 0
        try:
            while not self.spent:
                test = settings(
                    max_examples=CHUNK,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )(make_test())
                seed(FUZZ_SEED + chunk)(test)()
                chunk += 1
        finally:
            print(self.summary())

    def record(self, answer: str) -> None:
        self.sent += 1
        self.answers[answer] += 1

    def summary(self) -> str:
        common = ", ".join(f"{k}: {v}" for k, v in self.answers.most_common(12))
        return (
            f"{self.name}: {self.sent} generated requests in "
            f"{time.monotonic() - self.started:.0f} s (seed {FUZZ_SEED}); answers {common}"
        )


class TenantState:
    """The rows of one tenant in every table that has a tenant column, as one digest."""

    def __init__(self, database_url: str, tenant: str) -> None:
        self._db = open_database(database_url)
        self._tenant = tenant
        self._db.connect()
        self._tables = [
            (table, column)
            for table in self._db.get_tables()
            if table not in _BOOKKEEPING
            for column in [c.name for c in self._db.get_columns(table)]
            if column in _TENANT_COLUMNS
        ]
        assert any(table == "events" for table, _ in self._tables)

    def digest(self) -> dict[str, str]:
        """A hash of the tenant's rows, by table (compare two: the tables that changed)."""
        self.settle()
        p = self._db.param
        hashes = {}
        for table, column in self._tables:
            rows = self._db.execute_sql(
                f"SELECT * FROM {table} WHERE {column} = {p}", (self._tenant,)
            ).fetchall()
            # PostgreSQL hands bytea over as a memoryview, whose repr is its address: compare
            # the bytes, or every read of a row with a payload would look like a change.
            rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
            hashes[table] = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
        return hashes

    def settle(self, timeout: float = 30.0) -> None:
        """Waits until the tenant's accepted background work (bulk jobs, pending device
        reports) is done, so that state changes are the last request's alone."""
        p = self._db.param
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = self._db.execute_sql(
                f"SELECT (SELECT COUNT(*) FROM jobs WHERE tenant_id = {p} "
                "AND state NOT IN ('FINISHED', 'FINISHED_WITH_ERROR')) "
                f"+ (SELECT COUNT(*) FROM pending_device_events WHERE tenant_id = {p})",
                (self._tenant, self._tenant),
            ).fetchone()[0]
            if not busy:
                return
            time.sleep(0.05)
        jobs = self._db.execute_sql(
            f"SELECT id, kind, state, total, done, request FROM jobs WHERE tenant_id = {p} "
            "AND state NOT IN ('FINISHED', 'FINISHED_WITH_ERROR')",
            (self._tenant,),
        ).fetchall()
        pending = self._db.execute_sql(
            f"SELECT * FROM pending_device_events WHERE tenant_id = {p}", (self._tenant,)
        ).fetchall()
        raise AssertionError(
            seeded(
                f"the tenant's background work did not finish in {timeout:.0f} s: jobs "
                f"{[[str(v)[:300] for v in j] for j in jobs]}, "
                f"pending reports {[str(r)[:300] for r in pending]}"
            )
        )

    def close(self) -> None:
        if not self._db.is_closed():
            self._db.close()


def open_state(database_url: str, tenant: str) -> TenantState:
    try:
        return TenantState(database_url, tenant)
    except peewee.OperationalError as error:  # pragma: no cover - a broken test setup
        raise AssertionError(f"cannot read the service's database: {error}") from error


# --- hostile values --------------------------------------------------------------------------

# JSON text a generator splices into a document in place of a string value: each is a member
# of a class that once answered 5xx somewhere.
HOSTILE_JSON = [
    '"a \\ud800 b"',
    '"\\udfff"',
    '"\\ud83d"',
    '"x\\u0000y"',
    "NaN",
    "-Infinity",
    "1e999",
    "-0",
    "123456789012345678901234567890",
    "9223372036854775808",
    "-9223372036854775809",
    "1.5e-400",
    '"²"',
    '"\\u0661\\u0662"',
    '"2018-07-29T06:09:29.743"',
    '"9999-12-31T23:59:59.999999+14:00"',
    '"0001-01-01T00:00:00-14:00"',
    "[" * 64 + "]" * 64,
    '{"$timestamp": 1}',
    '"' + "x" * 5000 + '"',
]
_MARK = "\u2063hostile\u2063"
# Text a path, query or header value may carry: every class of character that matters.
TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(
        ["", " ", "²", "١٢", "é", "\x00", "%", "%FF", "..", "/", "*", "\\", "a\u0000b"]
    ),
    st.text(st.characters(codec="utf-8"), max_size=8),
    st.integers(-(2**70), 2**70).map(str),
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=16),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def with_hostile(document: Any, rng: random.Random) -> bytes:
    """The document as JSON with one value (or key) replaced by a hostile piece of JSON."""
    slots: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key in list(node):
                slots.append((node, key))
                collect(node[key])
        elif isinstance(node, list):
            for index in range(len(node)):
                slots.append((node, index))
                collect(node[index])

    collect(document)
    hostile = rng.choice(HOSTILE_JSON)
    if not slots:
        return hostile.encode()
    parent, key = rng.choice(slots)
    if isinstance(parent, dict) and rng.random() < 0.3 and hostile.startswith('"'):
        parent[_MARK] = parent.pop(key)  # a hostile key rather than a value
    else:
        parent[key] = _MARK
    return json.dumps(document).replace(json.dumps(_MARK), hostile).encode()
