"""SQL for find: the query of service.domain.find_query translated for SQLite and PostgreSQL.

Every predicate is built NULL-free (`COALESCE(..., FALSE)`), so that `must_not` keeps events
that lack a field, as Elasticsearch does. Values always travel as parameters; only field keys,
which the domain restricts to letters, digits, `_` and `-`, are written into JSON paths.
Text compares byte-wise (`COLLATE "C"` on PostgreSQL), like SQLite and Python do.
"""

from __future__ import annotations

import re
from typing import Any

import peewee

from service.domain import find_query as q
from service.domain.event_fields import FIELDS
from service.domain.event_fields import Kind as EventKind
from service.domain.find_fields import FieldRef, Kind

_COLUMNS = {
    "timestamp": "ts",
    "acknowledgement_required": "ack_required",
    "custom_fields": "custom",
}
_WORD = re.compile(r"\w+")


def _words(text: str | None) -> str | None:
    """SQLite's half of match: ` word word ` in lowercase, so LIKE '% word %' finds words."""
    if text is None:
        return None
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def install_sqlite_functions(database: peewee.Database) -> None:
    """Registers the functions find needs on every SQLite connection (SQLite's own lower()
    only folds ASCII, Python's folds all of Unicode, as PostgreSQL's does)."""
    if isinstance(database, peewee.SqliteDatabase):
        database.register_function(_words, "eventmgmt_words", 1, deterministic=True)
        database.register_function(_lower, "eventmgmt_lower", 1, deterministic=True)


class FindSql:
    """Builds one statement's SQL text and its parameters for one backend."""

    def __init__(self, postgres: bool, param: str) -> None:
        self.postgres = postgres
        self.param = param
        self.args: list[Any] = []
        self.false = "FALSE"

    def p(self, value: Any) -> str:
        self.args.append(value)
        return self.param

    # --- field expressions ------------------------------------------------------------------

    def _column(self, ref: FieldRef) -> str:
        return _COLUMNS.get(ref.attribute, ref.attribute)

    def _json(self, ref: FieldRef) -> tuple[str, str]:
        """(type expression, value expression) of a JSON field; the type is NULL when absent."""
        column = self._column(ref)
        if self.postgres:
            value = f"({column}::jsonb)" if ref.key is None else f"({column}::jsonb -> '{ref.key}')"
            return f"jsonb_typeof({value})", value
        path = "'$'" if ref.key is None else f"'$.\"{ref.key}\"'"
        return f"json_type({column}, {path})", f"json_extract({column}, {path})"

    def json_text(self, ref: FieldRef) -> str:
        kind, value = self._json(ref)
        if self.postgres:
            return f"(CASE WHEN {kind} = 'string' THEN {value} #>> '{{}}' END)"
        return f"(CASE WHEN {kind} = 'text' THEN {value} END)"

    def json_number(self, ref: FieldRef) -> str:
        """A JSON number; a custom TIMESTAMP value ({"$timestamp": micros}) counts as its
        epoch milliseconds, as Elasticsearch keeps dates."""
        kind, value = self._json(ref)
        if self.postgres:
            instant = f"floor(({value} ->> '$timestamp')::float8 / 1000)"
            return (
                f"(CASE WHEN {kind} = 'number' THEN ({value} #>> '{{}}')::float8 "
                f"WHEN {kind} = 'object' THEN {instant} END)"
            )
        column = self._column(ref)
        instant = f'(json_extract({column}, \'$."{ref.key}"."$timestamp"\') / 1000)'
        return (
            f"(CASE WHEN {kind} IN ('integer', 'real') THEN {value} "
            f"WHEN {kind} = 'object' THEN {instant} END)"
        )

    def json_boolean(self, ref: FieldRef) -> str:
        kind, value = self._json(ref)
        if self.postgres:
            return f"(CASE WHEN {kind} = 'boolean' THEN ({value} #>> '{{}}')::boolean END)"
        return f"(CASE {kind} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"

    def text(self, ref: FieldRef) -> str:
        """A string field's text, NULL when absent (the store keeps absent text as '')."""
        if ref.kind is Kind.JSON:
            return self.json_text(ref)
        value = f"NULLIF({self._column(ref)}, '')"
        if ref.lowercase:
            value = f"lower({value})" if self.postgres else f"eventmgmt_lower({value})"
        return value

    def collate(self, expression: str) -> str:
        return f'{expression} COLLATE "C"' if self.postgres else expression

    def number(self, ref: FieldRef) -> str:
        return self.json_number(ref) if ref.kind is Kind.JSON else self._column(ref)

    # --- predicates --------------------------------------------------------------------------

    def where(self, clause: q.Clause) -> str:
        if isinstance(clause, q.MatchAll):
            return "TRUE" if self.postgres else "1"
        if isinstance(clause, q.MatchNone):
            return self.false
        if isinstance(clause, q.Bool):
            return self._bool(clause)
        if _never_null(clause):
            # Left bare so that indexes on the column serve (COALESCE would hide it).
            return f"({self._leaf(clause)})"
        return f"COALESCE(({self._leaf(clause)}), {self.false})"

    def _bool(self, clause: q.Bool) -> str:
        parts = [self.where(c) for c in clause.must]
        parts += [f"NOT ({self.where(c)})" for c in clause.must_not]
        if clause.should and clause.minimum_should > 0:
            options = [self.where(c) for c in clause.should]
            if clause.minimum_should == 1:
                parts.append("(" + " OR ".join(options) + ")")
            else:
                counted = " + ".join(f"(CASE WHEN {o} THEN 1 ELSE 0 END)" for o in options)
                parts.append(f"({counted}) >= {int(clause.minimum_should)}")
        if not parts:
            return self.where(q.MatchAll())
        return "(" + " AND ".join(parts) + ")"

    def _leaf(self, clause: q.Clause) -> str:
        if isinstance(clause, q.Term):
            return self._term(clause.field, clause.value)
        if isinstance(clause, q.Range):
            return self._range(clause)
        if isinstance(clause, q.Exists):
            return self._exists(clause.field)
        if isinstance(clause, q.Ids):
            return f"id IN ({', '.join(self.p(v) for v in clause.values)})"
        if isinstance(clause, q.Prefix):
            text = self.text(clause.field)
            return f"substr({text}, 1, {len(clause.value)}) = {self.p(clause.value)}"
        if isinstance(clause, q.Wildcard):
            return self._wildcard(clause)
        if isinstance(clause, q.Words):
            return self._words(clause)
        raise TypeError(f"no SQL for {clause!r}")

    def _term(self, ref: FieldRef, value: Any) -> str:
        if ref.kind is Kind.JSON:
            if isinstance(value, bool):
                return (
                    f"{self.json_boolean(ref)} = {self.p(value if self.postgres else int(value))}"
                )
            if isinstance(value, int | float):
                return f"{self.json_number(ref)} = {self.p(value)}"
            return f"{self.json_text(ref)} = {self.p(value)}"
        if ref.kind in (Kind.KEYWORD, Kind.TEXT) and not ref.lowercase:
            # The bare column, so that its indexes serve; the domain never asks for ''.
            return f"{self._column(ref)} = {self.p(value)}"
        if ref.kind in (Kind.KEYWORD, Kind.TEXT):
            return f"{self.text(ref)} = {self.p(value)}"
        return f"{self._column(ref)} = {self.p(value)}"

    def _range(self, clause: q.Range) -> str:
        ref = clause.field
        bounds = [
            (op, value)
            for op, value in (
                (">", clause.gt),
                (">=", clause.gte),
                ("<", clause.lt),
                ("<=", clause.lte),
            )
            if value is not None
        ]
        if not bounds:
            return self._exists(ref)
        strings = all(isinstance(v, str) for _, v in bounds)
        if ref.kind in (Kind.TIME, Kind.INTEGER):
            value = self._column(ref)
        elif strings:
            value = self.collate(self.text(ref))
        else:
            value = self.number(ref)
        return " AND ".join(f"{value} {op} {self.p(v)}" for op, v in bounds)

    def _exists(self, ref: FieldRef) -> str:
        if ref.kind is Kind.JSON:
            kind, _ = self._json(ref)
            return f"{kind} IS NOT NULL AND {kind} <> 'null'"
        if ref.kind in (Kind.KEYWORD, Kind.TEXT):
            return f"{self._column(ref)} <> ''"
        return f"{self._column(ref)} IS NOT NULL"

    def _wildcard(self, clause: q.Wildcard) -> str:
        text = self.text(clause.field)
        if self.postgres:
            pattern = re.sub(r"([\\%_])", r"\\\1", clause.pattern)
            pattern = pattern.replace("*", "%").replace("?", "_")
            return f"{self.collate(text)} LIKE {self.p(pattern)} ESCAPE '\\'"
        # GLOB is case-sensitive and knows * and ?; only [ needs escaping.
        return f"{text} GLOB {self.p(clause.pattern.replace('[', '[[]'))}"

    def _words(self, clause: q.Words) -> str:
        text = self.text(clause.field)
        if self.postgres:
            words = f"(' ' || lower(regexp_replace({text}, '\\W+', ' ', 'g')) || ' ')"
        else:
            words = f"eventmgmt_words({text})"

        def like(phrase: str) -> str:
            escaped = phrase.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
            return f"{words} LIKE {self.p(f'% {escaped} %')} ESCAPE '\\'"

        if clause.phrase:
            return like(" ".join(clause.words))
        joiner = " AND " if clause.require_all else " OR "
        return "(" + joiner.join(like(w) for w in clause.words) + ")"

    # --- sorting -----------------------------------------------------------------------------

    def order_by(self, sort: tuple[q.FindSort, ...]) -> str:
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
                number, text = self.json_number(ref), self.json_text(ref)
                terms.append(
                    f"CASE WHEN {number} IS NOT NULL THEN {present} "
                    f"WHEN {text} IS NOT NULL THEN {present} ELSE {missing} END"
                )
                # Numbers sort before strings, then each among its own kind.
                terms.append(f"CASE WHEN {number} IS NOT NULL THEN 0 ELSE 1 END")
                terms += [f"{number} {direction}", f"{self.collate(text)} {direction}"]
                continue
            value = self.text(ref) if ref.kind is Kind.KEYWORD else self._column(ref)
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
            kind, value = self._json(ref)
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
            return self.text(ref)
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


# The nullable columns a non-JSON field reads (optional times); every other one is NOT NULL.
_NULLABLE_ATTRIBUTES = frozenset(
    f.attribute for f in FIELDS if f.optional and f.kind in (EventKind.TIME, EventKind.INTEGER)
)


def _never_null(clause: q.Clause) -> bool:
    """True when the leaf's SQL is TRUE or FALSE for every row, never NULL."""
    if isinstance(clause, q.Ids):
        return True
    if isinstance(clause, q.Exists):
        return clause.field.kind is not Kind.JSON
    if isinstance(clause, q.Term | q.Range):
        ref = clause.field
        plain = ref.kind is not Kind.JSON and not ref.lowercase
        if isinstance(clause, q.Range):
            plain = plain and ref.kind in (Kind.TIME, Kind.INTEGER)
        return plain and ref.attribute not in _NULLABLE_ATTRIBUTES
    return False


def decode_group_value(postgres: bool, value: Any) -> Any:
    """The Python value of a `group_value` result (SQLite tags JSON strings and booleans)."""
    if postgres or not isinstance(value, str):
        return value
    if value in ("true", "false"):
        return value == "true"
    return value[2:] if value.startswith("s:") else value
