"""Find's counts answered from event_rollups (events per tenant, domain, type and UTC day; see
persistence/upkeep.py) instead of reading every matching event.

A request qualifies when nothing it asks needs more than those four keys: its query is
match_all, terms on the type, or a timestamp range on whole UTC days (`gte`/`lt` at midnight),
combined with `bool` filters; its aggregations are terms on the type and date histograms on
the timestamp in whole UTC days (fixed intervals of whole days; calendar days, weeks,
months, quarters and years; not with a time_zone off UTC), without metrics, and their
sub-aggregations are the same; and it does not include shared events. The answer is the raw
aggregation's, bucket for bucket: the same counts, order, `size` cut and
`sum_other_doc_count`. Anything else runs on the events (persistence/find_run.py)."""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import peewee

from persistence.queries import SqlBuilder
from persistence.upkeep import DAY_US
from service.domain import find_query as q
from service.domain.access import Principal
from service.domain.conditions import AllOf, AnyOf, Compare, Condition, FieldRef
from service.domain.find_answer import AggregationResult, Bucket

_TYPE = "type_id"
_TIME = "timestamp"


@dataclass(slots=True)
class _Window:
    """What a query keeps: type ids (None: all) and a day range [low, high)."""

    types: frozenset[str] | None = None
    low: int | None = None
    high: int | None = None

    def narrow(self, other: _Window) -> None:
        if other.types is not None:
            self.types = other.types if self.types is None else self.types & other.types
        if other.low is not None:
            self.low = other.low if self.low is None else max(self.low, other.low)
        if other.high is not None:
            self.high = other.high if self.high is None else min(self.high, other.high)


def _plain(ref: Any, attribute: str) -> bool:
    """Whether a find field (of an aggregation) is the standard field itself."""
    return ref.attribute == attribute and ref.key is None and not ref.lowercase


def _bare(ref: FieldRef, attribute: str) -> bool:
    """Whether a condition's field is the standard field itself."""
    return ref.name == attribute and not ref.custom and ref.key is None and not ref.lowercase


def _is_type(condition: Condition) -> bool:
    return (
        isinstance(condition, Compare)
        and condition.op == "eq"
        and _bare(condition.field, _TYPE)
        and isinstance(condition.value, str)
    )


def _window(condition: Condition) -> _Window | None:
    """The window a query keeps, or None when rollups cannot answer it."""
    if isinstance(condition, AllOf):
        window = _Window()  # no parts: every event
        for part in condition.parts:
            inner = _window(part)
            if inner is None:
                return None
            window.narrow(inner)
        return window
    if isinstance(condition, AnyOf):
        # Any of several types (what `terms` on the type parses to).
        if not condition.parts or not all(map(_is_type, condition.parts)):
            return None
        return _Window(types=frozenset(c.value for c in condition.parts))  # type: ignore[union-attr]
    if _is_type(condition):
        return _Window(types=frozenset([condition.value]))  # type: ignore[union-attr]
    if isinstance(condition, Compare):
        bound = condition.value
        if not _bare(condition.field, _TIME) or type(bound) is not int or bound % DAY_US:
            return None
        if condition.op == "ge":
            return _Window(low=bound)
        if condition.op == "lt":
            return _Window(high=bound)
    return None


def _day_aligned(aggregation: q.HistogramAgg) -> bool:
    if aggregation.months:
        return True
    interval = aggregation.interval
    return interval >= DAY_US and interval % DAY_US == 0 and aggregation.offset % DAY_US == 0


def _answers(aggregation: q.Aggregation) -> bool:
    if isinstance(aggregation, q.TermsAgg):
        fits = _plain(aggregation.field, _TYPE)
    elif isinstance(aggregation, q.HistogramAgg):
        fits = _plain(aggregation.field, _TIME) and _day_aligned(aggregation)
    else:
        return False
    return fits and not aggregation.metrics and all(map(_answers, aggregation.children))


def qualifies(request: q.FindRequest) -> _Window | None:
    """The rollup window that answers the request's count and aggregations, if any."""
    if request.include_shared or not all(map(_answers, request.aggregations)):
        return None
    return _window(request.query)


def _epoch_month(day: int) -> int:
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=day)
    return moment.year * 12 + moment.month - 1


def _key(aggregation: q.TermsAgg | q.HistogramAgg, type_id: str, day: int) -> Any:
    if isinstance(aggregation, q.TermsAgg):
        return type_id
    if aggregation.months:
        return _epoch_month(day) // aggregation.months
    return (day - aggregation.offset) // int(aggregation.interval)


def _ordered(aggregation: q.TermsAgg, counts: Counter[Any]) -> list[tuple[Any, int]]:
    """Terms buckets as the SQL orders and cuts them (persistence/find_run.py)."""
    kept = [(k, n) for k, n in counts.items() if n >= aggregation.min_doc_count]
    if aggregation.by_key:
        kept.sort(key=lambda kn: kn[0], reverse=aggregation.descending)
    else:
        kept.sort(key=lambda kn: kn[0])
        kept.sort(key=lambda kn: kn[1], reverse=aggregation.descending)
    return kept[: aggregation.size]


def _buckets(
    aggregation: q.TermsAgg | q.HistogramAgg, cells: Iterable[tuple[str, int, int]]
) -> AggregationResult:
    cells = list(cells)
    counts: Counter[Any] = Counter()
    for type_id, day, count in cells:
        counts[_key(aggregation, type_id, day)] += count
    if isinstance(aggregation, q.TermsAgg):
        top = _ordered(aggregation, counts)
        other = sum(counts.values()) - sum(n for _, n in top)
    else:
        top, other = sorted(counts.items()), 0
    buckets = [Bucket(key, count) for key, count in top]
    for child in aggregation.children:
        by_parent: dict[Any, list[tuple[str, int, int]]] = {}
        for cell in cells:
            by_parent.setdefault(_key(aggregation, cell[0], cell[1]), []).append(cell)
        for bucket in buckets:
            inner = _buckets(child, by_parent.get(bucket.key, []))
            bucket.children[child.name] = inner
    return AggregationResult(buckets=buckets, other_count=other)


def rollup_cells(
    principal: Principal, window: _Window, db: peewee.Database
) -> list[tuple[str, int, int]]:
    """(type id, day, events) of the principal's scope inside the window."""
    p = db.param
    scope = SqlBuilder(isinstance(db, peewee.PostgresqlDatabase), p)
    where, args = scope.scope(principal), scope.args
    if window.types is not None:
        if not window.types:
            return []
        where += f" AND type_id IN ({', '.join([p] * len(window.types))})"
        args += sorted(window.types)
    if window.low is not None:
        where += f" AND day_us >= {p}"
        args.append(window.low)
    if window.high is not None:
        where += f" AND day_us < {p}"
        args.append(window.high)
    rows = db.execute_sql(
        f"SELECT type_id, day_us, SUM(event_count) FROM event_rollups WHERE {where} "
        "GROUP BY type_id, day_us",
        args,
    ).fetchall()
    return [(str(t), int(d), int(n)) for t, d, n in rows if n]


def aggregate(
    aggregations: Iterable[q.Aggregation], cells: list[tuple[str, int, int]]
) -> dict[str, AggregationResult]:
    """Each (qualifying) aggregation's answer from the rollup cells."""
    return {a.name: _buckets(a, cells) for a in aggregations}  # type: ignore[arg-type]
