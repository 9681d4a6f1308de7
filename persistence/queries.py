"""The one builder of event conditions in SQL: the condition tree of
service.domain.conditions rendered for SQLite or PostgreSQL, the principal's scope (tenant,
domain subtree, shared entities), keyset positions, and the upkeep of the `latest` flag of
correlated events."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import peewee

from persistence.custom_indexes import custom_value_sql, index_name
from service.domain.access import ROOT_DOMAIN, Principal
from service.domain.conditions import (
    ANY_RUN,
    ONE_CHAR,
    ORDERINGS,
    AllOf,
    AnyOf,
    AtLeast,
    Compare,
    Condition,
    Exists,
    FieldRef,
    Leaf,
    Negation,
    Pattern,
    Prefix,
    Subtree,
    Words,
    words_of,
)
from service.domain.event_fields import COLUMNS, SORT_EXPRESSIONS
from service.domain.events import SortKey

_OPERATORS = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_JSON_TYPES = {
    # What json_type (SQLite) / jsonb_typeof (PostgreSQL) say for each custom field type.
    "integer": (("integer", "real"), "number"),
    "double": (("integer", "real"), "number"),
    "timestamp": (("integer",), "number"),
    "string": (("text",), "string"),
    "boolean": (("true", "false"), "boolean"),
}


def _words(text: str | None) -> str | None:
    """SQLite's half of Words: ` word word ` in lowercase, so LIKE '% word %' finds words."""
    return None if text is None else " " + " ".join(words_of(text)) + " "


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def install_sqlite_functions(database: peewee.Database) -> None:
    """Registers the functions the builder's SQL uses on every SQLite connection (SQLite's
    own lower() only folds ASCII, Python's folds all of Unicode, as PostgreSQL's does)."""
    if isinstance(database, peewee.SqliteDatabase):
        database.register_function(_words, "eventmgmt_words", 1, deterministic=True)
        database.register_function(_lower, "eventmgmt_lower", 1, deterministic=True)


def subtree_sql(column: str, root: str, bind: Callable[[Any], str]) -> str:
    """SQL that keeps rows whose domain `column` is `root` or lies below it; "" for the root
    domain. A prefix compared by equality, not LIKE ('_' in a domain name is no wildcard) nor
    a range: under a natural-language collation (ICU, en_US) a range lets /root/Sub1/x into
    /root/sub1, while equality stays exact under every deterministic collation."""
    if root == ROOT_DOMAIN:
        return ""
    below = root + "/"
    # The length is the server's own number, written in (persistence/prepared.py).
    return f"({column} = {bind(root)} OR substr({column}, 1, {len(below)}) = {bind(below)})"


# A share reaches the entity's events inside the sharer's subtree (s.domain), by the same
# equality of prefixes as subtree_sql, with the sharer's domain a column instead of a value.
_SHARED_SUBTREE = (
    "(s.domain = '/' OR events.domain = s.domain "
    "OR substr(events.domain, 1, length(s.domain) + 1) = s.domain || '/')"
)


class Params:
    """A statement's arguments, collected in the order their markers appear in its text."""

    def __init__(self, param: str) -> None:
        self.p = param
        self.args: list[Any] = []

    def bind(self, value: Any) -> str:
        self.args.append(value)
        return self.p


class SqlBuilder(Params):
    """Renders conditions and scopes with the backend's parameter style. `columns`: the
    ready columns of filterable custom fields on PostgreSQL, by field key
    (persistence/custom_indexes.py); a custom field without one is read from the JSON.
    `fields` gives the SQL of each standard field (by default its column; an alarm's
    transition reads some fields as the transition left them)."""

    def __init__(
        self,
        postgres: bool,
        param: str,
        columns: Mapping[str, str] | None = None,
        fields: Mapping[str, str] = COLUMNS,
    ) -> None:
        super().__init__(param)
        self.postgres = postgres
        self.columns = columns or {}
        self.fields = fields

    def scope(
        self, principal: Principal, *, whole_tenant: bool = False, include_shared: bool = False
    ) -> str:
        """The WHERE clause that keeps a query inside the principal's tenant and domain
        subtree, and, when asked, adds the events of entities other tenants share with it;
        the one place that decides what a principal may read."""
        clause = f"tenant_id = {self.bind(principal.tenant_id)}"
        if not whole_tenant:
            subtree = subtree_sql("domain", principal.domain, self.bind)
            clause += f" AND {subtree}" if subtree else ""
        if include_shared:
            clause = (
                f"(({clause}) OR EXISTS (SELECT 1 FROM entity_shares s "
                f"WHERE s.receiver_tenant_id = {self.bind(principal.tenant_id)} "
                "AND s.owner_tenant_id = events.tenant_id "
                f"AND s.entity_id = events.entity_id AND {_SHARED_SUBTREE}))"
            )
        return clause

    @property
    def true(self) -> str:
        return "TRUE" if self.postgres else "1"

    @property
    def false(self) -> str:
        return "FALSE" if self.postgres else "0"

    def condition(self, node: Condition) -> str:
        """The condition as a predicate. Leaves are bare, so that indexes on their columns
        serve; a leaf is NULL where a value is missing, which AND, OR and WHERE treat as
        false, and `Negation` makes false before negating."""
        if isinstance(node, AllOf | AnyOf):
            if not node.parts:
                return self.true if isinstance(node, AllOf) else self.false
            joiner = " AND " if isinstance(node, AllOf) else " OR "
            return "(" + joiner.join(self.condition(part) for part in node.parts) + ")"
        if isinstance(node, AtLeast):
            counted = " + ".join(
                f"(CASE WHEN {self.condition(part)} THEN 1 ELSE 0 END)" for part in node.parts
            )
            return f"({counted}) >= {int(node.count)}"
        if isinstance(node, Negation):
            return f"NOT COALESCE({self.condition(node.part)}, {self.false})"
        return self._leaf(node)

    def _leaf(self, node: Leaf) -> str:
        ref = node.field
        if isinstance(node, Subtree):
            return subtree_sql(self.fields[ref.name], node.root, self.bind) or self.true
        if ref.type == "json":
            return self._json_leaf(node)
        if ref.custom:
            if not isinstance(node, Compare):
                raise TypeError(f"no SQL for {node!r}")
            return self._custom(node)
        column = self.fields[ref.name]
        if isinstance(node, Exists):
            return f"{column} <> ''" if ref.type == "string" else f"{column} IS NOT NULL"
        if isinstance(node, Prefix):
            return self._prefix(self.text(ref), node.value)
        if isinstance(node, Words):
            return self._words(self.text(ref), node)
        if ref.type != "string":
            return self._compare(column, node.op, node.value)
        if node.op in ORDERINGS:
            return self._compare(self.collate(self.text(ref)), node.op, node.value)
        return self._compare(self._lower(column) if ref.lowercase else column, node.op, node.value)

    def _compare(self, expression: str, op: str, value: Any, cast: str = "") -> str:
        if op == "in":
            return f"{expression} IN ({', '.join(self.bind(v) + cast for v in value)})"
        if op == "like":
            if self.postgres:
                return f"{expression} LIKE {self.bind(_like(value))} ESCAPE '\\'"
            # GLOB, not LIKE: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
            return f"{expression} GLOB {self.bind(_glob(value))}"
        return f"{expression} {_OPERATORS[op]} {self.bind(value)}{cast}"

    def _prefix(self, text: str, start: str) -> str:
        return f"substr({text}, 1, {len(start)}) = {self.bind(start)}"

    def _words(self, text: str, node: Words) -> str:
        if self.postgres:
            words = f"(' ' || lower(regexp_replace({text}, '\\W+', ' ', 'g')) || ' ')"
        else:
            words = f"eventmgmt_words({text})"

        def like(phrase: str) -> str:
            escaped = phrase.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
            return f"{words} LIKE {self.bind(f'% {escaped} %')} ESCAPE '\\'"

        if node.phrase:
            return like(" ".join(node.words))
        joiner = " AND " if node.require_all else " OR "
        return "(" + joiner.join(like(w) for w in node.words) + ")"

    # --- field values ------------------------------------------------------------------------

    def _lower(self, expression: str) -> str:
        # SQLite's own lower() folds ASCII only; Python's folds all of Unicode, as
        # PostgreSQL's does.
        return f"lower({expression})" if self.postgres else f"eventmgmt_lower({expression})"

    def collate(self, expression: str) -> str:
        """Text in byte order (code points), as SQLite and Python order it."""
        return f'{expression} COLLATE "C"' if self.postgres else expression

    def text(self, ref: FieldRef) -> str:
        """A text field's text, NULL when unset ("" in the store) or, as JSON, no string."""
        if ref.type == "json":
            return self.json_text(ref)
        value = f"NULLIF({self.fields[ref.name]}, '')"
        return self._lower(value) if ref.lowercase else value

    def _json(self, ref: FieldRef) -> tuple[str, str]:
        """(type expression, value expression) of a JSON field; the type is NULL when absent.
        Keys are identifiers (the domain checks them), written into the JSON path."""
        column, key = ("custom", ref.name) if ref.custom else (self.fields[ref.name], ref.key)
        if self.postgres:
            value = f"({column}::jsonb)" if key is None else f"({column}::jsonb -> '{key}')"
            return f"jsonb_typeof({value})", value
        path = "'$'" if key is None else f"'$.\"{key}\"'"
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
        column, key = ("custom", ref.name) if ref.custom else (self.fields[ref.name], ref.key)
        instant = f'(json_extract({column}, \'$."{key}"."$timestamp"\') / 1000)'
        return (
            f"(CASE WHEN {kind} IN ('integer', 'real') THEN {value} "
            f"WHEN {kind} = 'object' THEN {instant} END)"
        )

    def json_boolean(self, ref: FieldRef) -> str:
        kind, value = self._json(ref)
        if self.postgres:
            return f"(CASE WHEN {kind} = 'boolean' THEN ({value} #>> '{{}}')::boolean END)"
        return f"(CASE {kind} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"

    def _json_leaf(self, node: Leaf) -> str:
        """A test of any JSON value, by the type of what it is compared with."""
        ref = node.field
        if isinstance(node, Exists):
            kind, _ = self._json(ref)
            return f"({kind} IS NOT NULL AND {kind} <> 'null')"
        if isinstance(node, Prefix):
            return self._prefix(self.json_text(ref), node.value)
        if isinstance(node, Words):
            return self._words(self.json_text(ref), node)
        assert isinstance(node, Compare)
        if node.op == "like":
            return self._compare(self.json_text(ref), "like", node.value)
        if node.op == "in":
            return "(" + " OR ".join(self._json_compare(ref, "eq", v) for v in node.value) + ")"
        return self._json_compare(ref, node.op, node.value)

    def _json_compare(self, ref: FieldRef, op: str, value: Any) -> str:
        if isinstance(value, bool):
            expression = self.json_boolean(ref)
            value = value if self.postgres else int(value)
        elif isinstance(value, int | float):
            expression = self.json_number(ref)
        else:
            expression = self.json_text(ref)
            if op in ORDERINGS:
                expression = self.collate(expression)
        return f"{expression} {_OPERATORS[op]} {self.bind(value)}"

    def _custom(self, node: Compare) -> str:
        kind = node.field.type
        value = node.value
        # Custom timestamps are stored as {"$timestamp": microseconds} (see store.py): the
        # number inside is what compares.
        inner = ("$timestamp",) if kind == "timestamp" else ()
        sqlite_types, postgres_type = _JSON_TYPES[kind]
        ranged = node.op in _OPERATORS and node.op != "eq"
        guard = ""
        timestamp = bool(inner)
        if self.postgres:
            # The field's column holds what its JSON has there (custom_indexes.py).
            column = self.columns.get(index_name(node.field.name, timestamp))

            def element(operator: str = "->") -> str:
                if column:
                    return column if operator == "->" else f"({column} #>> '{{}}')"
                if operator == "->":
                    return custom_value_sql(node.field.name, timestamp, True)
                keys = [node.field.name, *inner]
                arrows = [f" -> {self.bind(k)}" for k in keys[:-1]]
                return f"(custom::jsonb{''.join(arrows)} {operator} {self.bind(keys[-1])})"

            if node.op == "like":
                return self._compare(element("->>"), "like", value)
            if ranged:
                # A range keeps to the field's JSON type: jsonb orders all strings after
                # all numbers, which would let a stray string into `after`.
                guard = f"jsonb_typeof({element()}) = '{postgres_type}' AND "
            # jsonb against jsonb compares numbers as numbers and strings as strings.
            encoded = tuple(map(json.dumps, value)) if node.op == "in" else json.dumps(value)
            return f"({guard}{self._compare(element(), node.op, encoded, '::jsonb')})"
        # The name is an identifier (checked by the domain), so it is written into the SQL:
        # SQLite uses the field's expression index only for the very same expression.
        extracted = custom_value_sql(node.field.name, timestamp, False)
        if ranged:
            # SQLite orders every number before every text: keep a range to one JSON type.
            types = ", ".join(f"'{t}'" for t in sqlite_types)
            guard = f"{extracted.replace('json_extract', 'json_type', 1)} IN ({types}) AND "
        if kind == "boolean":  # json_extract answers 1 or 0 for true and false
            value = tuple(map(int, value)) if node.op == "in" else int(value)
        return f"({guard}{self._compare(extracted, node.op, value)})"

    def order_by(self, sort: Sequence[SortKey]) -> str:
        keys = [f"{SORT_EXPRESSIONS[k.field]} {'DESC' if k.descending else 'ASC'}" for k in sort]
        keys.append(f"id {'DESC' if sort[-1].descending else 'ASC'}")
        return ", ".join(keys)

    def after(self, sort: Sequence[SortKey], values: Sequence[Any]) -> str:
        """Rows strictly after the keyset position `values` (sort key values, then id)."""
        columns = [SORT_EXPRESSIONS[k.field] for k in sort] + ["id"]
        directions = [k.descending for k in sort] + [sort[-1].descending]
        if len(set(directions)) == 1:
            # A row-value comparison: both backends turn it into one index range.
            op = "<" if directions[0] else ">"
            params = ", ".join(self.bind(v) for v in values)
            return f"({', '.join(columns)}) {op} ({params})"
        alternatives = []
        for index, column in enumerate(columns):
            equal = [f"{c} = {self.bind(v)}" for c, v in zip(columns[:index], values, strict=False)]
            op = "<" if directions[index] else ">"
            alternatives.append(" AND ".join([*equal, f"{column} {op} {self.bind(values[index])}"]))
        return "(" + " OR ".join(f"({a})" for a in alternatives) + ")"


def _like(pattern: Pattern) -> str:
    out = []
    for segment in pattern:
        if segment == ANY_RUN:
            out.append("%")
        elif segment == ONE_CHAR:
            out.append("_")
        else:
            out.append(segment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
    return "".join(out)


def _glob(pattern: Pattern) -> str:
    out = []
    for segment in pattern:
        if segment == ANY_RUN:
            out.append("*")
        elif segment == ONE_CHAR:
            out.append("?")
        else:
            out.append("".join(f"[{c}]" if c in "*?[" else c for c in segment))
    return "".join(out)


# --- the latest flag -------------------------------------------------------------------------

Group = tuple[str, str, str, str]  # tenant id, correlation id, entity id, type id

# `correlation_id <> ''` is the condition of SQLite's index of correlated events (migration
# 38), which SQLite uses only for a query that states it.
_GROUP = (
    "tenant_id = {p} AND correlation_id = {p} AND correlation_id <> '' "
    "AND entity_id = {p} AND type_id = {p}"
)


def refresh_latest(cursor: Any, groups: Iterable[Group], postgres: bool) -> None:
    """Keeps exactly the newest event (latest timestamp, then greatest id) of each correlation
    group flagged `latest`, in the caller's transaction, after inserts or deletes.

    Every group holds one flagged row between transactions, and new rows arrive flagged, so
    the flagged rows are the old newest plus the new ones: a few rows, not the whole group.
    When a delete took the flagged row, the newest unflagged row takes its place. On
    PostgreSQL a transaction lock per group (taken in one global order, so two writers cannot
    deadlock) keeps replicas writing one group from both keeping their own row as newest."""
    p = "%s" if postgres else "?"
    group = _GROUP.format(p=p)
    for key in sorted(set(groups)):
        if postgres:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7301245003))",
                ("\x1f".join(key),),
            )
        cursor.execute(f"SELECT ts, id FROM events WHERE {group} AND latest = TRUE", key)
        flagged = cursor.fetchall()
        if len(flagged) == 1:
            continue
        if flagged:
            newest = max((int(ts), str(event_id)) for ts, event_id in flagged)
            cursor.execute(
                f"UPDATE events SET latest = FALSE WHERE {group} AND latest = TRUE AND id <> {p}",
                (*key, newest[1]),
            )
        else:
            cursor.execute(
                f"UPDATE events SET latest = TRUE WHERE id = (SELECT id FROM events "
                f"WHERE {group} AND latest = FALSE ORDER BY ts DESC, id DESC LIMIT 1)",
                key,
            )
