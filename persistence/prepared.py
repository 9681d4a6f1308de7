"""Server-side prepared statements for the list queries on PostgreSQL.

Planning a list query over the monthly partitions (persistence/partitions.py), each with a
dozen indexes, cost more than running it: about 0.5 ms of the server's CPU for a 21-row page
that then ran in 0.07 ms. A statement prepared once per connection is planned afresh for its
first five runs, after which PostgreSQL keeps one generic plan when that plan costs no more
than the fresh ones did (`plan_cache_mode = auto`); partitions outside the window are then
pruned when the plan starts, not planned. So that the generic plan can win, the builder
writes the numbers it makes itself (LIMIT, OFFSET, prefix lengths) into the text; what a
client sent stays a parameter.

A parameter's type is declared from its Python value (text, bigint, float8, boolean), so that
a number compares the same whatever its size, as a literal would. A statement with a value of
any other type, or one that PostgreSQL cannot prepare, runs unprepared; so does one inside a
transaction, where a failed PREPARE would abort the caller's work.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import peewee

# Statements kept per connection; the least recently used one is deallocated beyond this.
MAX_STATEMENTS = 100
_MARKER = re.compile(r"%[s%]")
_Key = tuple[str, tuple[str, ...]]
_statements: weakref.WeakKeyDictionary[Any, OrderedDict[_Key, str | None]] = (
    weakref.WeakKeyDictionary()
)


def _type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "float8"
    if isinstance(value, str):
        return "text"
    return None


def _numbered(sql: str) -> str:
    """`%s` markers as `$1`, `$2`, ... in order; `%%` stays, for the driver to unescape."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group() == "%%":
            return "%%"
        count += 1
        return f"${count}"

    return _MARKER.sub(number, sql)


def execute(db: peewee.Database, sql: str, args: Sequence[Any]) -> Any:
    """The cursor of `sql` (with `%s` markers) run with `args`, prepared when it can be."""
    found = [_type(value) for value in args]
    types = tuple(t for t in found if t is not None)
    if db.in_transaction() or len(types) < len(found):
        return db.execute_sql(sql, args)
    connection = db.connection()
    statements = _statements.setdefault(connection, OrderedDict())
    key = (sql, types)
    if key in statements:
        statements.move_to_end(key)
        name = statements[key]
    else:
        name = "eventmgmt_" + hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        declared = f" ({', '.join(types)})" if types else ""
        try:
            db.execute_sql(f"PREPARE {name}{declared} AS {_numbered(sql)}", None)
        except peewee.DatabaseError:
            name = None
        statements[key] = name
        if len(statements) > MAX_STATEMENTS:
            _, evicted = statements.popitem(last=False)
            if evicted is not None:
                db.execute_sql(f"DEALLOCATE {evicted}", None)
    if name is None:
        return db.execute_sql(sql, args)
    if not args:
        return db.execute_sql(f"EXECUTE {name}", None)
    return db.execute_sql(f"EXECUTE {name} ({', '.join(['%s'] * len(args))})", args)
