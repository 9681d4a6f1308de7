"""SQL for find's sorting and aggregations, for SQLite and PostgreSQL. Find's query is a
condition tree (service.domain.conditions), rendered by the one builder this extends
(persistence.queries.SqlBuilder); the field expressions here are the builder's too. Text
compares byte-wise (`COLLATE "C"` on PostgreSQL), like SQLite and Python do.
"""

from __future__ import annotations

from typing import Any

from persistence.queries import SqlBuilder
from service.domain import find_query as q
from service.domain.event_fields import COLUMNS
from service.domain.find_fields import FieldRef, Kind, as_condition


class FindSql(SqlBuilder):
    """Builds one statement's SQL text and its parameters for one backend."""

    def _column(self, ref: FieldRef) -> str:
        return COLUMNS[ref.attribute]

    def json_number_of(self, ref: FieldRef) -> str:
        return self.json_number(as_condition(ref))

    def json_text_of(self, ref: FieldRef) -> str:
        return self.json_text(as_condition(ref))

    def text_of(self, ref: FieldRef) -> str:
        """A string field's text, NULL when absent (the store keeps absent text as "")."""
        return self.text(as_condition(ref))

    def number(self, ref: FieldRef) -> str:
        return self.json_number_of(ref) if ref.kind is Kind.JSON else self._column(ref)

    # --- sorting -----------------------------------------------------------------------------

    def find_order(self, sort: tuple[q.FindSort, ...]) -> str:
        """ORDER BY terms; missing values last unless asked first, then the id."""
        terms: list[str] = []
        for key in sort:
            direction = "DESC" if key.descending else "ASC"
            if key.field is None:
                terms.append(f"id {direction}")
                continue
            ref = key.field
            missing = "0" if key.missing_first else "1"
            present = "1" if key.missing_first else "0"
            if ref.kind is Kind.JSON:
                number, text = self.json_number_of(ref), self.json_text_of(ref)
                terms.append(
                    f"CASE WHEN {number} IS NOT NULL THEN {present} "
                    f"WHEN {text} IS NOT NULL THEN {present} ELSE {missing} END"
                )
                # Numbers sort before strings, then each among its own kind.
                terms.append(f"CASE WHEN {number} IS NOT NULL THEN 0 ELSE 1 END")
                terms += [f"{number} {direction}", f"{self.collate(text)} {direction}"]
                continue
            value = self.text_of(ref) if ref.kind is Kind.KEYWORD else self._column(ref)
            terms.append(f"CASE WHEN {value} IS NULL THEN {missing} ELSE {present} END")
            sortable = self.collate(value) if ref.kind is Kind.KEYWORD else value
            terms.append(f"{sortable} {direction}")
        if not sort:
            terms.append("ts DESC")
        terms.append("id ASC")
        return ", ".join(terms)

    # --- aggregations ------------------------------------------------------------------------

    def metric(self, metric: q.Metric, condition: str | None = None) -> str:
        """The aggregate of one metric, over rows where `condition` holds when given."""
        ref = metric.field
        if metric.kind in (q.MetricKind.VALUE_COUNT, q.MetricKind.CARDINALITY):
            value = self.group_value(ref)
            if ref.kind in (Kind.KEYWORD, Kind.TEXT):
                value = f"NULLIF({value}, '')"
        elif ref.kind is Kind.TIME:
            value = f"CAST({self._column(ref)} / 1000 AS DOUBLE PRECISION)"  # milliseconds
        else:
            value = f"CAST({self.number(ref)} AS DOUBLE PRECISION)"
        if condition is not None:
            value = f"CASE WHEN {condition} THEN {value} END"
        function = {
            q.MetricKind.MIN: "MIN",
            q.MetricKind.MAX: "MAX",
            q.MetricKind.AVG: "AVG",
            q.MetricKind.SUM: "SUM",
            q.MetricKind.VALUE_COUNT: "COUNT",
            q.MetricKind.CARDINALITY: "COUNT",
        }[metric.kind]
        distinct = "DISTINCT " if metric.kind is q.MetricKind.CARDINALITY else ""
        return f"{function}({distinct}{value})"

    def group_value(self, ref: FieldRef) -> str:
        """A field's value as one groupable expression, NULL when absent or not a scalar."""
        if ref.kind is Kind.JSON:
            kind, value = self._json(as_condition(ref))
            if self.postgres:
                return f"(CASE WHEN {kind} IN ('string', 'number', 'boolean') THEN {value} END)"
            # json_extract gives 1 and 0 for true and false: keep them apart from numbers.
            return (
                f"(CASE {kind} WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                f"WHEN 'text' THEN 's:' || {value} WHEN 'integer' THEN {value} "
                f"WHEN 'real' THEN {value} END)"
            )
        if ref.kind in (Kind.KEYWORD, Kind.TEXT) and not ref.lowercase:
            # The bare column groups along its indexes; `present` leaves out the ''.
            return self._column(ref)
        if ref.kind in (Kind.KEYWORD, Kind.TEXT):
            return self.text_of(ref)
        if ref.kind is Kind.TIME:
            return f"({self._column(ref)} / 1000)"  # Elasticsearch keeps milliseconds
        return self._column(ref)

    def present(self, ref: FieldRef, value: str) -> str:
        """The condition that a `group_value` result counts as a value."""
        if ref.kind in (Kind.KEYWORD, Kind.TEXT):
            return f"{value} <> ''"
        return f"{value} IS NOT NULL"

    def key_order(self, ref: FieldRef, key: str, direction: str) -> list[str]:
        """ORDER BY terms for a `group_value` result named `key`: numbers, then strings, then
        booleans, each in its own order."""
        if ref.kind is not Kind.JSON:
            return [f"{self.collate(key) if ref.kind is Kind.KEYWORD else key} {direction}"]
        if self.postgres:
            kind = f"jsonb_typeof({key})"
            return [
                f"CASE {kind} WHEN 'number' THEN 0 WHEN 'string' THEN 1 ELSE 2 END",
                f"(CASE WHEN {kind} = 'number' THEN ({key} #>> '{{}}')::float8 END) {direction}",
                f"(CASE WHEN {kind} <> 'number' THEN ({key} #>> '{{}}') END) COLLATE \"C\" "
                f"{direction}",
            ]
        # SQLite orders numbers before text; 's:' strings sort among themselves, and the
        # booleans 'false' and 'true' go last.
        rank = f"CASE WHEN {key} IN ('true', 'false') THEN 1 ELSE 0 END"
        return [rank, f"{key} {direction}"]

    def bucket_index(self, aggregation: q.HistogramAgg) -> str:
        """The histogram bucket index of a row, NULL when the field is absent."""
        ref = aggregation.field
        if aggregation.months:
            if self.postgres:
                moment = f"(to_timestamp({self._column(ref)} / 1000000) AT TIME ZONE 'UTC')"
                months = (
                    f"(EXTRACT(YEAR FROM {moment}) * 12 + EXTRACT(MONTH FROM {moment}) - 1)::bigint"
                )
            else:
                seconds = f"{self._column(ref)} / 1000000, 'unixepoch'"
                months = (
                    f"(CAST(strftime('%Y', {seconds}) AS INTEGER) * 12 "
                    f"+ CAST(strftime('%m', {seconds}) AS INTEGER) - 1)"
                )
            return f"({months} / {int(aggregation.months)})"
        if ref.kind is Kind.TIME:
            # Floor division of integers, exact for values before the offset too.
            shifted = f"({self._column(ref)} - {int(aggregation.offset)})"
            step = int(aggregation.interval)
            if self.postgres:  # psycopg2 would read % as a parameter marker
                return f"(({shifted} - mod(mod({shifted}, {step}) + {step}, {step})) / {step})"
            return f"(({shifted} - ((({shifted} % {step}) + {step}) % {step})) / {step})"
        ratio = f"(CAST({self.number(ref)} AS DOUBLE PRECISION) / {float(aggregation.interval)!r})"
        if self.postgres:
            return f"floor({ratio})"  # a float8: no overflow; the domain checks the range
        return f"(CAST({ratio} AS INTEGER) - ({ratio} < CAST({ratio} AS INTEGER)))"


def decode_group_value(postgres: bool, value: Any) -> Any:
    """The Python value of a `group_value` result (SQLite tags JSON strings and booleans)."""
    if postgres or not isinstance(value, str):
        return value
    if value in ("true", "false"):
        return value == "true"
    return value[2:] if value.startswith("s:") else value
