"""What the store answers to a find request, and that answer as Elasticsearch's search
response document."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.domain import times
from service.domain.custom_fields import Instant
from service.domain.errors import invalid
from service.domain.event_fields import FIELDS as EVENT_FIELDS
from service.domain.event_fields import EventField
from service.domain.event_fields import Kind as EventKind
from service.domain.events import Event
from service.domain.find_fields import Kind, event_value, find_error
from service.domain.find_query import (
    MAX_BUCKETS,
    Aggregation,
    FindRequest,
    FindSort,
    HistogramAgg,
    Metric,
    MetricKind,
    SourceFilter,
    TermsAgg,
)

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


def _millis(micros: int | None) -> int | None:
    return None if micros is None else micros // 1000


def _source_value(field: EventField, value: Any) -> Any:
    if field.kind is EventKind.TIME:
        return _millis(value)
    if field.kind is EventKind.TEXT and field.optional and not field.words:
        return value or None  # an unset keyword is null; a text keeps its ""
    return value


_SEARCHED = tuple(f for f in EVENT_FIELDS if f.find)


def source_document(event: Event) -> dict[str, Any]:
    """The search API's event (docs/find-api.md#event-shape): every field under its first find name,
    times in epoch milliseconds, custom fields under `custom`. The payload is left out
    (GET /events/{id} has it)."""
    doc = {f.find[0]: _source_value(f, getattr(event, f.attribute)) for f in _SEARCHED}
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
            doc["value_as_string"] = times.format_millis(math.floor(value))
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
        raise find_error(
            f"aggs.{aggregation.name}", "values lie too far apart for this interval"
        ) from None
    indexes = sorted(by_index)
    if aggregation.min_doc_count == 0 and indexes:
        if indexes[-1] - indexes[0] >= MAX_BUCKETS:
            raise find_error(
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
            millis = times.micros_since_epoch(datetime(year, month + 1, 1, tzinfo=UTC)) // 1000
            doc = {"key_as_string": times.format_millis(millis), "key": millis}
        elif aggregation.field.kind is Kind.TIME:
            millis = (index * int(aggregation.interval) + aggregation.offset) // 1000
            doc = {"key_as_string": times.format_millis(millis), "key": millis}
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
                doc[f"{end}_as_string"] = times.format_millis(int(value) // 1000)
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
