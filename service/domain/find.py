"""Seed 002's find: an Elasticsearch search request parsed and checked into a query AST, and
the store's answer shaped like Elasticsearch's response.

This module knows neither gRPC nor SQL. It turns the client's JSON document into plain
dataclasses (`FindRequest`, clauses, aggregations) whose values are already normalised (times
in microseconds, ranges half-open where Elasticsearch rounds to milliseconds), so that the
store only translates them. Every rule it enforces names the clause that broke it, with the
seed's reason `INVALID_ARGUMENTS` (or `PROPERTY_REQUIRED` when there is no query).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from service.domain.access import Principal, Role
from service.domain.custom_fields import Instant, canonical_type_id
from service.domain.errors import InvalidInput, invalid
from service.domain.events import Event

INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
PROPERTY_REQUIRED = "PROPERTY_REQUIRED"
DEFAULT_SIZE = 10
MAX_SIZE = 1000
# Elasticsearch's index.max_result_window: deeper pages need a narrower query.
MAX_RESULT_WINDOW = 10_000
MAX_TERMS_SIZE = 1000
MAX_BUCKETS = 10_000
MAX_CLAUSES = 1024
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_WORD = re.compile(r"\w+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _error(where: str, rule: str) -> InvalidInput:
    return invalid(where, rule, reason=INVALID_ARGUMENTS)


class Kind(Enum):
    """How a field compares: exact strings, words, numbers, times, booleans or JSON values."""

    KEYWORD = "keyword"
    TEXT = "text"
    INTEGER = "integer"
    TIME = "time"
    BOOLEAN = "boolean"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A queryable field: its DSL name, kind, the Event attribute holding it and, for JSON
    attributes (`source`, `custom_fields`), the key inside (None for the whole value)."""

    name: str
    kind: Kind
    attribute: str
    key: str | None = None
    lowercase: bool = False


_KEYWORDS = {
    "id": "id",
    "_id": "id",
    "type": "type_id",
    "typeId": "type_id",
    "classification": "classification",
    "category": "category",
    "acknowledgedBy": "acknowledged_by",
    "entityId": "entity_id",
    "entityType": "entity_type",
    "correlationId": "correlation_id",
    "domain": "domain",
    "code": "code",
    "appId": "app_id",
}
_FIELDS: dict[str, FieldRef] = {
    **{n: FieldRef(n, Kind.KEYWORD, a) for n, a in _KEYWORDS.items()},
    "message": FieldRef("message", Kind.TEXT, "description"),
    "description": FieldRef("description", Kind.TEXT, "description"),
    "message.lowercase": FieldRef("message.lowercase", Kind.KEYWORD, "description", None, True),
    "timestamp": FieldRef("timestamp", Kind.TIME, "timestamp"),
    "acknowledgedAt": FieldRef("acknowledgedAt", Kind.TIME, "acknowledged_at"),
    "createTime": FieldRef("createTime", Kind.TIME, "create_time"),
    "updateTime": FieldRef("updateTime", Kind.TIME, "update_time"),
    "severity": FieldRef("severity", Kind.INTEGER, "severity"),
    "etag": FieldRef("etag", Kind.INTEGER, "etag"),
    "acknowledgementRequired": FieldRef(
        "acknowledgementRequired", Kind.BOOLEAN, "acknowledgement_required"
    ),
    "acknowledged": FieldRef("acknowledged", Kind.BOOLEAN, "acknowledged"),
    "internal": FieldRef("internal", Kind.BOOLEAN, "internal"),
    "source": FieldRef("source", Kind.JSON, "source"),
}
FIELD_NAMES = (*_FIELDS, "source.<key>", "custom.<name>")


def resolve_field(name: Any, where: str) -> FieldRef:
    """The field a DSL name means; unknown names are an error, never an empty answer."""
    if not isinstance(name, str):
        raise _error(where, "a field name must be a string")
    known = _FIELDS.get(name)
    if known is not None:
        return known
    for prefix, attribute in (("source.", "source"), ("custom.", "custom_fields")):
        if name.startswith(prefix):
            key = name[len(prefix) :]
            if not _NAME.match(key):
                raise _error(where, f"{prefix}<key> needs a key of letters, digits, _ or -")
            return FieldRef(name, Kind.JSON, attribute, key)
    raise _error(where, f"unknown field {name!r}; fields: {', '.join(FIELD_NAMES)}")


# --- The query AST --------------------------------------------------------------------------

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class MatchAll:
    pass


@dataclass(frozen=True, slots=True)
class MatchNone:
    pass


@dataclass(frozen=True, slots=True)
class Term:
    """The field equals `value`; for TEXT fields the whole text, for JSON the typed value."""

    field: FieldRef
    value: Scalar


@dataclass(frozen=True, slots=True)
class Range:
    """Bounds of the same type; times in microseconds, already rounded as Elasticsearch
    rounds to milliseconds."""

    field: FieldRef
    gt: Scalar | None = None
    gte: Scalar | None = None
    lt: Scalar | None = None
    lte: Scalar | None = None


@dataclass(frozen=True, slots=True)
class Exists:
    field: FieldRef


@dataclass(frozen=True, slots=True)
class Prefix:
    field: FieldRef
    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    """`*` matches any characters, `?` one character; everything else is literal."""

    field: FieldRef
    pattern: str


@dataclass(frozen=True, slots=True)
class Words:
    """match / match_phrase on text: lowercase words, all or any of them, or in sequence."""

    field: FieldRef
    words: tuple[str, ...]
    require_all: bool
    phrase: bool


@dataclass(frozen=True, slots=True)
class Ids:
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Bool:
    """Every `must` (and `filter`), at least `minimum_should` of `should`, no `must_not`."""

    must: tuple[Clause, ...] = ()
    should: tuple[Clause, ...] = ()
    must_not: tuple[Clause, ...] = ()
    minimum_should: int = 0


Clause = MatchAll | MatchNone | Term | Range | Exists | Prefix | Wildcard | Words | Ids | Bool


# --- Aggregations ---------------------------------------------------------------------------


class MetricKind(Enum):
    MIN = "min"
    MAX = "max"
    AVG = "avg"
    SUM = "sum"
    VALUE_COUNT = "value_count"
    CARDINALITY = "cardinality"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: MetricKind
    field: FieldRef


@dataclass(frozen=True, slots=True)
class TermsAgg:
    name: str
    field: FieldRef
    size: int
    by_key: bool  # else by count, ties broken by key ascending
    descending: bool
    min_doc_count: int
    metrics: tuple[Metric, ...] = ()
    # Bucket sub-aggregations (terms or histograms), one level deep: they have no subs.
    children: tuple[TermsAgg | HistogramAgg, ...] = ()


@dataclass(frozen=True, slots=True)
class HistogramAgg:
    """Buckets `floor((value - offset) / interval)`, numbers in the field's unit (microseconds
    for times); `months` > 0 means calendar months (1 month, 3 quarter, 12 year) instead."""

    name: str
    field: FieldRef
    interval: float
    offset: int
    months: int
    min_doc_count: int
    metrics: tuple[Metric, ...] = ()
    # Bucket sub-aggregations (terms or histograms), one level deep: they have no subs.
    children: tuple[TermsAgg | HistogramAgg, ...] = ()


@dataclass(frozen=True, slots=True)
class RangeBucket:
    key: str
    start: float | None
    end: float | None


@dataclass(frozen=True, slots=True)
class RangeAgg:
    name: str
    field: FieldRef
    ranges: tuple[RangeBucket, ...]
    metrics: tuple[Metric, ...] = ()


Aggregation = Metric | TermsAgg | HistogramAgg | RangeAgg


@dataclass(frozen=True, slots=True)
class FindSort:
    """One sort key: a field (None for `_doc`, the id order) and how missing values sort."""

    field: FieldRef | None
    descending: bool
    missing_first: bool = False


@dataclass(frozen=True, slots=True)
class SourceFilter:
    enabled: bool = True
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FindRequest:
    query: Clause
    sort: tuple[FindSort, ...] = ()
    offset: int = 0
    size: int = DEFAULT_SIZE
    source: SourceFilter = SourceFilter()
    aggregations: tuple[Aggregation, ...] = ()
    # Also the events of entities other tenants share with the caller's (read-only).
    include_shared: bool = False


# --- Parsing --------------------------------------------------------------------------------

_REQUEST_KEYS = {"query", "size", "from", "sort", "_source", "aggs", "aggregations"}
# Accepted and ignored: they change scores or reporting, never which events match.
_IGNORED_KEYS = {"track_total_hits", "track_scores", "timeout"}


def parse_find_request(document: Any, include_shared: bool = False) -> FindRequest:
    """Accepts `{"query": {clause}, "size": ...}` and seed 002's form, where the whole search
    request sits inside `query`: `{"query": {"size": 1000, "query": {clause}}}`."""
    if not isinstance(document, dict):
        raise _error("body", "must be a JSON object with a query")
    _check_values(document, "body")
    inner = document.get("query")
    if isinstance(inner, dict) and inner and set(inner) <= _REQUEST_KEYS | _IGNORED_KEYS:
        both = sorted(set(inner) & (set(document) - {"query"}))
        if both:
            raise _error(both[0], "given both inside query and beside it; give it once")
        document = {**{k: v for k, v in document.items() if k != "query"}, **inner}
    unknown = sorted(set(document) - _REQUEST_KEYS - _IGNORED_KEYS)
    if unknown:
        raise _error(
            unknown[0], f"unsupported search option; supported: {', '.join(sorted(_REQUEST_KEYS))}"
        )
    if "query" not in document or document["query"] in (None, {}):
        raise invalid("query", 'a query is required, such as {"match_all": {}}', PROPERTY_REQUIRED)
    parser = _Parser()
    query = parser.clause(document["query"], "query")
    size = _count(document.get("size", DEFAULT_SIZE), "size", MAX_SIZE)
    offset = _count(document.get("from", 0), "from", MAX_RESULT_WINDOW)
    if offset + size > MAX_RESULT_WINDOW:
        raise _error("from", f"from + size must be at most {MAX_RESULT_WINDOW}")
    aggs_key = "aggs" if "aggs" in document else "aggregations"
    if "aggs" in document and "aggregations" in document:
        raise _error("aggregations", "give aggs or aggregations, not both")
    return FindRequest(
        query=query,
        sort=_parse_sort(document.get("sort"), "sort"),
        offset=offset,
        size=size,
        source=_parse_source(document.get("_source", True)),
        aggregations=_parse_aggregations(document.get(aggs_key), aggs_key, top=True),
        include_shared=include_shared,
    )


_INT64 = 2**63 - 1
# Year 9999, the store's last representable time, in milliseconds.
_MAX_MILLIS = 253402300799_999


def _check_values(value: Any, where: str) -> None:
    """Values no database can bind: integers beyond 64 bits and strings with NUL."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, where)
            _check_values(item, f"{where}.{key}" if where != "body" else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_values(item, f"{where}[{index}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _INT64:
        raise _error(where, "integers must fit in 64 bits")
    elif isinstance(value, str) and "\x00" in value:
        raise _error(where, "strings must not contain NUL characters")


def _count(value: Any, where: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _error(where, f"must be an integer from 0 to {limit}")
    return value


def _single(body: Any, where: str, what: str) -> tuple[str, Any]:
    if not isinstance(body, dict) or len(body) != 1:
        raise _error(where, f"must be an object with exactly one {what}")
    return next(iter(body.items()))


def _options(body: dict[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed - {"boost", "_name"})
    if unknown:
        raise _error(
            f"{where}.{unknown[0]}",
            f"unsupported option; supported: {', '.join(sorted(allowed)) or 'none'}",
        )


class _Parser:
    def __init__(self) -> None:
        self.clauses = 0

    def clause(self, body: Any, where: str) -> Clause:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise _error(where, f"a query may have at most {MAX_CLAUSES} clauses")
        kind, spec = _single(body, where, "query clause, such as term or bool")
        here = f"{where}.{kind}"
        method = getattr(self, f"_q_{kind}", None)
        if method is None:
            raise _error(
                here,
                "unsupported query clause; supported: bool, match_all, match_none, term, terms, "
                "range, exists, prefix, wildcard, match, match_phrase, ids",
            )
        if not isinstance(spec, dict):
            raise _error(here, "must be an object")
        result: Clause = method(spec, here)
        return result

    def _q_match_all(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, set())
        return MatchAll()

    def _q_match_none(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, set())
        return MatchNone()

    def _q_bool(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, {"must", "filter", "should", "must_not", "minimum_should_match"})

        def group(name: str) -> tuple[Clause, ...]:
            value = spec.get(name, [])
            items = value if isinstance(value, list) else [value]
            return tuple(self.clause(c, f"{where}.{name}[{i}]") for i, c in enumerate(items))

        must = group("must") + group("filter")
        should, must_not = group("should"), group("must_not")
        default = 0 if must else 1
        minimum = default
        if "minimum_should_match" in spec:
            minimum = _minimum_should_match(
                spec["minimum_should_match"], len(should), f"{where}.minimum_should_match"
            )
        if not should:
            minimum = 0
        if minimum > len(should):
            return MatchNone()
        return Bool(must, should, must_not, minimum)

    def _field_spec(
        self, spec: dict[str, Any], where: str, value_key: str, allowed: set[str]
    ) -> tuple[FieldRef, Any, dict[str, Any]]:
        """`{field: value}` or `{field: {value_key: value, options...}}`."""
        name, body = _single(spec, where, "field")
        here = f"{where}.{name}"
        ref = resolve_field(name, here)
        if isinstance(body, dict):
            _options(body, here, {value_key} | allowed)
            if value_key not in body:
                raise _error(here, f"needs {value_key}")
            return ref, body[value_key], body
        return ref, body, {}

    def _q_term(self, spec: dict[str, Any], where: str) -> Clause:
        ref, value, _ = self._field_spec(spec, where, "value", set())
        return _term(ref, value, f"{where}.{ref.name}")

    def _q_terms(self, spec: dict[str, Any], where: str) -> Clause:
        fields = {k: v for k, v in spec.items() if k not in ("boost", "_name")}
        name, values = _single(fields, where, "field")
        here = f"{where}.{name}"
        ref = resolve_field(name, here)
        if not isinstance(values, list):
            raise _error(here, "must be a list of values (terms lookup is not supported)")
        if len(values) > MAX_CLAUSES:
            raise _error(here, f"at most {MAX_CLAUSES} values")
        options = tuple(_term(ref, v, f"{here}[{i}]") for i, v in enumerate(values))
        return Bool(should=options, minimum_should=1) if options else MatchNone()

    def _q_ids(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, {"values", "type"})
        values = spec.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _error(f"{where}.values", "must be a list of id strings")
        return Ids(tuple(values)) if values else MatchNone()

    def _q_exists(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, {"field"})
        return Exists(resolve_field(spec.get("field"), f"{where}.field"))

    def _q_range(self, spec: dict[str, Any], where: str) -> Clause:
        name, body = _single(spec, where, "field")
        here = f"{where}.{name}"
        ref = resolve_field(name, here)
        if not isinstance(body, dict):
            raise _error(here, "must be an object of gt, gte, lt, lte")
        _options(body, here, {"gt", "gte", "lt", "lte", "format", "time_zone"})
        if body.get("time_zone") not in (None, "UTC", "Z", "+00:00"):
            raise _error(f"{here}.time_zone", "only UTC is supported")
        if "format" in body and body["format"] not in ("epoch_millis", "strict_date_optional_time"):
            raise _error(f"{here}.format", "only epoch_millis or strict_date_optional_time")
        bounds = {k: body[k] for k in ("gt", "gte", "lt", "lte") if body.get(k) is not None}
        return _range(ref, bounds, here)

    def _q_prefix(self, spec: dict[str, Any], where: str) -> Clause:
        ref, value, _ = self._field_spec(spec, where, "value", set())
        here = f"{where}.{ref.name}"
        _require_string_field(ref, here)
        if not isinstance(value, str):
            raise _error(here, "the prefix must be a string")
        return Prefix(ref, value.lower() if ref.lowercase else value)

    def _q_wildcard(self, spec: dict[str, Any], where: str) -> Clause:
        ref, value, body = self._field_spec(spec, where, "value", {"wildcard"})
        if "wildcard" in body:
            value = body["wildcard"]
        here = f"{where}.{ref.name}"
        _require_string_field(ref, here)
        if not isinstance(value, str) or not value:
            raise _error(here, "the pattern must be a non-empty string of text, * and ?")
        return Wildcard(ref, value.lower() if ref.lowercase else value)

    def _q_match(self, spec: dict[str, Any], where: str) -> Clause:
        return self._match(spec, where, phrase=False)

    def _q_match_phrase(self, spec: dict[str, Any], where: str) -> Clause:
        return self._match(spec, where, phrase=True)

    def _match(self, spec: dict[str, Any], where: str, phrase: bool) -> Clause:
        allowed = set() if phrase else {"operator"}
        ref, value, body = self._field_spec(spec, where, "query", allowed)
        here = f"{where}.{ref.name}"
        operator = str(body.get("operator", "or")).lower()
        if operator not in ("or", "and"):
            raise _error(f"{here}.operator", "must be or or and")
        if ref.kind not in (Kind.TEXT, Kind.JSON):
            # Elasticsearch does not analyse keyword, number or date fields: match is a term.
            return _term(ref, value, here)
        if not isinstance(value, str):
            if ref.kind is Kind.JSON:
                return _term(ref, value, here)
            raise _error(here, "the query must be a string")
        words = tuple(w.lower() for w in _WORD.findall(value))
        if not words:
            return MatchNone()
        return Words(ref, words, require_all=operator == "and", phrase=phrase)


def _minimum_should_match(value: Any, count: int, where: str) -> int:
    text = str(value).strip() if not isinstance(value, bool) else ""
    match = re.fullmatch(r"(-?)(\d{1,9})(%?)", text)
    if match is None:
        raise _error(where, "must be an integer or a percentage such as 2, -1, 75% or -25%")
    negative, number, percent = match.group(1) == "-", int(match.group(2)), match.group(3)
    amount = count * number // 100 if percent else number
    return max(0, count - amount if negative else amount)


def _require_string_field(ref: FieldRef, where: str) -> None:
    if ref.kind not in (Kind.KEYWORD, Kind.TEXT, Kind.JSON):
        raise _error(where, f"{ref.name} is a {ref.kind.value} field; this clause needs text")


def _time_millis(value: Any, where: str) -> int:
    """Epoch milliseconds (a number or a string of digits) or an ISO-8601 date or time; a
    time without a zone is UTC, as in Elasticsearch. Date math (`now-1d`) is not supported."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if abs(value) > _MAX_MILLIS:
            raise _error(where, "must lie before the year 10000")
        return math.floor(value)
    if isinstance(value, str):
        if re.fullmatch(r"-?\d{1,15}", value):
            return _time_millis(int(value), where)
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            delta = moment - _EPOCH
            return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise _error(where, "must be epoch milliseconds or an ISO-8601 time (date math unsupported)")


def _term(ref: FieldRef, value: Any, where: str) -> Clause:
    if isinstance(value, dict | list) or value is None:
        raise _error(where, "must be a string, number or boolean")
    if ref.kind is Kind.TIME:
        millis = _time_millis(value, where)
        return Range(ref, gte=millis * 1000, lt=(millis + 1) * 1000)
    if ref.kind is Kind.INTEGER:
        if isinstance(value, str):
            try:
                value = float(value) if "." in value else int(value)
            except ValueError:
                raise _error(where, f"{ref.name} is a number field") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _error(where, f"{ref.name} is a number field")
        return Term(ref, value)
    if ref.kind is Kind.BOOLEAN:
        if value in ("true", "false"):
            value = value == "true"
        if not isinstance(value, bool):
            raise _error(where, f"{ref.name} is a boolean field: true or false")
        return Term(ref, value)
    if ref.kind is Kind.JSON:
        if isinstance(value, float) and not math.isfinite(value):
            raise _error(where, "must be a finite number")
        return Term(ref, value)
    # Keyword and text fields hold strings; Elasticsearch turns numbers and booleans into
    # their text, and so do we.
    text = value if isinstance(value, str) else str(value).lower()
    if ref.lowercase:
        text = text.lower()
    if text == "":
        return MatchNone()  # the store keeps an absent text as "", which no term matches
    if ref.attribute == "type_id":
        text = canonical_type_id(text)
    return Term(ref, text)


def _range(ref: FieldRef, bounds: dict[str, Any], where: str) -> Clause:
    if ref.kind is Kind.BOOLEAN:
        raise _error(where, f"{ref.name} is a boolean field; range needs numbers, times or text")
    if ref.kind is Kind.TIME:
        # Stored in microseconds, compared at Elasticsearch's millisecond precision.
        normalised: dict[str, int] = {}
        for name, value in bounds.items():
            millis = _time_millis(value, f"{where}.{name}")
            if name == "gt":
                normalised["gte"] = (millis + 1) * 1000
            elif name == "gte":
                normalised["gte"] = millis * 1000
            elif name == "lt":
                normalised["lt"] = millis * 1000
            else:
                normalised["lt"] = (millis + 1) * 1000
        if ("gt" in bounds and "gte" in bounds) or ("lt" in bounds and "lte" in bounds):
            raise _error(where, "give one lower bound (gt or gte) and one upper (lt or lte)")
        return Range(ref, **normalised)
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in bounds.values()
    )
    strings = all(isinstance(v, str) for v in bounds.values())
    if ref.kind is Kind.INTEGER and not numbers:
        raise _error(where, f"{ref.name} is a number field; bounds must be numbers")
    if ref.kind in (Kind.KEYWORD, Kind.TEXT) and not strings:
        raise _error(where, f"{ref.name} is a text field; bounds must be strings")
    if not (numbers or strings):
        raise _error(where, "bounds must be all numbers or all strings")
    if ref.lowercase:
        bounds = {k: v.lower() for k, v in bounds.items()}
    if ref.kind is Kind.TEXT:
        ref = FieldRef(ref.name, Kind.KEYWORD, ref.attribute)
    return Range(ref, **bounds)


def _parse_sort(value: Any, where: str) -> tuple[FindSort, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    keys = []
    for index, item in enumerate(items):
        here = f"{where}[{index}]"
        order: Any = "asc"
        missing: Any = "_last"
        if isinstance(item, str):
            name = item
            order = "desc" if item == "_score" else "asc"
        else:
            name, spec = _single(item, here, "field")
            if isinstance(spec, dict):
                _options(spec, f"{here}.{name}", {"order", "missing"})
                order, missing = spec.get("order", "asc"), spec.get("missing", "_last")
            else:
                order = spec
        if order not in ("asc", "desc"):
            raise _error(f"{here}.{name}", "order must be asc or desc")
        if missing not in ("_last", "_first"):
            raise _error(f"{here}.{name}.missing", "must be _last or _first")
        if name == "_score":
            continue  # every hit scores the same, so the score orders nothing
        ref = None if name == "_doc" else resolve_field(name, f"{here}.{name}")
        if ref is not None and ref.kind is Kind.TEXT:
            raise _error(f"{here}.{name}", "text is not sortable; sort by message.lowercase")
        keys.append(FindSort(ref, order == "desc", missing == "_first"))
    return tuple(keys)


def _parse_source(value: Any) -> SourceFilter:
    if isinstance(value, bool):
        return SourceFilter(enabled=value)
    if isinstance(value, str):
        return SourceFilter(includes=(value,))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return SourceFilter(includes=tuple(value))
    if isinstance(value, dict):
        _options(value, "_source", {"includes", "excludes", "include", "exclude"})

        def patterns(*names: str) -> tuple[str, ...]:
            found: list[str] = []
            for name in names:
                given = value.get(name, [])
                given = [given] if isinstance(given, str) else given
                if not isinstance(given, list) or not all(isinstance(v, str) for v in given):
                    raise _error(f"_source.{name}", "must be a list of field patterns")
                found += given
            return tuple(found)

        return SourceFilter(
            includes=patterns("includes", "include"), excludes=patterns("excludes", "exclude")
        )
    raise _error("_source", "must be true, false, a pattern, a list or {includes, excludes}")


_METRICS = {kind.value: kind for kind in MetricKind}
_BUCKETS = ("terms", "date_histogram", "histogram", "range")
_NUMERIC = (Kind.INTEGER, Kind.TIME, Kind.JSON)


def _parse_aggregations(value: Any, where: str, top: bool) -> tuple[Aggregation, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _error(where, "must be an object of named aggregations")
    result: list[Aggregation] = []
    for name, body in value.items():
        here = f"{where}.{name}"
        if not isinstance(body, dict):
            raise _error(here, "must be an object with one aggregation type")
        subs = body.get("aggs", body.get("aggregations"))
        kinds = [k for k in body if k not in ("aggs", "aggregations", "meta")]
        if "global" in kinds:
            raise _error(
                f"{here}.global", "global aggregations would count events outside your domains"
            )
        if len(kinds) != 1:
            raise _error(here, "must hold exactly one aggregation type")
        kind = kinds[0]
        spec = body[kind]
        at = f"{here}.{kind}"
        if not isinstance(spec, dict):
            raise _error(at, "must be an object")
        metrics: tuple[Metric, ...] = ()
        children: tuple[TermsAgg | HistogramAgg, ...] = ()
        if subs is not None:
            if not top or kind not in _BUCKETS:
                raise _error(
                    f"{here}.aggs", "sub-aggregations go one level deep, under a bucket aggregation"
                )
            nested = _parse_aggregations(subs, f"{here}.aggs", top=False)
            metrics = tuple(m for m in nested if isinstance(m, Metric))
            children = tuple(a for a in nested if isinstance(a, TermsAgg | HistogramAgg))
            if len(metrics) + len(children) != len(nested) or (children and kind == "range"):
                raise _error(
                    f"{here}.aggs",
                    "sub-aggregations are metrics, or terms and histograms under terms and "
                    "histograms",
                )
        aggregation = _parse_aggregation(name, kind, spec, at, metrics)
        if subs is not None and isinstance(aggregation, TermsAgg | HistogramAgg):
            aggregation = dataclasses.replace(aggregation, children=children)
        result.append(aggregation)
    return tuple(result)


def _agg_field(spec: dict[str, Any], where: str, kinds: Sequence[Kind] | None = None) -> FieldRef:
    if "field" not in spec:
        raise _error(f"{where}.field", "is required (scripts are not supported)")
    ref = resolve_field(spec["field"], f"{where}.field")
    if kinds is not None and ref.kind not in kinds:
        raise _error(
            f"{where}.field",
            f"{ref.name} is a {ref.kind.value} field; needs {', '.join(k.value for k in kinds)}",
        )
    return ref


def _parse_aggregation(
    name: str, kind: str, spec: dict[str, Any], where: str, metrics: tuple[Metric, ...]
) -> Aggregation:
    if kind in _METRICS:
        _options(spec, where, {"field"})
        metric = _METRICS[kind]
        counting = metric in (MetricKind.VALUE_COUNT, MetricKind.CARDINALITY)
        ref = _agg_field(spec, where, None if counting else _NUMERIC)
        if ref.kind is Kind.TEXT and counting:
            ref = FieldRef(ref.name, Kind.KEYWORD, ref.attribute)
        return Metric(name, metric, ref)
    if kind == "terms":
        _options(spec, where, {"field", "size", "order", "min_doc_count", "shard_size"})
        ref = _agg_field(spec, where, (Kind.KEYWORD, Kind.INTEGER, Kind.BOOLEAN, Kind.JSON))
        size = _count(spec.get("size", 10), f"{where}.size", MAX_TERMS_SIZE)
        min_doc_count = spec.get("min_doc_count", 1)
        if (
            isinstance(min_doc_count, bool)
            or not isinstance(min_doc_count, int)
            or min_doc_count < 1
        ):
            raise _error(f"{where}.min_doc_count", "must be an integer of 1 or more")
        by_key, descending = _terms_order(spec.get("order"), f"{where}.order")
        return TermsAgg(name, ref, size, by_key, descending, min_doc_count, metrics)
    if kind == "histogram":
        _options(spec, where, {"field", "interval", "min_doc_count"})
        ref = _agg_field(spec, where, (Kind.INTEGER, Kind.JSON))
        interval = spec.get("interval")
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 < interval < 1e15
        ):
            raise _error(f"{where}.interval", "must be a positive number")
        return HistogramAgg(name, ref, float(interval), 0, 0, _min_doc_count(spec, where), metrics)
    if kind == "date_histogram":
        _options(
            spec,
            where,
            {
                "field",
                "interval",
                "fixed_interval",
                "calendar_interval",
                "min_doc_count",
                "time_zone",
            },
        )
        ref = _agg_field(spec, where, (Kind.TIME,))
        if spec.get("time_zone") not in (None, "UTC", "Z", "+00:00"):
            raise _error(f"{where}.time_zone", "only UTC is supported")
        interval_us, offset_us, months = _date_interval(spec, where)
        return HistogramAgg(
            name, ref, interval_us, offset_us, months, _min_doc_count(spec, where), metrics
        )
    if kind == "range":
        _options(spec, where, {"field", "ranges", "keyed"})
        if spec.get("keyed", False) is not False:
            raise _error(f"{where}.keyed", "keyed buckets are not supported")
        ref = _agg_field(spec, where, _NUMERIC)
        return RangeAgg(name, ref, _ranges(ref, spec.get("ranges"), f"{where}.ranges"), metrics)
    raise _error(
        where,
        "unsupported aggregation; supported: terms, date_histogram, histogram, range, min, max, "
        "avg, sum, value_count, cardinality",
    )


def _min_doc_count(spec: dict[str, Any], where: str) -> int:
    value = spec.get("min_doc_count", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(f"{where}.min_doc_count", "must be an integer of 0 or more")
    return value


def _terms_order(value: Any, where: str) -> tuple[bool, bool]:
    if value is None:
        return False, True
    items = value if isinstance(value, list) else [value]
    if len(items) != 1:
        raise _error(where, "one order key: _count or _key")
    key, direction = _single(items[0], where, "order key")
    if key not in ("_count", "_key", "_term") or direction not in ("asc", "desc"):
        raise _error(
            where, "must be {_count or _key: asc or desc}; sub-aggregation order is not supported"
        )
    return key != "_count", direction == "desc"


_UNITS_US = {"ms": 1000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_CALENDAR = {
    "minute": ("m", 1), "1m": ("m", 1), "hour": ("h", 1), "1h": ("h", 1), "day": ("d", 1),
    "1d": ("d", 1), "week": ("w", 1), "1w": ("w", 1), "month": ("M", 1), "1M": ("M", 1),
    "quarter": ("M", 3), "1q": ("M", 3), "year": ("M", 12), "1y": ("M", 12),
}  # fmt: skip
_WEEK_US = 7 * 86_400_000_000
# Elasticsearch's weeks start on Monday; 1970-01-05 was the first Monday after the epoch.
_MONDAY_US = 4 * 86_400_000_000


def _date_interval(spec: dict[str, Any], where: str) -> tuple[int, int, int]:
    given = [k for k in ("interval", "fixed_interval", "calendar_interval") if k in spec]
    if len(given) != 1:
        raise _error(where, "needs one of calendar_interval, fixed_interval or interval")
    key = given[0]
    value = spec[key]
    here = f"{where}.{key}"
    if not isinstance(value, str):
        raise _error(here, "must be a string such as 1d, 1h, 30m, month")
    if key != "fixed_interval" and value in _CALENDAR:
        unit, count = _CALENDAR[value]
        if unit == "M":
            return 0, 0, count
        if unit == "w":
            return _WEEK_US, _MONDAY_US, 0
        return _UNITS_US[unit], 0, 0
    if key == "calendar_interval":
        raise _error(here, "must be one of minute, hour, day, week, month, quarter, year")
    match = re.fullmatch(r"(\d{1,9})(ms|s|m|h|d)", value)
    if match is None or int(match.group(1)) == 0:
        raise _error(here, "must be a positive whole number of ms, s, m, h or d, such as 90m")
    return int(match.group(1)) * _UNITS_US[match.group(2)], 0, 0


def _ranges(ref: FieldRef, value: Any, where: str) -> tuple[RangeBucket, ...]:
    if not isinstance(value, list) or not value or len(value) > 100:
        raise _error(where, "must be a list of 1 to 100 {from, to} objects")
    buckets = []
    for index, item in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise _error(here, "must be an object {from, to, key}")
        _options(item, here, {"from", "to", "key"})
        ends: list[float | None] = []
        for end in ("from", "to"):
            given = item.get(end)
            if given is None:
                ends.append(None)
            elif ref.kind is Kind.TIME:
                ends.append(_time_millis(given, f"{here}.{end}") * 1000)
            elif isinstance(given, int | float) and not isinstance(given, bool):
                ends.append(float(given))
            else:
                raise _error(f"{here}.{end}", "must be a number")
        key = item.get("key")
        if key is not None and not isinstance(key, str):
            raise _error(f"{here}.key", "must be a string")
        buckets.append(RangeBucket(key or _range_key(ref, ends[0], ends[1]), ends[0], ends[1]))
    return tuple(buckets)


def _range_key(ref: FieldRef, start: float | None, end: float | None) -> str:
    def text(value: float | None) -> str:
        if value is None:
            return "*"
        if ref.kind is Kind.TIME:
            return format_millis(int(value) // 1000)
        return repr(float(value))

    return f"{text(start)}-{text(end)}"


def format_millis(millis: int) -> str:
    seconds, rest = divmod(millis, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:03d}Z"


# --- What the store returns, and the answer -------------------------------------------------


@dataclass(slots=True)
class Bucket:
    """One bucket: its key (a value, a histogram index, or a range's position) and counts."""

    key: Any
    doc_count: int
    metrics: dict[str, Any] = field(default_factory=dict)
    children: dict[str, AggregationResult] = field(default_factory=dict)


@dataclass(slots=True)
class AggregationResult:
    value: Any = None
    buckets: list[Bucket] = field(default_factory=list)
    other_count: int = 0


@dataclass(slots=True)
class FindResult:
    total: int
    events: list[Event]
    aggregations: dict[str, AggregationResult]


class FindRepository(Protocol):
    async def find(self, principal: Principal, request: FindRequest) -> FindResult:
        """Runs the request within the principal's tenant and domain subtree (and entities
        shared with the tenant when the request asks), whatever the query says."""
        ...


def event_value(event: Event, ref: FieldRef) -> Any:
    """The field's value in an event, None when absent (the store keeps absent text as "")."""
    value = getattr(event, ref.attribute)
    if ref.kind is Kind.JSON:
        if ref.key is None:
            return value
        found = value.get(ref.key) if isinstance(value, dict) else None
        return found.micros // 1000 if isinstance(found, Instant) else found
    if isinstance(value, str):
        if value == "":
            return None
        return value.lower() if ref.lowercase else value
    return value


def _millis(micros: int | None) -> int | None:
    return None if micros is None else micros // 1000


def source_document(event: Event) -> dict[str, Any]:
    """Seed 002's event: its field names, times in epoch milliseconds; our own fields beside
    them; custom fields under `custom`. The payload is left out (GET /events/{id} has it)."""
    doc: dict[str, Any] = {
        "id": event.id,
        "timestamp": event.timestamp // 1000,
        "message": event.description,
        "classification": event.classification or None,
        "acknowledgementRequired": event.acknowledgement_required,
        "acknowledged": event.acknowledged,
        "acknowledgedAt": _millis(event.acknowledged_at),
        "acknowledgedBy": event.acknowledged_by or None,
        "type": event.type_id,
        "category": event.category or None,
        "source": event.source,
        "severity": event.severity,
        "code": event.code or None,
        "entityType": event.entity_type or None,
        "entityId": event.entity_id or None,
        "correlationId": event.correlation_id or None,
        "domain": event.domain,
        "appId": event.app_id or None,
        "internal": event.internal,
        "etag": event.etag,
        "createTime": event.create_time // 1000,
        "updateTime": event.update_time // 1000,
    }
    if event.custom_fields:
        doc["custom"] = {
            name: value.micros // 1000 if isinstance(value, Instant) else value
            for name, value in event.custom_fields.items()
        }
    return doc


def _filter_source(doc: dict[str, Any], source: SourceFilter, prefix: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in doc.items():
        path = prefix + key
        if any(fnmatch.fnmatchcase(path, p) for p in source.excludes):
            continue
        whole = not source.includes or any(fnmatch.fnmatchcase(path, p) for p in source.includes)
        if whole:
            if isinstance(value, dict) and source.excludes:
                value = _filter_source(value, SourceFilter(excludes=source.excludes), path + ".")
            result[key] = value
        elif isinstance(value, dict) and any(
            p.startswith(path + ".") or p.startswith("*") for p in source.includes
        ):
            inner = _filter_source(value, source, path + ".")
            if inner:
                result[key] = inner
    return result


def _sort_value(event: Event, key: FindSort) -> Any:
    if key.field is None:
        return event.id
    value = event_value(event, key.field)
    if key.field.kind is Kind.TIME:
        return _millis(value)
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, str | int | float) else None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _metric_document(metric: Metric, value: Any) -> dict[str, Any]:
    if metric.kind in (MetricKind.VALUE_COUNT, MetricKind.CARDINALITY):
        return {"value": int(value or 0)}
    if metric.kind is MetricKind.SUM:
        value = value or 0
    if metric.field.kind is Kind.TIME and value is not None:
        doc: dict[str, Any] = {"value": float(value)}
        if metric.kind in (MetricKind.MIN, MetricKind.MAX):
            doc["value_as_string"] = format_millis(math.floor(value))
        return doc
    return {"value": _number(value)}


def _bucket_metrics(aggregation: Any, bucket: Bucket | None) -> dict[str, Any]:
    metrics = bucket.metrics if bucket else {}
    documents = {m.name: _metric_document(m, metrics.get(m.name)) for m in aggregation.metrics}
    for child in getattr(aggregation, "children", ()):
        found = bucket.children.get(child.name) if bucket else None
        documents[child.name] = aggregation_document(child, found or AggregationResult())
    return documents


def _histogram_document(aggregation: HistogramAgg, result: AggregationResult) -> dict[str, Any]:
    try:
        by_index = {int(b.key): b for b in result.buckets}
    except (OverflowError, ValueError):
        raise _error(
            f"aggs.{aggregation.name}", "values lie too far apart for this interval"
        ) from None
    indexes = sorted(by_index)
    if aggregation.min_doc_count == 0 and indexes:
        if indexes[-1] - indexes[0] >= MAX_BUCKETS:
            raise _error(
                f"aggs.{aggregation.name}", f"would make more than {MAX_BUCKETS} buckets; widen it"
            )
        indexes = list(range(indexes[0], indexes[-1] + 1))
    buckets = []
    for index in indexes:
        bucket = by_index.get(index)
        count = bucket.doc_count if bucket else 0
        if count < aggregation.min_doc_count:
            continue
        doc: dict[str, Any]
        if aggregation.months:
            year, month = divmod(index * aggregation.months, 12)
            start = datetime(year, month + 1, 1, tzinfo=UTC) - _EPOCH
            millis = (start.days * 86_400 + start.seconds) * 1000
            doc = {"key_as_string": format_millis(millis), "key": millis}
        elif aggregation.field.kind is Kind.TIME:
            millis = (index * int(aggregation.interval) + aggregation.offset) // 1000
            doc = {"key_as_string": format_millis(millis), "key": millis}
        else:
            doc = {"key": index * aggregation.interval}
        doc["doc_count"] = count
        doc.update(_bucket_metrics(aggregation, bucket))
        buckets.append(doc)
    return {"buckets": buckets}


def _terms_key(aggregation: TermsAgg, key: Any) -> dict[str, Any]:
    if isinstance(key, bool):
        return {"key": int(key), "key_as_string": "true" if key else "false"}
    return {"key": key}


def aggregation_document(aggregation: Aggregation, result: AggregationResult) -> dict[str, Any]:
    if isinstance(aggregation, Metric):
        return _metric_document(aggregation, result.value)
    if isinstance(aggregation, TermsAgg):
        return {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": result.other_count,
            "buckets": [
                {
                    **_terms_key(aggregation, b.key),
                    "doc_count": b.doc_count,
                    **_bucket_metrics(aggregation, b),
                }
                for b in result.buckets
            ],
        }
    if isinstance(aggregation, HistogramAgg):
        return _histogram_document(aggregation, result)
    buckets = []
    for bucket, spec in zip(result.buckets, aggregation.ranges, strict=True):
        doc: dict[str, Any] = {"key": spec.key}
        for end, value in (("from", spec.start), ("to", spec.end)):
            if value is None:
                continue
            if aggregation.field.kind is Kind.TIME:
                doc[end] = float(value // 1000)
                doc[f"{end}_as_string"] = format_millis(int(value) // 1000)
            else:
                doc[end] = float(value)
        doc["doc_count"] = bucket.doc_count
        doc.update(_bucket_metrics(aggregation, bucket))
        buckets.append(doc)
    return {"buckets": buckets}


def answer_document(request: FindRequest, result: FindResult, took_ms: int) -> dict[str, Any]:
    """Elasticsearch's search response for `result`."""
    hits = []
    for event in result.events:
        hit: dict[str, Any] = {
            "_index": "events",
            "_type": "event",
            "_id": event.id,
            "_score": None if request.sort else 1.0,
        }
        if request.source.enabled:
            hit["_source"] = _filter_source(source_document(event), request.source)
        if request.sort:
            hit["sort"] = [_sort_value(event, key) for key in request.sort]
        hits.append(hit)
    answer: dict[str, Any] = {
        "took": took_ms,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": result.total, "relation": "eq"},
            "max_score": None if request.sort or not hits else 1.0,
            "hits": hits,
        },
    }
    if request.aggregations:
        answer["aggregations"] = {
            a.name: aggregation_document(a, result.aggregations[a.name])
            for a in request.aggregations
        }
    return answer


# The gateway buffers a transcoded answer in 1 MiB; gRPC messages stop at 4 MiB. Both limits
# leave room for headers and framing.
MAX_REST_ANSWER_BYTES = 1_000_000
MAX_GRPC_ANSWER_BYTES = 4_000_000


def check_answer_size(size: int, limit: int) -> None:
    """Refuses an answer too large to deliver, naming the options that make it smaller."""
    if size > limit:
        raise invalid(
            "size",
            f"the answer would be {size} bytes, over the {limit} byte limit; ask for fewer hits "
            "(size) or fewer fields (_source includes/excludes)",
            reason="ANSWER_TOO_LARGE",
        )


class EventFinder:
    """Runs find requests for a principal; the Read role suffices."""

    def __init__(self, repository: FindRepository) -> None:
        self._repository = repository

    async def find(
        self, principal: Principal, document: Any, *, include_shared: bool = False
    ) -> dict[str, Any]:
        principal.require(Role.READ)
        started = time.monotonic()
        request = parse_find_request(document, include_shared)
        result = await self._repository.find(principal, request)
        took = int((time.monotonic() - started) * 1000)
        return answer_document(request, result, took)
