"""Find's parser: an Elasticsearch search request checked and normalised into a FindRequest
(times in microseconds, ranges half-open where Elasticsearch rounds to milliseconds). Every
rule it enforces names the clause that broke it, with the reason `INVALID_ARGUMENTS` (or
`PROPERTY_REQUIRED` when there is no query)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

from service.domain import times
from service.domain.conditions import (
    ANY_RUN,
    MATCH_ALL,
    MATCH_NONE,
    ONE_CHAR,
    AllOf,
    AnyOf,
    AtLeast,
    Compare,
    Condition,
    Exists,
    Negation,
    Pattern,
    Prefix,
    Words,
)
from service.domain.conditions import FieldRef as ConditionField
from service.domain.custom_fields import canonical_type_id
from service.domain.errors import invalid
from service.domain.find_fields import (
    PROPERTY_REQUIRED,
    FieldRef,
    Kind,
    as_condition,
    find_error,
    resolve_field,
)
from service.domain.find_query import (
    DEFAULT_SIZE,
    Aggregation,
    FindRequest,
    FindSort,
    HistogramAgg,
    Metric,
    MetricKind,
    RangeAgg,
    RangeBucket,
    SourceFilter,
    TermsAgg,
)

Clause = Condition
_ID = ConditionField("id", "string")
_BOUNDS = {"gt": "gt", "gte": "ge", "lt": "lt", "lte": "le"}

MAX_SIZE = 1000
# Elasticsearch's index.max_result_window: deeper pages need a narrower query.
MAX_RESULT_WINDOW = 10_000
MAX_TERMS_SIZE = 1000
MAX_CLAUSES = 1024
_WORD = re.compile(r"\w+")

# --- Parsing --------------------------------------------------------------------------------

_REQUEST_KEYS = {"query", "size", "from", "sort", "_source", "aggs", "aggregations"}
# Accepted and ignored: they change scores or reporting, never which events match.
_IGNORED_KEYS = {"track_total_hits", "track_scores", "timeout"}


def parse_find_request(document: Any, include_shared: bool = False) -> FindRequest:
    """Accepts `{"query": {clause}, "size": ...}` and the find API's form
    (docs/find-api.md#find), where the whole search request sits inside `query`:
    `{"query": {"size": 1000, "query": {clause}}}`."""
    if not isinstance(document, dict):
        raise find_error("body", "must be a JSON object with a query")
    _check_values(document, "body")
    inner = document.get("query")
    if isinstance(inner, dict) and inner and set(inner) <= _REQUEST_KEYS | _IGNORED_KEYS:
        both = sorted(set(inner) & (set(document) - {"query"}))
        if both:
            raise find_error(both[0], "given both inside query and beside it; give it once")
        document = {**{k: v for k, v in document.items() if k != "query"}, **inner}
    unknown = sorted(set(document) - _REQUEST_KEYS - _IGNORED_KEYS)
    if unknown:
        raise find_error(
            unknown[0], f"unsupported search option; supported: {', '.join(sorted(_REQUEST_KEYS))}"
        )
    if "query" not in document or document["query"] in (None, {}):
        raise invalid("query", 'a query is required, such as {"match_all": {}}', PROPERTY_REQUIRED)
    parser = _Parser()
    query = parser.clause(document["query"], "query")
    size = _count(document.get("size", DEFAULT_SIZE), "size", MAX_SIZE)
    offset = _count(document.get("from", 0), "from", MAX_RESULT_WINDOW)
    if offset + size > MAX_RESULT_WINDOW:
        raise find_error("from", f"from + size must be at most {MAX_RESULT_WINDOW}")
    aggs_key = "aggs" if "aggs" in document else "aggregations"
    if "aggs" in document and "aggregations" in document:
        raise find_error("aggregations", "give aggs or aggregations, not both")
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
        raise find_error(where, "integers must fit in 64 bits")
    elif isinstance(value, str) and "\x00" in value:
        raise find_error(where, "strings must not contain NUL characters")


def _count(value: Any, where: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise find_error(where, f"must be an integer from 0 to {limit}")
    return value


def _single(body: Any, where: str, what: str) -> tuple[str, Any]:
    if not isinstance(body, dict) or len(body) != 1:
        raise find_error(where, f"must be an object with exactly one {what}")
    return next(iter(body.items()))


def _options(body: dict[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed - {"boost", "_name"})
    if unknown:
        raise find_error(
            f"{where}.{unknown[0]}",
            f"unsupported option; supported: {', '.join(sorted(allowed)) or 'none'}",
        )


class _Parser:
    def __init__(self) -> None:
        self.clauses = 0

    def clause(self, body: Any, where: str) -> Clause:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise find_error(where, f"a query may have at most {MAX_CLAUSES} clauses")
        kind, spec = _single(body, where, "query clause, such as term or bool")
        here = f"{where}.{kind}"
        method = getattr(self, f"_q_{kind}", None)
        if method is None:
            raise find_error(
                here,
                "unsupported query clause; supported: bool, match_all, match_none, term, terms, "
                "range, exists, prefix, wildcard, match, match_phrase, ids",
            )
        if not isinstance(spec, dict):
            raise find_error(here, "must be an object")
        result: Clause = method(spec, here)
        return result

    def _q_match_all(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, set())
        return MATCH_ALL

    def _q_match_none(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, set())
        return MATCH_NONE

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
            return MATCH_NONE
        # Every must (and filter), no must_not, at least `minimum` of should.
        parts = [*must, *(Negation(c) for c in must_not)]
        if minimum == 1:
            parts.append(AnyOf(should))
        elif minimum > 1:
            parts.append(AtLeast(minimum, should))
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

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
                raise find_error(here, f"needs {value_key}")
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
            raise find_error(here, "must be a list of values (terms lookup is not supported)")
        if len(values) > MAX_CLAUSES:
            raise find_error(here, f"at most {MAX_CLAUSES} values")
        options = tuple(_term(ref, v, f"{here}[{i}]") for i, v in enumerate(values))
        return AnyOf(options) if options else MATCH_NONE

    def _q_ids(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, {"values", "type"})
        values = spec.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise find_error(f"{where}.values", "must be a list of id strings")
        return Compare(_ID, "in", tuple(values)) if values else MATCH_NONE

    def _q_exists(self, spec: dict[str, Any], where: str) -> Clause:
        _options(spec, where, {"field"})
        return Exists(as_condition(resolve_field(spec.get("field"), f"{where}.field")))

    def _q_range(self, spec: dict[str, Any], where: str) -> Clause:
        name, body = _single(spec, where, "field")
        here = f"{where}.{name}"
        ref = resolve_field(name, here)
        if not isinstance(body, dict):
            raise find_error(here, "must be an object of gt, gte, lt, lte")
        _options(body, here, {"gt", "gte", "lt", "lte", "format", "time_zone"})
        if body.get("time_zone") not in (None, "UTC", "Z", "+00:00"):
            raise find_error(f"{here}.time_zone", "only UTC is supported")
        if "format" in body and body["format"] not in ("epoch_millis", "strict_date_optional_time"):
            raise find_error(f"{here}.format", "only epoch_millis or strict_date_optional_time")
        bounds = {k: body[k] for k in ("gt", "gte", "lt", "lte") if body.get(k) is not None}
        return _range(ref, bounds, here)

    def _q_prefix(self, spec: dict[str, Any], where: str) -> Clause:
        ref, value, _ = self._field_spec(spec, where, "value", set())
        here = f"{where}.{ref.name}"
        _require_string_field(ref, here)
        if not isinstance(value, str):
            raise find_error(here, "the prefix must be a string")
        return Prefix(as_condition(ref), value.lower() if ref.lowercase else value)

    def _q_wildcard(self, spec: dict[str, Any], where: str) -> Clause:
        ref, value, body = self._field_spec(spec, where, "value", {"wildcard"})
        if "wildcard" in body:
            value = body["wildcard"]
        here = f"{where}.{ref.name}"
        _require_string_field(ref, here)
        if not isinstance(value, str) or not value:
            raise find_error(here, "the pattern must be a non-empty string of text, * and ?")
        field = as_condition(ref)
        like = Compare(field, "like", _wildcard(value.lower() if ref.lowercase else value))
        # Unset text is stored as "", which no wildcard matches (not even "*").
        return like if ref.kind is Kind.JSON else AllOf((Exists(field), like))

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
            raise find_error(f"{here}.operator", "must be or or and")
        if ref.kind not in (Kind.TEXT, Kind.JSON):
            # Elasticsearch does not analyse keyword, number or date fields: match is a term.
            return _term(ref, value, here)
        if not isinstance(value, str):
            if ref.kind is Kind.JSON:
                return _term(ref, value, here)
            raise find_error(here, "the query must be a string")
        words = tuple(w.lower() for w in _WORD.findall(value))
        if not words:
            return MATCH_NONE
        return Words(as_condition(ref), words, require_all=operator == "and", phrase=phrase)


def _wildcard(text: str) -> Pattern:
    """A wildcard's text as a pattern: * any run, ? one character, the rest literal."""
    segments: list[str] = []
    for part in re.split(r"([*?])", text):
        if part == "*":
            segments.append(ANY_RUN)
        elif part == "?":
            segments.append(ONE_CHAR)
        elif part:
            segments.append(part)
    return tuple(segments)


def _bounded(ref: FieldRef, bounds: dict[str, Any]) -> Clause:
    """The field within `bounds` (gt, gte, lt, lte); with none, any value."""
    field = as_condition(ref)
    parts = [Compare(field, _BOUNDS[op], value) for op, value in bounds.items()]
    if not parts:
        return Exists(field)
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _minimum_should_match(value: Any, count: int, where: str) -> int:
    text = str(value).strip() if not isinstance(value, bool) else ""
    match = re.fullmatch(r"(-?)(\d{1,9})(%?)", text)
    if match is None:
        raise find_error(where, "must be an integer or a percentage such as 2, -1, 75% or -25%")
    negative, number, percent = match.group(1) == "-", int(match.group(2)), match.group(3)
    amount = count * number // 100 if percent else number
    return max(0, count - amount if negative else amount)


def _require_string_field(ref: FieldRef, where: str) -> None:
    if ref.kind not in (Kind.KEYWORD, Kind.TEXT, Kind.JSON):
        raise find_error(where, f"{ref.name} is a {ref.kind.value} field; this clause needs text")


def _time_millis(value: Any, where: str) -> int:
    """Epoch milliseconds (a number or a string of digits) or an ISO-8601 date or time; a
    time without a zone is UTC, as in Elasticsearch. Date math (`now-1d`) is not supported."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if abs(value) > _MAX_MILLIS:
            raise find_error(where, "must lie before the year 10000")
        return math.floor(value)
    if isinstance(value, str):
        if re.fullmatch(r"-?\d{1,15}", value):
            return _time_millis(int(value), where)
        try:
            return times.parse_iso(value.replace("z", "Z"), assume_utc=True) // 1000
        except ValueError:
            pass
    raise find_error(
        where, "must be epoch milliseconds or an ISO-8601 time (date math unsupported)"
    )


def _term(ref: FieldRef, value: Any, where: str) -> Clause:
    if isinstance(value, dict | list) or value is None:
        raise find_error(where, "must be a string, number or boolean")
    if ref.kind is Kind.TIME:
        millis = _time_millis(value, where)
        return _bounded(ref, {"gte": millis * 1000, "lt": (millis + 1) * 1000})
    if ref.kind is Kind.INTEGER:
        if isinstance(value, str):
            try:
                value = float(value) if "." in value else int(value)
            except ValueError:
                raise find_error(where, f"{ref.name} is a number field") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise find_error(where, f"{ref.name} is a number field")
        return Compare(as_condition(ref), "eq", value)
    if ref.kind is Kind.BOOLEAN:
        if value in ("true", "false"):
            value = value == "true"
        if not isinstance(value, bool):
            raise find_error(where, f"{ref.name} is a boolean field: true or false")
        return Compare(as_condition(ref), "eq", value)
    if ref.kind is Kind.JSON:
        if isinstance(value, float) and not math.isfinite(value):
            raise find_error(where, "must be a finite number")
        return Compare(as_condition(ref), "eq", value)
    # Keyword and text fields hold strings; Elasticsearch turns numbers and booleans into
    # their text, and so do we.
    text = value if isinstance(value, str) else str(value).lower()
    if ref.lowercase:
        text = text.lower()
    if text == "":
        return MATCH_NONE  # the store keeps an absent text as "", which no term matches
    if ref.attribute == "type_id":
        text = canonical_type_id(text)
    return Compare(as_condition(ref), "eq", text)


def _range(ref: FieldRef, bounds: dict[str, Any], where: str) -> Clause:
    if ref.kind is Kind.BOOLEAN:
        raise find_error(
            where, f"{ref.name} is a boolean field; range needs numbers, times or text"
        )
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
            raise find_error(where, "give one lower bound (gt or gte) and one upper (lt or lte)")
        return _bounded(ref, normalised)
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in bounds.values()
    )
    strings = all(isinstance(v, str) for v in bounds.values())
    if ref.kind is Kind.INTEGER and not numbers:
        raise find_error(where, f"{ref.name} is a number field; bounds must be numbers")
    if ref.kind in (Kind.KEYWORD, Kind.TEXT) and not strings:
        raise find_error(where, f"{ref.name} is a text field; bounds must be strings")
    if not (numbers or strings):
        raise find_error(where, "bounds must be all numbers or all strings")
    if ref.lowercase:
        bounds = {k: v.lower() for k, v in bounds.items()}
    return _bounded(ref, bounds)


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
            raise find_error(f"{here}.{name}", "order must be asc or desc")
        if missing not in ("_last", "_first"):
            raise find_error(f"{here}.{name}.missing", "must be _last or _first")
        if name == "_score":
            continue  # every hit scores the same, so the score orders nothing
        ref = None if name == "_doc" else resolve_field(name, f"{here}.{name}")
        if ref is not None and ref.kind is Kind.TEXT:
            raise find_error(f"{here}.{name}", "text is not sortable; sort by message.lowercase")
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
                    raise find_error(f"_source.{name}", "must be a list of field patterns")
                found += given
            return tuple(found)

        return SourceFilter(
            includes=patterns("includes", "include"), excludes=patterns("excludes", "exclude")
        )
    raise find_error("_source", "must be true, false, a pattern, a list or {includes, excludes}")


_METRICS = {kind.value: kind for kind in MetricKind}
_BUCKETS = ("terms", "date_histogram", "histogram", "range")
_NUMERIC = (Kind.INTEGER, Kind.TIME, Kind.JSON)


def _parse_aggregations(value: Any, where: str, top: bool) -> tuple[Aggregation, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise find_error(where, "must be an object of named aggregations")
    result: list[Aggregation] = []
    for name, body in value.items():
        here = f"{where}.{name}"
        if not isinstance(body, dict):
            raise find_error(here, "must be an object with one aggregation type")
        subs = body.get("aggs", body.get("aggregations"))
        kinds = [k for k in body if k not in ("aggs", "aggregations", "meta")]
        if "global" in kinds:
            raise find_error(
                f"{here}.global", "global aggregations would count events outside your domains"
            )
        if len(kinds) != 1:
            raise find_error(here, "must hold exactly one aggregation type")
        kind = kinds[0]
        spec = body[kind]
        at = f"{here}.{kind}"
        if not isinstance(spec, dict):
            raise find_error(at, "must be an object")
        metrics: tuple[Metric, ...] = ()
        children: tuple[TermsAgg | HistogramAgg, ...] = ()
        if subs is not None:
            if not top or kind not in _BUCKETS:
                raise find_error(
                    f"{here}.aggs", "sub-aggregations go one level deep, under a bucket aggregation"
                )
            nested = _parse_aggregations(subs, f"{here}.aggs", top=False)
            metrics = tuple(m for m in nested if isinstance(m, Metric))
            children = tuple(a for a in nested if isinstance(a, TermsAgg | HistogramAgg))
            if len(metrics) + len(children) != len(nested) or (children and kind == "range"):
                raise find_error(
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
        raise find_error(f"{where}.field", "is required (scripts are not supported)")
    ref = resolve_field(spec["field"], f"{where}.field")
    if kinds is not None and ref.kind not in kinds:
        raise find_error(
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
            raise find_error(f"{where}.min_doc_count", "must be an integer of 1 or more")
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
            raise find_error(f"{where}.interval", "must be a positive number")
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
            raise find_error(f"{where}.time_zone", "only UTC is supported")
        interval_us, offset_us, months = _date_interval(spec, where)
        return HistogramAgg(
            name, ref, interval_us, offset_us, months, _min_doc_count(spec, where), metrics
        )
    if kind == "range":
        _options(spec, where, {"field", "ranges", "keyed"})
        if spec.get("keyed", False) is not False:
            raise find_error(f"{where}.keyed", "keyed buckets are not supported")
        ref = _agg_field(spec, where, _NUMERIC)
        return RangeAgg(name, ref, _ranges(ref, spec.get("ranges"), f"{where}.ranges"), metrics)
    raise find_error(
        where,
        "unsupported aggregation; supported: terms, date_histogram, histogram, range, min, max, "
        "avg, sum, value_count, cardinality",
    )


def _min_doc_count(spec: dict[str, Any], where: str) -> int:
    value = spec.get("min_doc_count", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise find_error(f"{where}.min_doc_count", "must be an integer of 0 or more")
    return value


def _terms_order(value: Any, where: str) -> tuple[bool, bool]:
    if value is None:
        return False, True
    items = value if isinstance(value, list) else [value]
    if len(items) != 1:
        raise find_error(where, "one order key: _count or _key")
    key, direction = _single(items[0], where, "order key")
    if key not in ("_count", "_key", "_term") or direction not in ("asc", "desc"):
        raise find_error(
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
        raise find_error(where, "needs one of calendar_interval, fixed_interval or interval")
    key = given[0]
    value = spec[key]
    here = f"{where}.{key}"
    if not isinstance(value, str):
        raise find_error(here, "must be a string such as 1d, 1h, 30m, month")
    if key != "fixed_interval" and value in _CALENDAR:
        unit, count = _CALENDAR[value]
        if unit == "M":
            return 0, 0, count
        if unit == "w":
            return _WEEK_US, _MONDAY_US, 0
        return _UNITS_US[unit], 0, 0
    if key == "calendar_interval":
        raise find_error(here, "must be one of minute, hour, day, week, month, quarter, year")
    match = re.fullmatch(r"(\d{1,9})(ms|s|m|h|d)", value)
    if match is None or int(match.group(1)) == 0:
        raise find_error(here, "must be a positive whole number of ms, s, m, h or d, such as 90m")
    return int(match.group(1)) * _UNITS_US[match.group(2)], 0, 0


def _ranges(ref: FieldRef, value: Any, where: str) -> tuple[RangeBucket, ...]:
    if not isinstance(value, list) or not value or len(value) > 100:
        raise find_error(where, "must be a list of 1 to 100 {from, to} objects")
    buckets = []
    for index, item in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise find_error(here, "must be an object {from, to, key}")
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
                raise find_error(f"{here}.{end}", "must be a number")
        key = item.get("key")
        if key is not None and not isinstance(key, str):
            raise find_error(f"{here}.key", "must be a string")
        buckets.append(RangeBucket(key or _range_key(ref, ends[0], ends[1]), ends[0], ends[1]))
    return tuple(buckets)


def _range_key(ref: FieldRef, start: float | None, end: float | None) -> str:
    def text(value: float | None) -> str:
        if value is None:
            return "*"
        if ref.kind is Kind.TIME:
            return times.format_millis(int(value) // 1000)
        return repr(float(value))

    return f"{text(start)}-{text(end)}"
