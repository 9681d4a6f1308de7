"""Runs a find request: the count, the page of hits and each aggregation, as statements
built by FindSql inside the principal's scope (SqlBuilder.scope)."""

from __future__ import annotations

from typing import Any

import peewee

from persistence.find import FindSql, decode_group_value
from persistence.rollups import aggregate, qualifies, rollup_cells
from persistence.rows import SELECT_EVENT, event_from_row
from service.domain import find_query as q
from service.domain.access import Principal
from service.domain.event_fields import ALWAYS_PRESENT
from service.domain.events import Event
from service.domain.find_answer import AggregationResult, Bucket, FindResult
from service.domain.find_fields import Kind


def run_find(
    principal: Principal,
    request: q.FindRequest,
    postgres: bool,
    db: peewee.Database,
    *,
    rollups: bool = True,
) -> FindResult:
    """The find request's answer inside the principal's scope (a reader thread's work); the
    count and aggregations come from the rollups when they can answer them exactly
    (persistence/rollups.py; `rollups=False` always reads the events)."""

    def statement() -> tuple[FindSql, str]:
        sql = FindSql(postgres, db.param)
        scope = sql.scope(principal, include_shared=request.include_shared)
        return sql, f"({scope}) AND ({sql.condition(request.query)})"

    sql, where = statement()
    window = qualifies(request) if rollups else None
    cells: list[tuple[str, int, int]] = []
    if window is not None:
        cells = rollup_cells(principal, window, db)
        total = sum(n for _, _, n in cells)
    else:
        total = db.execute_sql(f"SELECT COUNT(*) FROM events WHERE {where}", sql.args).fetchone()[0]
    events: list[Event] = []
    if request.size and total > request.offset:
        order = sql.find_order(request.sort)
        page = f"LIMIT {int(request.size)} OFFSET {int(request.offset)}"
        rows = db.execute_sql(
            f"{SELECT_EVENT} WHERE {where} ORDER BY {order} {page}", sql.args
        ).fetchall()
        events = [event_from_row(r) for r in rows]
    if window is not None:
        return FindResult(total, events, aggregate(request.aggregations, cells))
    aggregations = {}
    for aggregation in request.aggregations:
        sql, where = statement()
        aggregations[aggregation.name] = _aggregate(db, sql, where, aggregation, total)
    return FindResult(total, events, aggregations)


def _aggregate(
    db: peewee.Database, sql: FindSql, where: str, aggregation: q.Aggregation, total: int
) -> AggregationResult:
    """One aggregation as one GROUP BY statement (two for terms: its top buckets and the
    count of the rest); `sql` already holds the parameters of `where`."""
    if isinstance(aggregation, q.Metric):
        value = db.execute_sql(
            f"SELECT {sql.metric(aggregation)} FROM events WHERE {where}", sql.args
        ).fetchone()[0]
        return AggregationResult(value=value)
    if isinstance(aggregation, q.RangeAgg):
        number = sql.number(aggregation.field)
        columns = []
        for bucket in aggregation.ranges:
            condition = " AND ".join(
                [f"{number} IS NOT NULL"]
                + ([f"{number} >= {bucket.start!r}"] if bucket.start is not None else [])
                + ([f"{number} < {bucket.end!r}"] if bucket.end is not None else [])
            )
            columns.append(f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)")
            columns += [sql.metric(m, condition) for m in aggregation.metrics]
        row = db.execute_sql(
            f"SELECT {', '.join(columns)} FROM events WHERE {where}", sql.args
        ).fetchone()
        width = 1 + len(aggregation.metrics)
        buckets = []
        for index in range(len(aggregation.ranges)):
            values = row[index * width : (index + 1) * width]
            metrics = {m.name: v for m, v in zip(aggregation.metrics, values[1:], strict=True)}
            buckets.append(Bucket(index, int(values[0] or 0), metrics))
        return AggregationResult(buckets=buckets)
    if isinstance(aggregation, q.TermsAgg):
        key = sql.group_value(aggregation.field)
    else:
        key = sql.bucket_index(aggregation)
    metric_columns = "".join(f", {sql.metric(m)}" for m in aggregation.metrics)
    grouped = (
        f"SELECT {key} AS bucket_key, COUNT(*) AS doc_count{metric_columns} FROM events "
        f"WHERE {where} AND {sql.present(aggregation.field, key)} GROUP BY {key}"
    )
    if isinstance(aggregation, q.TermsAgg):
        direction = "DESC" if aggregation.descending else "ASC"
        by_key = sql.key_order(
            aggregation.field, "bucket_key", direction if aggregation.by_key else "ASC"
        )
        order = by_key if aggregation.by_key else [f"doc_count {direction}", *by_key]
        rows = db.execute_sql(
            f"SELECT * FROM ({grouped}) AS g WHERE doc_count >= {int(aggregation.min_doc_count)} "
            f"ORDER BY {', '.join(order)} LIMIT {int(aggregation.size)}",
            sql.args,
        ).fetchall()
    else:
        rows = db.execute_sql(grouped, sql.args).fetchall()
    names = [m.name for m in aggregation.metrics]
    json_keys = isinstance(aggregation, q.TermsAgg) and aggregation.field.kind is Kind.JSON
    buckets = [
        Bucket(
            decode_group_value(sql.postgres, r[0]) if json_keys else r[0],
            int(r[1]),
            dict(zip(names, r[2:], strict=True)),
        )
        for r in rows
    ]
    other = 0
    if isinstance(aggregation, q.TermsAgg):
        counted = total
        if aggregation.field.attribute not in ALWAYS_PRESENT:
            counted = db.execute_sql(
                f"SELECT COUNT(*) FROM events WHERE {where} "
                f"AND {sql.present(aggregation.field, key)}",
                sql.args,
            ).fetchone()[0]
        other = int(counted) - sum(b.doc_count for b in buckets)
    for child in aggregation.children:
        _child_buckets(db, sql, where, aggregation, key, child, buckets)
    return AggregationResult(buckets=buckets, other_count=other)


def _bucket_identity(parent: q.TermsAgg | q.HistogramAgg, postgres: bool, raw: Any) -> Any:
    """A parent bucket's key as a dict key (True and 1 kept apart)."""
    if isinstance(parent, q.HistogramAgg):
        try:
            return ("index", int(raw))
        except (OverflowError, ValueError):
            return ("index", raw)
    if parent.field.kind is Kind.JSON:
        raw = decode_group_value(postgres, raw)
    return (type(raw).__name__, raw)


def _child_buckets(
    db: peewee.Database,
    sql: FindSql,
    where: str,
    parent: q.TermsAgg | q.HistogramAgg,
    parent_key: str,
    child: q.TermsAgg | q.HistogramAgg,
    buckets: list[Bucket],
) -> None:
    """Fills one bucket sub-aggregation of every parent bucket with one GROUP BY over both
    keys; a terms child keeps its top buckets per parent with ROW_NUMBER()."""
    by_identity = {_bucket_identity(parent, sql.postgres, b.key): b for b in buckets}
    terms = isinstance(child, q.TermsAgg)
    key = sql.group_value(child.field) if terms else sql.bucket_index(child)  # type: ignore[arg-type]
    present = f"{sql.present(parent.field, parent_key)} AND {sql.present(child.field, key)}"
    grouped = f"FROM events WHERE {where} AND {present}"
    json_keys = isinstance(child, q.TermsAgg) and child.field.kind is Kind.JSON
    results: dict[Any, AggregationResult] = {}
    if isinstance(child, q.TermsAgg):
        direction = "DESC" if child.descending else "ASC"
        by_key = sql.key_order(child.field, key, direction if child.by_key else "ASC")
        order = by_key if child.by_key else [f"COUNT(*) {direction}", *by_key]
        rows = db.execute_sql(
            f"SELECT * FROM (SELECT {parent_key} AS parent_key, {key} AS bucket_key, "
            f"COUNT(*) AS doc_count, ROW_NUMBER() OVER (PARTITION BY {parent_key} "
            f"ORDER BY {', '.join(order)}) AS bucket_rank {grouped} "
            f"GROUP BY {parent_key}, {key} HAVING COUNT(*) >= {int(child.min_doc_count)}) AS g "
            f"WHERE bucket_rank <= {int(child.size)} ORDER BY parent_key, bucket_rank",
            sql.args,
        ).fetchall()
        counted = dict(
            db.execute_sql(
                f"SELECT {parent_key}, COUNT(*) {grouped} GROUP BY {parent_key}", sql.args
            ).fetchall()
        )
    else:
        rows = db.execute_sql(
            f"SELECT {parent_key}, {key}, COUNT(*) {grouped} GROUP BY {parent_key}, {key}",
            sql.args,
        ).fetchall()
        counted = {}
    for row in rows:
        identity = _bucket_identity(parent, sql.postgres, row[0])
        result = results.setdefault(identity, AggregationResult())
        value = decode_group_value(sql.postgres, row[1]) if json_keys else row[1]
        result.buckets.append(Bucket(value, int(row[2])))
    for raw, count in counted.items():
        identity = _bucket_identity(parent, sql.postgres, raw)
        result = results.setdefault(identity, AggregationResult())
        result.other_count = int(count) - sum(b.doc_count for b in result.buckets)
    for identity, bucket in by_identity.items():
        bucket.children[child.name] = results.get(identity, AggregationResult())
