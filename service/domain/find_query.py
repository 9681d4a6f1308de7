"""Find's request as plain data: the query clauses, aggregations, sort keys and _source
filter that the parser builds and the store translates."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from service.domain.find_fields import FieldRef

DEFAULT_SIZE = 10
MAX_BUCKETS = 10_000

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
