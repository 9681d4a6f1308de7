"""Seed 003's JSON filter language, compiled into a small condition tree the store renders.

A filter is a JSON object whose keys are field names (REST JSON names, or custom field names)
or the combinators `and`, `or`, `not`. Several keys in one object must all match. A field's
value is either a plain value (equality) or an object of operators: `eq`, `in`, `like`,
`between`, `before`, `after` (several operators in one object must all match). The README's
API notes give the full grammar; every rejection names the offending key and the rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from service.domain import times
from service.domain.conditions import (
    ANY_RUN,
    ONE_CHAR,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    FieldRef,
    FieldType,
    Negation,
    Pattern,
)
from service.domain.conditions import all_of as all_of
from service.domain.custom_fields import canonical_type_id
from service.domain.errors import InvalidInput, invalid
from service.domain.event_fields import FILTERABLE, Kind
from service.domain.parsing import loads_json

# Resolves a non-standard field name to its type when the caller's event types declare it
# filterable; None means "no such filterable field".
CustomFieldType = Callable[[str], FieldType | None]

MAX_FILTER_BYTES = 16 * 1024
MAX_NODES = 200
MAX_IN_VALUES = 500
_CUSTOM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

_FILTER_TYPES: dict[Kind, FieldType] = {
    Kind.TEXT: "string",
    Kind.SOURCE: "json",  # the whole source: equal to a string, or in a list of them
    Kind.INTEGER: "integer",
    Kind.TIME: "timestamp",
    Kind.BOOLEAN: "boolean",
}
# REST JSON name -> (canonical attribute, type) of every standard field a filter may name.
STANDARD_FIELDS: dict[str, tuple[str, FieldType]] = {
    f.json: (f.attribute, _FILTER_TYPES[f.kind]) for f in FILTERABLE
}
OPERATORS = ("eq", "in", "like", "between", "before", "after")
# Integer bounds a caller may ask to enforce (standard field attribute -> lowest, highest).
ValueRanges = Mapping[str, tuple[int, int]]
COMBINATORS = ("and", "or", "not")


def custom_field_names(text: str) -> set[str]:
    """The names a filter uses where a field goes that are not standard fields, so that their
    types can be looked up before compiling; empty when the text is no JSON object (the
    compiler then reports the problem)."""
    try:
        document = json.loads(text) if text.strip() else {}
    except (ValueError, RecursionError):
        return set()
    names: set[str] = set()

    def walk(clauses: Any) -> None:
        if isinstance(clauses, list):
            for item in clauses:
                walk(item)
        elif isinstance(clauses, dict):
            for key, value in clauses.items():
                if key in COMBINATORS:
                    walk(value)
                elif key not in STANDARD_FIELDS and isinstance(key, str):
                    names.add(key)

    walk(document)
    return {name for name in names if _CUSTOM_NAME.match(name)}


def no_custom_fields(name: str) -> FieldType | None:
    """The resolver used until event types declare filterable fields: none exist."""
    return None


# Integers a filter may hold: every backend binds them as a signed 64-bit value.
MAX_INTEGER = 2**63 - 1
_MAX_MILLIS = MAX_INTEGER // 1000


def check_text(value: str, where: str) -> str:
    """Filter text must be storable text: PostgreSQL refuses NUL in any string."""
    if "\x00" in value:
        raise invalid(where, "must not contain NUL characters")
    return value


def parse_time(value: Any, where: str) -> int:
    """An ISO-8601 time with a zone or epoch milliseconds, as epoch microseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -_MAX_MILLIS <= value <= _MAX_MILLIS:
            raise invalid(where, "epoch milliseconds out of range")
        return value * 1000
    rule = "must be an ISO-8601 time with a zone, such as 2018-07-29T06:09:29.743Z"
    if not isinstance(value, str):
        raise invalid(where, rule + ", or epoch milliseconds")
    try:
        return times.parse_iso(value.strip())
    except ValueError:
        raise invalid(where, rule) from None


# Fields whose values are type ids: the standard type's alias means the standard type.
_TYPE_ID_FIELDS = frozenset({"type_id", "parent_id"})
StandardFields = dict[str, tuple[str, FieldType]]


class _Compiler:
    def __init__(
        self,
        custom_field_type: CustomFieldType,
        fields: StandardFields = STANDARD_FIELDS,
        value_ranges: ValueRanges | None = None,
    ) -> None:
        self._custom_field_type = custom_field_type
        self._fields = fields
        self._value_ranges = value_ranges or {}
        self._nodes = 0

    def clauses(self, document: Any, where: str) -> Condition:
        """An object's clauses (all must match) or a list of filter objects (all must match)."""
        self._count(where)
        if isinstance(document, list):
            if not document:
                raise invalid(where, "must not be an empty list")
            parts = [self.clauses(item, f"{where}[{i}]") for i, item in enumerate(document)]
            return parts[0] if len(parts) == 1 else AllOf(tuple(parts))
        if not isinstance(document, dict):
            raise invalid(where, "must be a JSON object of clauses (or a list of them)")
        if not document:
            raise invalid(where, "must not be an empty object")
        return self._combine(
            [self.clause(key, value, where) for key, value in document.items()], any_=False
        )

    def clause(self, key: str, value: Any, where: str) -> Condition:
        path = f"{where}.{key}"
        if key == "and":
            return self.clauses(value, path)
        if key == "or":
            self._count(path)
            if isinstance(value, list):
                if not value:
                    raise invalid(path, "must not be an empty list")
                parts = [self.clauses(item, f"{path}[{i}]") for i, item in enumerate(value)]
            elif isinstance(value, dict) and value:
                parts = [self.clause(k, v, path) for k, v in value.items()]
            else:
                raise invalid(path, "must be a non-empty JSON object or list of filter objects")
            return self._combine(parts, any_=True)
        if key == "not":
            return Negation(self.clauses(value, path))
        return self.field_clause(key, value, path)

    def field_clause(self, name: str, value: Any, path: str) -> Condition:
        field = self._field(name, path)
        if isinstance(value, dict):
            if not value:
                raise invalid(path, f"must name an operator: {', '.join(OPERATORS)}")
            parts = [
                self._operator(field, op, operand, f"{path}.{op}") for op, operand in value.items()
            ]
            return self._combine(parts, any_=False)
        return Compare(field, "eq", self._value(field, value, path))

    def _field(self, name: str, path: str) -> FieldRef:
        standard = self._fields.get(name)
        if standard is not None:
            return FieldRef(standard[0], standard[1])
        kind = self._custom_field_type(name) if _CUSTOM_NAME.match(name) else None
        if kind is None:
            custom = ", or a filterable custom field of an event type"
            raise invalid(
                path,
                f"{name!r} is not a filterable field; standard fields: "
                f"{', '.join(self._fields)}{custom if self._fields is STANDARD_FIELDS else ''}",
            )
        return FieldRef(name, kind, custom=True)

    def _operator(self, field: FieldRef, op: str, operand: Any, path: str) -> Condition:
        self._count(path)
        if op == "eq":
            return Compare(field, "eq", self._value(field, operand, path))
        if op == "in":
            if not isinstance(operand, list) or not operand:
                raise invalid(path, "must be a non-empty JSON list of values")
            if len(operand) > MAX_IN_VALUES:
                raise invalid(path, f"at most {MAX_IN_VALUES} values")
            values = tuple(self._value(field, v, f"{path}[{i}]") for i, v in enumerate(operand))
            return Compare(field, "in", values)
        if op == "like":
            if field.type != "string":
                raise invalid(
                    path, f"like applies to string fields; {field.name} is a {field.type}"
                )
            if not isinstance(operand, str):
                raise invalid(path, "must be a string pattern: * matches any run, ? one character")
            return Compare(field, "like", like_pattern(check_text(operand, path)))
        if op in ("between", "before", "after"):
            if field.type not in ("timestamp", "integer", "double"):
                raise invalid(
                    path, f"{op} applies to times and numbers; {field.name} is a {field.type}"
                )
            if op == "before":
                return Compare(field, "lt", self._value(field, operand, path))
            if op == "after":
                return Compare(field, "gt", self._value(field, operand, path))
            return self._between(field, operand, path)
        raise invalid(path, f"unknown operator {op!r}; operators: {', '.join(OPERATORS)}")

    def _between(self, field: FieldRef, operand: Any, path: str) -> Condition:
        rule = "must be an interval such as [2018-01-01T00:00:00Z,2018-02-01T00:00:00Z)"
        if not isinstance(operand, str) or len(operand) < 3:
            raise invalid(path, rule)
        opening, closing, inner = operand[0], operand[-1], operand[1:-1]
        if opening not in "[(" or closing not in "])" or inner.count(",") != 1:
            raise invalid(path, rule + "; [ ] include a bound, ( ) exclude it")
        low_text, high_text = (part.strip() for part in inner.split(","))
        parts: list[Condition] = []
        if low_text:
            low = self._value(field, _bound(low_text, field), path)
            parts.append(Compare(field, "ge" if opening == "[" else "gt", low))
        if high_text:
            high = self._value(field, _bound(high_text, field), path)
            parts.append(Compare(field, "le" if closing == "]" else "lt", high))
        if not parts:
            raise invalid(path, "needs at least one bound")
        return self._combine(parts, any_=False)

    def _value(self, field: FieldRef, value: Any, path: str) -> Any:
        kind = field.type
        if kind == "timestamp":
            return parse_time(value, path)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise invalid(path, "must be true or false")
            return value
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise invalid(path, "must be an integer")
            if not -MAX_INTEGER <= value <= MAX_INTEGER:
                raise invalid(path, "must fit in 64 bits")
            low, high = self._value_ranges.get(field.name, (-MAX_INTEGER, MAX_INTEGER))
            if not field.custom and not low <= value <= high:
                raise invalid(path, f"must be an integer from {low} to {high}")
            return value
        if kind == "double":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid(path, "must be a number")
            if isinstance(value, int) and not -MAX_INTEGER <= value <= MAX_INTEGER:
                raise invalid(path, "must fit in 64 bits")
            return value
        if field.name == "code" and isinstance(value, int) and not isinstance(value, bool):
            # Codes are stored as text; the platform model writes them as numbers
            # (docs/platform-events.md#event-codes).
            return str(value)
        if not isinstance(value, str):
            raise invalid(path, "must be a string")
        if field.name in _TYPE_ID_FIELDS and not field.custom:
            return canonical_type_id(check_text(value, path))
        return check_text(value, path)

    def _count(self, path: str) -> None:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise invalid(path, f"the filter has more than {MAX_NODES} clauses")

    @staticmethod
    def _combine(parts: list[Condition], any_: bool) -> Condition:
        if len(parts) == 1:
            return parts[0]
        return AnyOf(tuple(parts)) if any_ else AllOf(tuple(parts))


def _bound(text: str, field: FieldRef) -> Any:
    """An interval bound's text as the JSON value the field's parser expects."""
    if field.type == "timestamp":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # rejected by the field's parser with its rule


def like_pattern(text: str) -> Pattern:
    """Splits a pattern into literals and wildcards; a backslash makes the next char literal."""
    segments: list[str] = []
    literal: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            literal.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "*?":
            if literal:
                segments.append("".join(literal))
                literal = []
            segments.append(ANY_RUN if char == "*" else ONE_CHAR)
        else:
            literal.append(char)
    if escaped:
        literal.append("\\")
    if literal:
        segments.append("".join(literal))
    return tuple(segments)


def compile_filter(
    text: str,
    custom_field_type: CustomFieldType = no_custom_fields,
    fields: StandardFields = STANDARD_FIELDS,
) -> Condition | None:
    """Parses and checks a JSON filter over `fields` (by default the events'); None for an
    empty one. Errors name `filter` paths."""
    if not text.strip():
        return None
    try:
        document = loads_json(text, "filter", MAX_FILTER_BYTES)
    except InvalidInput as error:
        raise InvalidInput(error.violations, reason="MALFORMED_FILTER") from None
    return compile_document(document, custom_field_type, fields)


def compile_document(
    document: Any,
    custom_field_type: CustomFieldType = no_custom_fields,
    fields: StandardFields = STANDARD_FIELDS,
    value_ranges: ValueRanges | None = None,
) -> Condition | None:
    """`compile_filter` of a filter already read from JSON; `value_ranges` refuses integers
    outside a standard field's range (delete jobs: a value no row holds)."""
    if not isinstance(document, dict):
        raise invalid(
            "filter", 'must be a JSON object such as {"typeId": "x"}', reason="INVALID_FILTER"
        )
    if not document:
        return None
    try:
        return _Compiler(custom_field_type, fields, value_ranges).clauses(document, "filter")
    except InvalidInput as error:
        raise InvalidInput(error.violations, reason="INVALID_FILTER") from None
