"""Listing events: the typed filters (docs/platform-events.md#list-events) and the JSON filter
(docs/rest-v3.md#filter) combined into one condition, the 7-day default window, history collapse,
and opaque keyset page tokens."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.domain.access import Principal
from service.domain.conditions import Compare, Condition, FieldRef, all_of, mentions
from service.domain.errors import InvalidInput, invalid
from service.domain.event_fields import FIELDS, SORT_MISSING, Kind
from service.domain.events import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_SORT,
    JSON_NAMES,
    MAX_SEVERITY,
    Event,
    EventPage,
    EventQuery,
    SortKey,
    now_us,
)
from service.domain.filters import MAX_INTEGER, CustomFieldType, check_text, compile_filter
from service.domain.parsing import loads_json

if TYPE_CHECKING:
    from service.domain.events import EventRepository

# A list without any time filter covers the last 7 days (docs/rest-v3.md#list-events).
DEFAULT_WINDOW_US = 7 * 86_400 * 1_000_000
# A list counts its matching events up to this many unless asked to count them all: an exact
# count costs in proportion to the matches (22 ms for the 233,000 events of a week among a
# million), a capped one at most this many index entries (as Elasticsearch's default
# track_total_hits).
COUNT_CAP = 10_000
COUNT_MODES = ("capped", "exact")
_TOKEN_VERSION = 1
_TIMESTAMP = FieldRef("timestamp", "timestamp")


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A list call as the caller spelled it; times are epoch microseconds, "" means unset."""

    sort: tuple[SortKey, ...] = DEFAULT_SORT
    size: int = DEFAULT_PAGE_SIZE
    page: int = 0
    page_token: str = ""
    filter: str = ""
    start_time: int | None = None
    end_time: int | None = None
    severities: tuple[int, ...] = ()
    code: str = ""
    entity_id: str = ""
    entity_type: str = ""
    history: bool = False
    include_shared: bool = False
    # How this API names the token field in errors (`pageToken` over REST, `page_token` gRPC).
    token_field: str = "pageToken"
    # How the total is counted: one of COUNT_MODES ("" is capped).
    count: str = ""
    count_field: str = "count"


@dataclass(frozen=True, slots=True)
class _Cursor:
    fingerprint: str
    after: tuple[Any, ...]
    now: int
    number: int
    # The first page's count, carried from page to page so that a cursor page counts nothing
    # (None in tokens made before it was carried: such a page counts again).
    total: int | None = None
    total_exact: bool = True


def _typed_filters(request: ListRequest) -> list[Condition]:
    parts: list[Condition] = []
    for severity in request.severities:
        if not 0 <= severity <= MAX_SEVERITY:
            raise invalid("severity", f"must be between 0 and {MAX_SEVERITY}")
    if request.severities:
        values = tuple(sorted(set(request.severities)))
        parts.append(Compare(FieldRef("severity", "integer"), "in", values))
    for name, value in (
        ("code", request.code),
        ("entity_id", request.entity_id),
        ("entity_type", request.entity_type),
    ):
        if value:
            check_text(value, JSON_NAMES[name])
            parts.append(Compare(FieldRef(name, "string"), "eq", value))
    start, end = request.start_time, request.end_time
    if start is not None and end is not None and start >= end:
        raise invalid("endTime", "must be after startTime")
    return parts


def _fingerprint(request: ListRequest, condition: Condition | None) -> str:
    """What a token is bound to: every input that shapes the result set and its order."""
    shape = repr(
        (
            condition,
            request.sort,
            request.start_time,
            request.end_time,
            request.history,
            request.include_shared,
        )
    )
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def _encode(cursor: _Cursor) -> str:
    document = {
        "v": _TOKEN_VERSION,
        "f": cursor.fingerprint,
        "a": list(cursor.after),
        "n": cursor.now,
        "p": cursor.number,
        "t": cursor.total,
        "x": cursor.total_exact,
    }
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_INTEGER_SORT_KEYS = frozenset(
    f.attribute for f in FIELDS if f.sortable and f.kind in (Kind.INTEGER, Kind.TIME)
)


def _sort_value(event: Event, key: str) -> Any:
    """The event's keyset value for a sort key, as the list's SQL orders it."""
    value = getattr(event, key)
    return SORT_MISSING if value is None and key in _INTEGER_SORT_KEYS else value


def _fits(value: Any, key: str) -> bool:
    """Whether a token's keyset value has the type (and range) of its sort column."""
    if key in _INTEGER_SORT_KEYS:
        return type(value) is int and -MAX_INTEGER <= value <= MAX_INTEGER
    return isinstance(value, str) and "\x00" not in value


def _decode(token: str, field: str, fingerprint: str, sort: tuple[SortKey, ...]) -> _Cursor:
    rule = "is not a token returned by a list call"
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = loads_json(raw, field)
        total = document.get("t")
        cursor = _Cursor(
            document["f"],
            tuple(document["a"]),
            int(document["n"]),
            int(document["p"]),
            total,
            document.get("x", True),
        )
        valid = (
            document["v"] == _TOKEN_VERSION
            and isinstance(cursor.fingerprint, str)
            and len(cursor.after) == len(sort) + 1
            and all(map(_fits, cursor.after, [*(key.field for key in sort), "id"]))
            and 0 < cursor.number <= MAX_INTEGER
            and 0 <= cursor.now <= MAX_INTEGER
            and (total is None or (type(total) is int and 0 <= total <= MAX_INTEGER))
            and type(cursor.total_exact) is bool
        )
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidInput):
        raise invalid(field, rule, reason="INVALID_PAGE_TOKEN") from None
    if not valid:
        raise invalid(field, rule, reason="INVALID_PAGE_TOKEN")
    if cursor.fingerprint != fingerprint:
        raise invalid(
            field,
            "belongs to a list call with other filters, sort or history; repeat that call's "
            "parameters with it, or start again without a token",
            reason="PAGE_TOKEN_MISMATCH",
        )
    return cursor


async def list_events(
    repository: EventRepository,
    principal: Principal,
    request: ListRequest,
    custom_field_type: CustomFieldType,
) -> EventPage:
    if request.page < 0:
        raise invalid("page", "must be 0 or more")
    if request.count and request.count not in COUNT_MODES:
        raise invalid(request.count_field, f"must be one of {', '.join(COUNT_MODES)}")
    cap = None if request.count == "exact" else COUNT_CAP
    condition = compile_filter(request.filter, custom_field_type)
    parts = _typed_filters(request)
    if condition is not None:
        parts.append(condition)
    combined = all_of(parts)
    fingerprint = _fingerprint(request, combined)

    cursor = None
    if request.page_token:
        if request.page:
            raise invalid("page", f"give page or {request.token_field}, not both")
        cursor = _decode(request.page_token, request.token_field, fingerprint, request.sort)
    # A token keeps the first page's "now", so that a window ending now does not move under
    # a client paging through it.
    now = cursor.now if cursor else now_us()
    if request.start_time is not None or request.end_time is not None:
        if request.start_time is not None:
            parts.append(Compare(_TIMESTAMP, "ge", request.start_time))
            if request.end_time is None:
                parts.append(Compare(_TIMESTAMP, "le", now))
        if request.end_time is not None:
            parts.append(Compare(_TIMESTAMP, "lt", request.end_time))
    elif not mentions(combined, "timestamp"):
        parts.append(Compare(_TIMESTAMP, "ge", now - DEFAULT_WINDOW_US))

    number = cursor.number if cursor else request.page
    query = EventQuery(
        sort=request.sort,
        offset=0 if cursor else request.page * request.size,
        # One more than asked tells whether a next page exists without trusting the count.
        limit=request.size + 1,
        condition=all_of(parts),
        history=request.history,
        include_shared=request.include_shared,
        after=cursor.after if cursor else None,
        count_cap=cap,
    )
    carried = _carried_total(cursor, cap)
    if carried is not None:
        query = dataclasses.replace(query, counted=False)
    events, total = await repository.query(principal, query)
    if carried is not None:
        total, exact = carried
    else:
        exact = cap is None or total <= cap
        total = total if cap is None else min(total, cap)
    next_token = ""
    if len(events) > request.size:
        events = events[: request.size]
        last = events[-1]
        after = (*(_sort_value(last, key.field) for key in request.sort), last.id)
        next_token = _encode(_Cursor(fingerprint, after, now, number + 1, total, exact))
    return EventPage(
        events,
        total,
        dataclasses.replace(query, limit=request.size),
        number=number,
        next_token=next_token,
        total_exact=exact,
    )


def _carried_total(cursor: _Cursor | None, cap: int | None) -> tuple[int, bool] | None:
    """The total a cursor page answers without counting: the first page's, when it says as
    much as this call's count mode asks (an exact count, or one to the cap); None: count."""
    if cursor is None or cursor.total is None:
        return None
    if cap is None:
        return (cursor.total, True) if cursor.total_exact else None
    if cursor.total_exact and cursor.total <= cap:
        return cursor.total, True
    if cursor.total >= cap:
        return cap, False
    return None
