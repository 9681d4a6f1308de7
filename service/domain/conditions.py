"""The one condition tree: which events (or other records) match. The list filter, live
subscriptions, delete jobs, find's queries and the principal's scope all build it;
persistence renders it to SQL (`persistence.queries.SqlBuilder`) and `compile_matcher`
evaluates it in Python, with the same answer for every record (tests/test_conditions.py
checks this on both backends).

Fields are standard event fields by attribute (`service.domain.event_fields`) or custom
fields by name, of a declared type, or of type "json": any JSON value, compared by the type
of what it is compared with (a boolean never equals a number; custom timestamps count as
epoch milliseconds). A missing value (an absent custom field, an unset optional time, JSON
null) matches no test, and `Negation` is the exact complement of what it negates. A
standard text field holds "" when unset: equality, `in` and `like` compare that text, while
orderings, `Prefix`, `Words` and `Exists` take "" as no value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from service.domain.access import domain_covers
from service.domain.custom_fields import Instant

FieldType = Literal["string", "integer", "double", "boolean", "timestamp", "json"]


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field a condition tests: a standard attribute, or a custom field by its name; of a
    standard JSON field (the source) `key` names a member (None: the whole value), and a
    `lowercase` text field compares its text in lowercase."""

    name: str
    type: FieldType
    custom: bool = False
    key: str | None = None
    lowercase: bool = False


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
class Exists:
    """The field has a value."""

    field: FieldRef


@dataclass(frozen=True, slots=True)
class Prefix:
    """The field's text starts with `value`."""

    field: FieldRef
    value: str


@dataclass(frozen=True, slots=True)
class Words:
    """The field's words (lowercase runs of letters, digits and _) hold all (`require_all`)
    or any of `words`, or all of them in sequence (`phrase`)."""

    field: FieldRef
    words: tuple[str, ...]
    require_all: bool
    phrase: bool


@dataclass(frozen=True, slots=True)
class AllOf:
    """Every part matches (no parts: every record)."""

    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Some part matches (no parts: no record)."""

    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AtLeast:
    """At least `count` parts match."""

    count: int
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    part: Condition


Condition = Compare | Subtree | Exists | Prefix | Words | AllOf | AnyOf | AtLeast | Negation
Leaf = Compare | Subtree | Exists | Prefix | Words
MATCH_ALL = AllOf(())
MATCH_NONE = AnyOf(())

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
    if isinstance(condition, Leaf):
        return not condition.field.custom and condition.field.name == name
    if isinstance(condition, Negation):
        return mentions(condition.part, name)
    return any(mentions(part, name) for part in condition.parts)


# --- evaluation in Python --------------------------------------------------------------------

Matcher = Callable[[Any], bool]
# Gives, once per field, the function that reads a record's value of it (None: no value).
Reader = Callable[[FieldRef], Callable[[Any], Any]]
_WORD = re.compile(r"\w+")


def like_regex(pattern: Pattern) -> re.Pattern[str]:
    parts = [".*" if s == ANY_RUN else "." if s == ONE_CHAR else re.escape(s) for s in pattern]
    return re.compile("".join(parts), re.DOTALL)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _spaced_words(text: str) -> str:
    return " " + " ".join(words_of(text)) + " "


def _kind(value: Any) -> type:
    """What a value compares with: booleans with booleans, numbers with numbers, strings
    with strings (JSON's types)."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int | float):
        return float
    if isinstance(value, str):
        return str
    return type(value)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: bool(a < b),
    "le": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "ge": lambda a, b: bool(a >= b),
}


def _test(node: Leaf) -> Callable[[Any], bool]:
    """The test of a present value."""
    if isinstance(node, Subtree):
        root = node.root
        return lambda path: domain_covers(root, path)
    if isinstance(node, Exists):
        return lambda value: True
    if isinstance(node, Prefix):
        start = node.value
        return lambda value: isinstance(value, str) and value.startswith(start)
    if isinstance(node, Words):
        wanted = node.words
        if node.phrase:
            phrase = " " + " ".join(wanted) + " "
            return lambda value: isinstance(value, str) and phrase in _spaced_words(value)
        need = all if node.require_all else any
        return lambda value: isinstance(value, str) and need(w in words_of(value) for w in wanted)
    bound, op = node.value, node.op
    if op == "like":
        regex = like_regex(bound)
        return lambda value: isinstance(value, str) and regex.fullmatch(value) is not None
    if op == "in":
        if node.field.type == "json":
            options = [(_kind(b), b) for b in bound]
            return lambda value: any(_kind(value) is k and value == b for k, b in options)
        values = frozenset(bound)
        return lambda value: value in values
    kind = _kind(bound)
    if op == "eq":
        return lambda value: _kind(value) is kind and bool(value == bound)
    order = _ORDER[op]
    return lambda value: _kind(value) is kind and order(value, bound)


def _blank_is_none(node: Leaf) -> bool:
    """Whether "" counts as no value: for the tests other than equality, `in` and `like` of
    standard text fields (which hold "" when unset)."""
    if node.field.type != "string" or node.field.custom:
        return False
    return not isinstance(node, Subtree) and not (
        isinstance(node, Compare) and node.op in ("eq", "in", "like")
    )


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
    if isinstance(condition, AllOf | AnyOf):
        parts = [compile_matcher(p, read) for p in condition.parts]
        if not parts:
            everything = isinstance(condition, AllOf)
            return lambda record: everything
        return functools.reduce(_both if isinstance(condition, AllOf) else _either, parts)
    if isinstance(condition, AtLeast):
        options = tuple(compile_matcher(p, read) for p in condition.parts)
        count = condition.count
        return lambda record: sum(option(record) for option in options) >= count
    if isinstance(condition, Negation):
        negated = compile_matcher(condition.part, read)
        return lambda record: not negated(record)
    get, test = read(condition.field), _test(condition)
    if _blank_is_none(condition):
        return lambda record: (value := get(record)) is not None and value != "" and test(value)
    return lambda record: (value := get(record)) is not None and test(value)


# What a custom field's value must be to compare as its filter type (as the SQL keeps to the
# JSON type): other values are no value.
_CUSTOM_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "timestamp": lambda v: isinstance(v, Instant),
    "json": lambda v: True,
}


def read_event(field: FieldRef) -> Callable[[Any], Any]:
    """An event's value of a field: its attribute (a JSON one's member), or a custom field;
    custom times as microseconds, or as milliseconds when read as JSON."""
    name = field.name
    if not field.custom:
        if field.key is not None:
            key = field.key
            return lambda event: (
                value.get(key) if isinstance(value := getattr(event, name), dict) else None
            )
        if field.lowercase:
            return lambda event: getattr(event, name).lower()
        return lambda event: getattr(event, name)
    conforms = _CUSTOM_TYPES[field.type]
    json = field.type == "json"

    def custom(event: Any) -> Any:
        value = event.custom_fields.get(name)
        if value is None or not conforms(value):
            return None
        if isinstance(value, Instant):
            return value.micros // 1000 if json else value.micros
        return value

    return custom


def event_matcher(condition: Condition | None) -> Matcher:
    """The condition as a function of an Event."""
    return compile_matcher(condition, read_event)


def matches(condition: Condition | None, value_of: Callable[[str], Any]) -> bool:
    """Evaluates a condition once, for collections small enough to filter in Python (event
    types); `value_of(name)` gives a field's value, None when it has none."""
    return compile_matcher(condition, lambda field: lambda _: value_of(field.name))(None)
