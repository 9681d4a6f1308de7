"""Find's request as plain data: the query (a condition tree of service.domain.conditions),
aggregations, sort keys and _source filter that the parser builds and the store translates."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from service.domain.conditions import Condition
from service.domain.find_fields import FieldRef

DEFAULT_SIZE = 10
MAX_BUCKETS = 10_000

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
    query: Condition
    sort: tuple[FindSort, ...] = ()
    offset: int = 0
    size: int = DEFAULT_SIZE
    source: SourceFilter = SourceFilter()
    aggregations: tuple[Aggregation, ...] = ()
    # Also the events of entities other tenants share with the caller's (read-only).
    include_shared: bool = False
