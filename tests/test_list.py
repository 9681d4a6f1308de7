"""Listing on both backends: the JSON filter (docs/rest-v3.md#filter), the typed filters
(docs/platform-events.md#list-events), the 7-day default, history collapse, and keyset page tokens;
the domain's list call over the real store."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from helpers import event as new_event
from helpers import insert, run
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.custom_fields import Instant
from service.domain.errors import InvalidInput
from service.domain.events import Event, EventManager, EventPage, SortKey, now_us
from service.domain.filters import FieldType, compile_filter
from service.domain.listing import ListRequest
from service.rest_json import format_time

T = TypeVar("T")
DAY = 86_400 * 1_000_000
NOW = now_us()
CALLER = Principal(tenant_id="acme", key_id="k1", name="tester", role=Role.ADMIN)
CUSTOM: dict[str, FieldType] = {
    "plant": "string",
    "temperature": "double",
    "cycles": "integer",
    "urgent": "boolean",
    "due": "timestamp",
}


def event(tenant: str = "acme", **fields: Any) -> Event:
    """An event inside the default 7-day window unless its time is given."""
    fields.setdefault("timestamp", NOW - DAY)
    return new_event(tenant, **fields)


def listing(store: Store, **request: Any) -> EventPage:
    request.setdefault("size", 100)
    return run(EventManager(store.events).list_events(CALLER, ListRequest(**request), CUSTOM.get))


def descriptions(store: Store, filter_text: str = "", **request: Any) -> set[str]:
    page = listing(store, filter=filter_text, **request)
    assert page.total == len(page.events)
    return {e.description for e in page.events}


def rejection(store: Store, **request: Any) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        listing(store, **request)
    return {v.field: v.rule for v in caught.value.violations}


def test_filter_operators_and_combinators(store: Store) -> None:
    insert(
        store,
        event(description="a", severity=1, code="100", type_id="Pump", entity_id="p1"),
        event(description="b", severity=2, code="200", type_id="Pump", entity_id="p_2"),
        event(description="c", severity=3, code="300", type_id="Valve", entity_id="P%3"),
        event(
            description="d",
            severity=4,
            code="400",
            type_id="Valve",
            entity_id="p*4",
            acknowledged=True,
            acknowledged_at=NOW - DAY,
        ),
        event(description="e", severity=5, code="500", type_id="valve", entity_id="q5"),
        event("globex", description="other tenant", severity=1),
    )
    assert descriptions(store, '{"typeId": "Pump"}') == {"a", "b"}
    assert descriptions(store, '{"severity": {"in": [1, 2, 5]}}') == {"a", "b", "e"}
    assert descriptions(store, '{"code": 300}') == {"c"}
    # like: * any run, ? one character, case-sensitive on both backends; SQL's own wildcards
    # and escaped \\* are literal characters.
    assert descriptions(store, '{"typeId": {"like": "V*"}}') == {"c", "d"}
    assert descriptions(store, '{"entityId": {"like": "p?"}}') == {"a"}
    assert descriptions(store, '{"entityId": {"like": "p_*"}}') == {"b"}
    assert descriptions(store, '{"entityId": {"like": "P%?"}}') == {"c"}
    assert descriptions(store, '{"entityId": {"like": "p\\\\*?"}}') == {"d"}
    assert descriptions(store, '{"or": [{"severity": 1}, {"code": "500"}]}') == {"a", "e"}
    assert descriptions(store, '{"or": {"severity": 1, "code": "500"}}') == {"a", "e"}
    assert descriptions(store, '{"and": [{"typeId": "Pump"}, {"severity": 2}]}') == {"b"}
    assert descriptions(store, '{"typeId": "Valve", "severity": {"in": [4, 5]}}') == {"d"}
    assert descriptions(store, '{"not": {"typeId": "Pump"}}') == {"c", "d", "e"}
    assert descriptions(store, '{"not": [{"typeId": "Valve"}, {"severity": 3}]}') == {
        "a",
        "b",
        "d",
        "e",
    }
    # `not` is the exact complement, also over missing values (no acknowledgedAt).
    acknowledged_before = f'{{"acknowledgedAt": {{"before": "{format_time(NOW)}"}}}}'
    assert descriptions(store, acknowledged_before) == {"d"}
    assert descriptions(store, f'{{"not": {acknowledged_before}}}') == {"a", "b", "c", "e"}
    assert descriptions(store, '{"severity": {"between": "[2,4)"}}') == {"b", "c"}
    assert descriptions(store, '{"severity": {"after": 3, "before": 5}}') == {"d"}


def test_time_ranges_and_the_seven_day_default(store: Store) -> None:
    insert(
        store,
        event(description="2018-01-01", timestamp=1_514_764_800_000_000),
        event(description="2018-01-15", timestamp=1_514_764_800_000_000 + 14 * DAY),
        event(description="2018-02-01", timestamp=1_517_443_200_000_000),
        event(description="yesterday", timestamp=NOW - DAY),
        event(description="eight days ago", timestamp=NOW - 8 * DAY),
    )
    # No time filter: the last 7 days only.
    assert descriptions(store) == {"yesterday"}
    january = "2018-01-01T00:00:00Z,2018-02-01T00:00:00Z"
    assert descriptions(store, f'{{"timestamp": {{"between": "[{january})"}}}}') == {
        "2018-01-01",
        "2018-01-15",
    }
    assert descriptions(store, f'{{"timestamp": {{"between": "({january}]"}}}}') == {
        "2018-01-15",
        "2018-02-01",
    }
    assert descriptions(store, '{"timestamp": {"before": "2018-01-15T00:00:00Z"}}') == {
        "2018-01-01"
    }
    assert descriptions(store, '{"timestamp": {"after": "2018-01-15T00:00:00Z"}}') == {
        "2018-02-01",
        "yesterday",
        "eight days ago",
    }
    # A time filter anywhere in the filter replaces the default window.
    assert descriptions(store, '{"or": [{"timestamp": 1514764800000}, {"severity": 9}]}') == {
        "2018-01-01"
    }
    # The typed range (docs/platform-events.md#list-events): start inclusive, end exclusive; a start
    # alone runs until now.
    assert descriptions(
        store, start_time=1_514_764_800_000_000, end_time=1_517_443_200_000_000
    ) == {"2018-01-01", "2018-01-15"}
    assert descriptions(store, start_time=NOW - 10 * DAY) == {"yesterday", "eight days ago"}
    assert descriptions(store, end_time=1_517_443_200_000_000) == {"2018-01-01", "2018-01-15"}


def test_typed_filters_of_the_platform_model(store: Store) -> None:
    insert(
        store,
        event(description="a", severity=1, code="10001", entity_id="pump-1", entity_type="Device"),
        event(description="b", severity=2, code="10001", entity_id="pump-2", entity_type="Device"),
        event(description="c", severity=2, code="10002", entity_id="site-1", entity_type="Asset"),
    )
    assert descriptions(store, severities=(1, 2), code="10001") == {"a", "b"}
    assert descriptions(store, entity_type="Device", severities=(2,)) == {"b"}
    assert descriptions(store, entity_id="site-1") == {"c"}
    assert descriptions(store, include_shared=True, entity_type="Asset") == {"c"}
    assert "severity" in rejection(store, severities=(101,))
    assert "endTime" in rejection(store, start_time=NOW, end_time=NOW - DAY)


def test_custom_fields_filter_by_their_declared_type(store: Store) -> None:
    due = NOW // 1000 * 1000 + DAY  # whole milliseconds, as the equality below names it
    insert(
        store,
        event(
            description="a",
            custom_fields={
                "plant": "Berlin",
                "temperature": 71.5,
                "cycles": 3,
                "urgent": True,
                "due": Instant(due),
            },
        ),
        event(
            description="b",
            custom_fields={"plant": "Bern", "temperature": 40, "cycles": 10, "urgent": False},
        ),
        event(description="c", custom_fields={"plant": "3", "cycles": "3"}),
        event(description="d"),
    )
    assert descriptions(store, '{"plant": "Berlin"}') == {"a"}
    assert descriptions(store, '{"plant": {"like": "Ber*"}}') == {"a", "b"}
    assert descriptions(store, '{"cycles": 3}') == {"a"}  # the string "3" is no integer
    assert descriptions(store, '{"cycles": {"in": [3, 10]}}') == {"a", "b"}
    assert descriptions(store, '{"cycles": {"after": 2}}') == {"a", "b"}
    assert descriptions(store, '{"temperature": {"between": "[40,71.5)"}}') == {"b"}
    assert descriptions(store, '{"urgent": false}') == {"b"}
    assert descriptions(store, '{"not": {"urgent": true}}') == {"b", "c", "d"}
    assert descriptions(store, f'{{"due": {{"after": "{format_time(NOW)}"}}}}') == {"a"}
    assert descriptions(store, f'{{"due": {due // 1000}}}') == {"a"}


@pytest.mark.parametrize(
    ("filter_text", "field", "rule"),
    [
        ('{"severity": {"gt": 1}}', "filter.severity.gt", "unknown operator 'gt'"),
        ('{"colour": "red"}', "filter.colour", "not a filterable field"),
        ('{"severity": "high"}', "filter.severity", "must be an integer"),
        ('{"severity": {"in": 1}}', "filter.severity.in", "non-empty JSON list"),
        ('{"description": {"between": "[a,b]"}}', "filter.description.between", "times and"),
        ('{"severity": {"like": "1*"}}', "filter.severity.like", "string fields"),
        ('{"timestamp": {"between": "2018-01-01T00:00:00Z"}}', "filter.timestamp.between", "["),
        ('{"timestamp": "yesterday"}', "filter.timestamp", "ISO-8601"),
        ('{"acknowledged": "yes"}', "filter.acknowledged", "true or false"),
        ('{"or": []}', "filter.or", "must not be an empty list"),
        ('{"not": 3}', "filter.not", "JSON object"),
        ('{"typeId": "x"', "filter", "valid JSON"),
        ('{"typeId": "x", "typeId": "y"}', "filter", "duplicate key"),
        ("[1]", "filter", "JSON object"),
        ('{"payload": "x"}', "filter.payload", "not a filterable field"),
    ],
)
def test_bad_filters_name_the_problem(filter_text: str, field: str, rule: str) -> None:
    # Rejected while compiling, before any query runs: no database needed.
    with pytest.raises(InvalidInput) as caught:
        compile_filter(filter_text, CUSTOM.get)
    violations = {v.field: v.rule for v in caught.value.violations}
    assert rule in violations[field]
    assert caught.value.reason in ("INVALID_FILTER", "MALFORMED_FILTER")


def test_history_collapses_correlated_events_to_the_newest(store: Store) -> None:
    old, middle, new = NOW - 3 * DAY, NOW - 2 * DAY, NOW - DAY
    insert(store, event(description="v2", correlation_id="c1", entity_id="e", timestamp=middle))
    # Arriving later but older, and in one batch with a newer one: the flag stays right.
    insert(
        store,
        event(description="v1", correlation_id="c1", entity_id="e", timestamp=old),
        event(description="v3", correlation_id="c1", entity_id="e", timestamp=new),
        event(description="other entity", correlation_id="c1", entity_id="f", timestamp=old),
        event(
            description="other type", correlation_id="c1", entity_id="e", type_id="T", timestamp=old
        ),
        event(description="no correlation 1", timestamp=old),
        event(description="no correlation 2", timestamp=old),
        event(
            "globex", description="other tenant", correlation_id="c1", entity_id="e", timestamp=NOW
        ),
    )
    latest = {"v3", "other entity", "other type", "no correlation 1", "no correlation 2"}
    assert descriptions(store) == latest
    assert descriptions(store, history=True) == latest | {"v1", "v2"}
    # Collapse comes first, then the filter: v3 stands for its correlation.
    assert descriptions(store, '{"timestamp": {"before": "' + format_time(new) + '"}}') == {
        "other entity",
        "other type",
        "no correlation 1",
        "no correlation 2",
    }


def test_correlations_stored_before_migration_38_still_collapse_after_it(store: Store) -> None:
    old, new = NOW - 2 * DAY, NOW - DAY
    insert(store, event(description="v1", correlation_id="c9", entity_id="e", timestamp=old))
    insert(store, event(description="alone", timestamp=old))

    def undo_38(db: Any) -> None:
        if not store.postgres:  # the index as migration 3 made it, over every event
            db.execute_sql("DROP INDEX events_correlation")
            db.execute_sql(
                "CREATE INDEX events_correlation ON events "
                "(tenant_id, correlation_id, entity_id, type_id, latest, ts, id)"
            )
        db.execute_sql("DELETE FROM schema_migrations WHERE version = 38")

    store.run_sync(undo_38)
    assert store.migrate() == [38]
    insert(store, event(description="v2", correlation_id="c9", entity_id="e", timestamp=new))
    insert(store, event(description="v0", correlation_id="c9", entity_id="e", timestamp=old - 1))
    assert descriptions(store) == {"v2", "alone"}
    assert descriptions(store, history=True) == {"v0", "v1", "v2", "alone"}


def test_cursor_pages_match_the_sorted_list_and_are_bound_to_the_query(store: Store) -> None:
    events = [
        event(description=f"e{i}", severity=i % 3, timestamp=NOW - DAY + (i // 2) * 1000)
        for i in range(23)
    ]
    insert(store, *events)
    for sort in (
        (SortKey("timestamp", descending=True),),
        (SortKey("severity", descending=False), SortKey("timestamp", descending=True)),
    ):
        expected = sorted(events, key=lambda e: e.id, reverse=sort[-1].descending)
        for key in reversed(sort):
            expected.sort(key=lambda e, k=key: getattr(e, k.field), reverse=key.descending)
        seen: list[str] = []
        token, number, size = "", 0, 4
        while True:
            page = listing(store, sort=sort, size=size, page_token=token)
            assert page.total == 23 and page.number == number
            seen += [e.id for e in page.events]
            token, number, size = page.next_token, number + 1, 5  # a size may change
            if not token:
                break
        assert seen == [e.id for e in expected]

    first = listing(store, size=5, filter='{"severity": {"in": [0, 1]}}')
    assert first.next_token
    mismatch = rejection(store, size=5, page_token=first.next_token, filter='{"severity": 0}')
    assert "another" not in mismatch["pageToken"] and "other filters" in mismatch["pageToken"]
    assert "pageToken" in rejection(store, page_token="not-a-token")
    assert "page" in rejection(
        store, size=5, page=2, page_token=first.next_token, filter='{"severity": {"in": [0, 1]}}'
    )


def test_the_total_is_capped_unless_an_exact_count_is_asked(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """count=capped (the default) stops counting past COUNT_CAP and says the total is a lower
    bound; count=exact counts every match; under the cap both are exact. (The cap is lowered
    here so that a few events pass it; service/domain/listing.py reads it per call.)"""
    from service.domain import listing as listing_module

    monkeypatch.setattr(listing_module, "COUNT_CAP", 5)
    insert(store, *(event(description=str(n), entity_id=f"cap-{n % 2}") for n in range(8)))
    capped = listing(store, size=2)
    assert (capped.total, capped.total_exact, len(capped.events)) == (5, False, 2)
    exact = listing(store, size=2, count="exact")
    assert (exact.total, exact.total_exact) == (8, True)
    under = listing(store, size=2, entity_id="cap-1")
    assert (under.total, under.total_exact) == (4, True)
    # A cursor page answers the first page's count, counted once per cursor: events arriving
    # meanwhile do not change it.
    insert(store, *(event(description=f"late {n}", entity_id="cap-1") for n in range(3)))
    deeper = listing(store, size=2, page_token=capped.next_token)
    assert (deeper.total, deeper.total_exact) == (5, False)
    first_under = listing(store, size=2, entity_id="cap-1")
    assert (first_under.total, first_under.total_exact) == (5, False)
    under_next = listing(store, size=2, entity_id="cap-1", page_token=under.next_token)
    assert (under_next.total, under_next.total_exact) == (4, True)
    # A token's capped count does not answer a call asking for the exact one: that counts.
    exact_next = listing(store, size=2, count="exact", page_token=capped.next_token)
    assert (exact_next.total, exact_next.total_exact) == (11, True)
    # An exact count answers a capped call as the cap would.
    capped_next = listing(store, size=2, page_token=exact.next_token)
    assert (capped_next.total, capped_next.total_exact) == (5, False)
    assert rejection(store, count="roughly") == {"count": "must be one of capped, exact"}


def test_a_token_whose_carried_count_was_tampered_with_is_refused(store: Store) -> None:
    """The count a token carries is checked like the rest of it: a negative or non-integer
    total, or a relation flag that is no boolean, is an invalid token, not a wrong answer."""
    import base64
    import json

    insert(store, *(event(description=str(n)) for n in range(3)))
    token = listing(store, size=1).next_token
    document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert (document["t"], document["x"]) == (3, True)
    for change in ({"t": -1}, {"t": "3"}, {"t": 2.5}, {"t": True}, {"x": "yes"}, {"x": 1}):
        forged = base64.urlsafe_b64encode(json.dumps({**document, **change}).encode()).decode()
        assert rejection(store, size=1, page_token=forged) == {
            "pageToken": "is not a token returned by a list call"
        }, change
    # A token made before counts were carried (no "t") still works: its page counts again.
    older = {k: v for k, v in document.items() if k not in ("t", "x")}
    page = listing(
        store, size=1, page_token=base64.urlsafe_b64encode(json.dumps(older).encode()).decode()
    )
    assert (page.total, page.total_exact, len(page.events)) == (3, True, 1)


def test_a_list_repeated_with_other_values_answers_each_call_its_own(store: Store) -> None:
    """The same list with other values, many times over: on PostgreSQL its statement is
    prepared once per connection and, after five runs, may keep one generic plan
    (persistence/prepared.py); each answer is still that call's own."""
    insert(
        store,
        *(
            event(
                description=f"e{n}",
                entity_id=f"entity-{n % 4}",
                severity=n % 3,
                timestamp=NOW - (n + 1) * DAY // 4,
                etag=1 + n % 2,
            )
            for n in range(24)
        ),
    )
    for round_ in range(12):
        entity = f"entity-{round_ % 4}"
        since = NOW - (1 + round_ % 5) * DAY
        expected = {
            f"e{n}" for n in range(24) if n % 4 == round_ % 4 and NOW - (n + 1) * DAY // 4 >= since
        }
        got = descriptions(store, entity_id=entity, start_time=since)
        assert got == expected
        page = listing(store, size=1 + round_ % 3, filter=f'{{"severity": {round_ % 3}}}')
        assert page.total == 8
        assert len(page.events) == 1 + round_ % 3
    # The largest integer a filter takes compares as a number, not an error.
    assert descriptions(store, f'{{"etag": {2**63 - 1}}}') == set()
    assert len(descriptions(store, f'{{"etag": {{"before": {2**63 - 1}}}}}')) == 24
