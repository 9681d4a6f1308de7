"""The find oracle: random events and random Elasticsearch queries, the store's answer on
SQLite and PostgreSQL checked against a plain-Python evaluation of the same query document.

The oracle below reads the DSL itself (it shares no code with the parser), so a wrong
translation in either the domain or the SQL shows up as a difference."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import math
import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.custom_fields import STANDARD_EVENT
from service.domain.events import Event
from service.domain.find import EventFinder

DOMAINS = ["/", "/root", "/root/sub1", "/root/sub1/sub11", "/root/sub10"]
WORDS = ["engine", "Error", "pump", "HOT", "cold_start", "über", "x1"]
BASE_MS = 1_700_000_000_000
SPAN_MS = 90 * 86_400_000

texts = st.sampled_from(["", "A", "B", "a", "Ab"])
custom = st.fixed_dictionaries(
    {},
    optional={
        "n": st.integers(-3, 3),
        "s": st.sampled_from(["p", "q", "P"]),
        "b": st.booleans(),
    },
)
sources = st.one_of(
    st.none(),
    st.sampled_from(["plain", "pla", "other"]),
    st.fixed_dictionaries(
        {}, optional={"thingName": st.sampled_from(["001", "002"]), "n": st.integers(0, 2)}
    ),
)
descriptions = st.lists(st.sampled_from(WORDS), max_size=4).map(
    lambda ws: " ".join(ws) + ("." if ws else "")
)


@st.composite
def events(draw: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "domain": draw(st.sampled_from(DOMAINS)),
        "type_id": draw(st.sampled_from(["RULE", "THING.CREATE", STANDARD_EVENT])),
        "timestamp": (BASE_MS + draw(st.integers(0, SPAN_MS))) * 1000 + draw(st.integers(0, 999)),
        "severity": draw(st.integers(0, 5)),
        "category": draw(texts),
        "description": draw(descriptions),
        "source": draw(sources),
        "acknowledgement_required": draw(st.booleans()),
        "custom_fields": draw(custom),
    }


# --- Query strategies -----------------------------------------------------------------------

time_values = st.integers(BASE_MS - 1000, BASE_MS + SPAN_MS + 1000).flatmap(
    lambda ms: st.sampled_from(
        [ms, datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")]
    )
)
term_clauses = st.one_of(
    st.builds(lambda v: {"term": {"type": v}}, st.sampled_from(["RULE", STANDARD_EVENT, "x"])),
    st.builds(lambda v: {"term": {"category": v}}, st.sampled_from(["A", "a", "B"])),
    st.builds(lambda v: {"term": {"severity": v}}, st.integers(0, 5)),
    st.builds(lambda v: {"term": {"source.thingName": v}}, st.sampled_from(["001", "002"])),
    st.builds(lambda v: {"term": {"source": v}}, st.sampled_from(["plain", "pla"])),
    st.builds(lambda v: {"term": {"custom.n": v}}, st.integers(-3, 3)),
    st.builds(lambda v: {"term": {"custom.s": v}}, st.sampled_from(["p", "P"])),
    st.builds(lambda v: {"term": {"custom.b": v}}, st.booleans()),
    st.builds(lambda v: {"term": {"acknowledgementRequired": v}}, st.booleans()),
    st.builds(lambda v: {"term": {"message.lowercase": v}}, st.sampled_from(["pump.", "hot."])),
)


def _bounds(values: Any) -> Any:
    return st.dictionaries(st.sampled_from(["gt", "gte", "lt", "lte"]), values, min_size=1).filter(
        lambda b: not ({"gt", "gte"} <= set(b) or {"lt", "lte"} <= set(b))
    )


leaf_clauses = st.one_of(
    term_clauses,
    st.builds(lambda v: {"terms": {"severity": v}}, st.lists(st.integers(0, 5), max_size=3)),
    st.builds(lambda v: {"terms": {"category": v}}, st.lists(texts.filter(bool), max_size=3)),
    st.builds(lambda b: {"range": {"severity": b}}, _bounds(st.integers(-1, 6))),
    st.builds(lambda b: {"range": {"timestamp": b}}, _bounds(time_values)),
    st.builds(lambda b: {"range": {"custom.n": b}}, _bounds(st.integers(-3, 3))),
    st.builds(lambda b: {"range": {"category": b}}, _bounds(texts)),
    st.builds(
        lambda f: {"exists": {"field": f}},
        st.sampled_from(["category", "source.thingName", "custom.s", "source", "acknowledgedAt"]),
    ),
    st.builds(
        lambda f, v: {"prefix": {f: v}},
        st.sampled_from(["type", "source", "message.lowercase", "custom.s"]),
        st.sampled_from(["", "R", "pla", "th", "e", "p"]),
    ),
    st.builds(
        lambda f, v: {"wildcard": {f: {"value": v}}},
        st.sampled_from(["type", "category", "message"]),
        st.sampled_from(["*", "R*E", "?", "THING.*", "*e*", "A?"]),
    ),
    st.builds(
        lambda words, op: {"match": {"message": {"query": " ".join(words), "operator": op}}},
        st.lists(st.sampled_from([*WORDS, "ENGINE", "missing"]), min_size=1, max_size=3),
        st.sampled_from(["or", "and"]),
    ),
    st.builds(
        lambda words: {"match_phrase": {"message": " ".join(words)}},
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=2),
    ),
    st.just({"match_all": {}}),
)


def _bool(children: Any) -> Any:
    groups = st.lists(children, max_size=3)
    return st.builds(
        lambda must, filt, should, must_not, msm: {
            "bool": {
                k: v
                for k, v in {
                    "must": must,
                    "filter": filt,
                    "should": should,
                    "must_not": must_not,
                    "minimum_should_match": msm,
                }.items()
                if v is not None and v != []
            }
        },
        groups,
        groups,
        groups,
        groups,
        st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["50%", "-1"])),
    )


queries = st.recursive(leaf_clauses, _bool, max_leaves=8)
sort_fields = st.sampled_from(
    ["timestamp", "severity", "category", "message.lowercase", "custom.n", "type"]
)
sorts = st.lists(
    st.tuples(sort_fields, st.sampled_from(["asc", "desc"])), max_size=2, unique_by=lambda t: t[0]
)


# --- The oracle -----------------------------------------------------------------------------


def value(event: dict[str, Any], name: str) -> Any:
    """What the field holds in the event; None when absent."""
    if name.startswith("custom."):
        return event["custom_fields"].get(name[7:])
    if name.startswith("source."):
        source = event["source"]
        return source.get(name[7:]) if isinstance(source, dict) else None
    plain = {
        "type": event["type_id"],
        "category": event["category"] or None,
        "severity": event["severity"],
        "source": event["source"],
        "acknowledgementRequired": event["acknowledgement_required"],
        "acknowledgedAt": None,
        "message": event["description"] or None,
        "message.lowercase": event["description"].lower() or None,
        "timestamp": event["timestamp"] // 1000,
    }
    return plain[name]


def same(a: Any, b: Any) -> bool:
    """JSON equality: a boolean never equals a number."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def to_ms(v: Any) -> int:
    if isinstance(v, int):
        return v
    moment = datetime.fromisoformat(v)
    return round(moment.timestamp() * 1000)


def in_range(actual: Any, bounds: dict[str, Any], timed: bool) -> bool:
    if actual is None or isinstance(actual, bool):
        return False
    kinds = {isinstance(v, str) for v in bounds.values()}
    if timed:
        bounds = {k: to_ms(v) for k, v in bounds.items()}
    elif (kinds == {True}) != isinstance(actual, str):
        return False  # string bounds compare strings only, number bounds numbers only
    checks = {"gt": lambda b: actual > b, "gte": lambda b: actual >= b}
    checks |= {"lt": lambda b: actual < b, "lte": lambda b: actual <= b}
    return all(checks[op](b) for op, b in bounds.items())


def words_of(text: Any) -> list[str]:
    return re.findall(r"\w+", text.lower()) if isinstance(text, str) else []


def matches(event: dict[str, Any], clause: dict[str, Any]) -> bool:
    ((kind, spec),) = clause.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        musts = spec.get("must", []) + spec.get("filter", [])
        should = spec.get("should", [])
        hits = sum(matches(event, c) for c in should)
        needed = 0 if musts else 1
        if "minimum_should_match" in spec:
            msm = str(spec["minimum_should_match"])
            if msm.endswith("%"):
                needed = len(should) * int(msm[:-1]) // 100
            elif msm.startswith("-"):
                needed = max(0, len(should) - int(msm[1:]))
            else:
                needed = int(msm)
        if not should:
            needed = 0
        return (
            all(matches(event, c) for c in musts)
            and not any(matches(event, c) for c in spec.get("must_not", []))
            and hits >= needed
        )
    if kind in ("term", "terms"):
        ((name, wanted),) = spec.items()
        options = wanted if kind == "terms" else [wanted]
        return any(same(value(event, name), o) for o in options)
    if kind == "range":
        ((name, bounds),) = spec.items()
        return in_range(value(event, name), bounds, name == "timestamp")
    if kind == "exists":
        return value(event, spec["field"]) is not None
    if kind == "prefix":
        ((name, wanted),) = spec.items()
        actual = value(event, name)
        return isinstance(actual, str) and actual.startswith(wanted)
    if kind == "wildcard":
        ((name, wanted),) = spec.items()
        actual = value(event, name)
        return isinstance(actual, str) and fnmatch.fnmatchcase(actual, wanted["value"])
    if kind in ("match", "match_phrase"):
        ((name, wanted),) = spec.items()
        text = wanted["query"] if isinstance(wanted, dict) else wanted
        have, want = words_of(value(event, name)), words_of(text)
        if kind == "match_phrase":
            n = len(want)
            return any(have[i : i + n] == want for i in range(len(have) - n + 1))
        if isinstance(wanted, dict) and wanted.get("operator") == "and":
            return all(w in have for w in want)
        return any(w in have for w in want)
    raise AssertionError(kind)


def ordered(found: list[dict[str, Any]], sort: list[tuple[str, str]]) -> list[dict[str, Any]]:
    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for name, direction in sort:
            x, y = value(a, name), value(b, name)
            if x is None or y is None:
                if x is None and y is None:
                    continue
                return 1 if x is None else -1  # missing last either way
            if x != y:
                result = -1 if x < y else 1
                return -result if direction == "desc" else result
        return -1 if a["id"] < b["id"] else (1 if a["id"] > b["id"] else 0)

    if not sort:
        return sorted(found, key=lambda e: (-e["timestamp"], e["id"]))
    return sorted(found, key=functools.cmp_to_key(compare))


def covers(subtree: str, path: str) -> bool:
    return subtree == "/" or path == subtree or path.startswith(subtree + "/")


# --- The property ---------------------------------------------------------------------------


def run(store: Store, stored: list[dict[str, Any]], domain: str, document: Any) -> Any:
    tenant = uuid.uuid4().hex
    principal = Principal(tenant, "k", "oracle", Role.READ, domain)

    async def go() -> Any:
        await asyncio.gather(
            *(store.events.insert(Event(tenant_id=tenant, **e)) for e in stored),
            # Another tenant's copy of every event, which must never show.
            *(
                store.events.insert(Event(tenant_id="other", **{**e, "id": str(uuid.uuid4())}))
                for e in stored
            ),
        )
        return await EventFinder(store.events).find(principal, document)

    return asyncio.run(go())


@settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    stored=st.lists(events(), max_size=12),
    domain=st.sampled_from(DOMAINS),
    query=queries,
    sort=sorts,
    window=st.tuples(st.integers(0, 4), st.integers(0, 8)),
)
def test_hits_and_totals_match_a_plain_python_evaluation(
    store: Store,
    stored: list[dict[str, Any]],
    domain: str,
    query: dict[str, Any],
    sort: list[tuple[str, str]],
    window: tuple[int, int],
) -> None:
    offset, size = window
    document = {"query": query, "from": offset, "size": size}
    if sort:
        document["sort"] = [{name: direction} for name, direction in sort]
    answer = run(store, stored, domain, document)

    visible = [e for e in stored if covers(domain, e["domain"])]
    expected = ordered([e for e in visible if matches(e, query)], sort)
    assert answer["hits"]["total"] == {"value": len(expected), "relation": "eq"}
    assert [h["_id"] for h in answer["hits"]["hits"]] == [
        e["id"] for e in expected[offset : offset + size]
    ]


TERMS_FIELDS = ["type", "category", "severity", "custom.s", "custom.n", "custom.b"]
METRIC_FIELDS = ["severity", "custom.n", "timestamp"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    stored=st.lists(events(), max_size=12),
    query=queries,
    terms_field=st.sampled_from(TERMS_FIELDS),
    terms_size=st.integers(1, 4),
    by_key=st.booleans(),
    metric=st.sampled_from(["min", "max", "avg", "sum", "value_count", "cardinality"]),
    metric_field=st.sampled_from(METRIC_FIELDS),
    interval=st.sampled_from(["1d", "7d", "week", "month", "12h"]),
)
def test_aggregations_match_a_plain_python_evaluation(
    store: Store,
    stored: list[dict[str, Any]],
    query: dict[str, Any],
    terms_field: str,
    terms_size: int,
    by_key: bool,
    metric: str,
    metric_field: str,
    interval: str,
) -> None:
    order = {"_key": "asc"} if by_key else {"_count": "desc"}
    document = {
        "query": query,
        "size": 0,
        "aggs": {
            "t": {
                "terms": {"field": terms_field, "size": terms_size, "order": order},
                "aggs": {"m": {metric: {"field": metric_field}}},
            },
            "h": {"date_histogram": {"field": "timestamp", "interval": interval}},
            "s": {
                "histogram": {"field": "severity", "interval": 2},
                "aggs": {
                    "c": {"terms": {"field": terms_field, "size": terms_size, "order": order}}
                },
            },
            "m": {metric: {"field": metric_field}},
        },
    }
    answer = run(store, stored, "/", document)["aggregations"]
    found = [e for e in stored if matches(e, query)]

    def metric_value(group: list[dict[str, Any]]) -> Any:
        values = [value(e, metric_field) for e in group]
        values = [v for v in values if v is not None]
        if metric == "value_count":
            return len(values)
        if metric == "cardinality":
            return len(set(values))
        if metric == "sum":
            return float(sum(values))
        if not values:
            return None
        return float({"min": min, "max": max}.get(metric, lambda v: sum(v) / len(v))(values))

    def close(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)

    assert close(answer["m"]["value"], metric_value(found))

    def check_terms(document: dict[str, Any], group: list[dict[str, Any]]) -> Any:
        counts = Counter(value(e, terms_field) for e in group if value(e, terms_field) is not None)
        # Keys of one kind per field here, so Python's order is the store's.
        if by_key:
            top = sorted(counts.items(), key=lambda kv: kv[0])[:terms_size]
        else:
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:terms_size]
        assert [(b["key"], b["doc_count"]) for b in document["buckets"]] == [
            (int(k) if isinstance(k, bool) else k, n) for k, n in top
        ]
        assert document["sum_other_doc_count"] == sum(counts.values()) - sum(n for _, n in top)
        return top

    top = check_terms(answer["t"], found)
    buckets = answer["t"]["buckets"]
    for bucket, (key, _) in zip(buckets, top, strict=True):
        group = [e for e in found if same(value(e, terms_field), key)]
        assert close(bucket["m"]["value"], metric_value(group))

    step = {"1d": 86_400_000, "7d": 7 * 86_400_000, "12h": 43_200_000}
    histogram: Counter[int] = Counter()
    for e in found:
        ms = e["timestamp"] // 1000
        if interval in step:
            histogram[ms - ms % step[interval]] += 1
        elif interval == "week":
            monday = ms - (ms - 4 * 86_400_000) % (7 * 86_400_000)
            histogram[monday] += 1
        else:
            day = datetime.fromtimestamp(ms / 1000, UTC)
            histogram[int(datetime(day.year, day.month, 1, tzinfo=UTC).timestamp() * 1000)] += 1
    got = {b["key"]: b["doc_count"] for b in answer["h"]["buckets"]}
    assert {k: n for k, n in got.items() if n} == dict(histogram)
    assert sum(got.values()) == len(found)

    severity = Counter(e["severity"] // 2 * 2 for e in found)
    got = {b["key"]: b["doc_count"] for b in answer["s"]["buckets"]}
    assert {k: n for k, n in got.items() if n} == {float(k): n for k, n in severity.items()}
    for bucket in answer["s"]["buckets"]:
        check_terms(bucket["c"], [e for e in found if e["severity"] // 2 * 2 == bucket["key"]])
