"""The one condition tree: which events (or other records) match. The list filter, live
subscriptions, delete jobs and the principal's scope all build it; persistence renders it to
SQL (`persistence.queries.SqlBuilder`) and `compile_matcher` evaluates it in Python, with the
same answer for every record (tests/test_conditions.py checks this on both backends).

Fields are standard event fields by attribute (`service.domain.event_fields`) or custom
fields by name. A missing value (an absent custom field, an optional time that is unset)
matches no comparison, and `Negation` is the exact complement of what it negates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from service.domain.access import domain_covers
from service.domain.custom_fields import Instant

FieldType = Literal["string", "integer", "double", "boolean", "timestamp"]


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field a condition tests: a standard attribute, or a custom field by its name."""

    name: str
    type: FieldType
    custom: bool = False


# A `like` pattern as segments: literal text, "*" (any run) or "?" (one character).
Pattern = tuple[str, ...]
ANY_RUN = "\x00*"
ONE_CHAR = "\x00?"
# Compare's operators; `in` takes a tuple of values, `like` a Pattern.
ORDERINGS = ("lt", "le", "gt", "ge")


@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`: op is eq, in (value is a tuple), like (a Pattern), lt, le, gt, ge."""

    field: FieldRef
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class Subtree:
    """The field holds a domain path equal to `root` or below it (/a covers /a/b, not /ab);
    the root domain covers every path."""

    field: FieldRef
    root: str


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    part: Condition


Condition = Compare | Subtree | AllOf | AnyOf | Negation

DOMAIN = FieldRef("domain", "string")


def all_of(parts: Iterable[Condition | None]) -> Condition | None:
    """Every part must match; None (no condition) when there is none."""
    kept = [part for part in parts if part is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else AllOf(tuple(kept))


def any_of(parts: list[Condition]) -> Condition:
    return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))


def mentions(condition: Condition | None, name: str) -> bool:
    """Whether the condition tests the standard field `name` anywhere."""
    if condition is None:
        return False
    if isinstance(condition, Compare | Subtree):
        return not condition.field.custom and condition.field.name == name
    if isinstance(condition, Negation):
        return mentions(condition.part, name)
    return any(mentions(part, name) for part in condition.parts)


# --- evaluation in Python --------------------------------------------------------------------

Matcher = Callable[[Any], bool]
# Gives, once per field, the function that reads a record's value of it (None: no value).
Reader = Callable[[FieldRef], Callable[[Any], Any]]


def like_regex(pattern: Pattern) -> re.Pattern[str]:
    parts = [".*" if s == ANY_RUN else "." if s == ONE_CHAR else re.escape(s) for s in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _ordering(op: str, bound: Any) -> Callable[[Any], bool]:
    if op == "lt":
        return lambda value: bool(value < bound)
    if op == "le":
        return lambda value: bool(value <= bound)
    if op == "gt":
        return lambda value: bool(value > bound)
    return lambda value: bool(value >= bound)


def _test(node: Compare) -> Callable[[Any], bool]:
    """The test of a present value."""
    bound = node.value
    if node.op == "eq":
        return lambda value: bool(value == bound)
    if node.op == "in":
        values = frozenset(bound)
        return lambda value: value in values
    if node.op == "like":
        regex = like_regex(bound)
        return lambda value: isinstance(value, str) and regex.fullmatch(value) is not None
    return _ordering(node.op, bound)


# Nested pairs rather than all()/any() over a tuple: one call per part, no generator.
def _both(first: Matcher, second: Matcher) -> Matcher:
    return lambda record: first(record) and second(record)


def _either(first: Matcher, second: Matcher) -> Matcher:
    return lambda record: first(record) or second(record)


def compile_matcher(condition: Condition | None, read: Reader) -> Matcher:
    """The condition as one Python function of a record, built once (a live subscription
    calls it for every event)."""
    if condition is None:
        return lambda record: True
    if isinstance(condition, AllOf):
        return functools.reduce(_both, (compile_matcher(p, read) for p in condition.parts))
    if isinstance(condition, AnyOf):
        return functools.reduce(_either, (compile_matcher(p, read) for p in condition.parts))
    if isinstance(condition, Negation):
        negated = compile_matcher(condition.part, read)
        return lambda record: not negated(record)
    get = read(condition.field)
    if isinstance(condition, Subtree):
        root = condition.root
        return lambda record: (path := get(record)) is not None and domain_covers(root, path)
    test = _test(condition)
    return lambda record: (value := get(record)) is not None and test(value)


# What a custom field's value must be to compare as its filter type (as the SQL keeps to the
# JSON type): other values are no value.
_CUSTOM_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "timestamp": lambda v: isinstance(v, Instant),
}


def read_event(field: FieldRef) -> Callable[[Any], Any]:
    """An event's value of a field: its attribute, or a custom field (times as microseconds)."""
    if not field.custom:
        name = field.name
        return lambda event: getattr(event, name)
    name, conforms = field.name, _CUSTOM_TYPES[field.type]

    def custom(event: Any) -> Any:
        value = event.custom_fields.get(name)
        if value is None or not conforms(value):
            return None
        return value.micros if isinstance(value, Instant) else value

    return custom


def event_matcher(condition: Condition | None) -> Matcher:
    """The condition as a function of an Event."""
    return compile_matcher(condition, read_event)


def matches(condition: Condition | None, value_of: Callable[[str], Any]) -> bool:
    """Evaluates a condition once, for collections small enough to filter in Python (event
    types); `value_of(name)` gives a field's value, None when it has none."""
    return compile_matcher(condition, lambda field: lambda _: value_of(field.name))(None)
