"""The one condition tree evaluated two ways: the SQL the store renders (SqlBuilder, with the
principal's scope around it) and the Python matcher that live subscriptions use must select
exactly the same events, for random events and random conditions (of the list filter, live
subscriptions, delete jobs and find's queries), on both backends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.alarm_status import Transition, as_left_by
from service.domain.conditions import (
    DOMAIN,
    AllOf,
    AnyOf,
    AtLeast,
    Compare,
    Condition,
    Exists,
    FieldRef,
    FieldType,
    Negation,
    Prefix,
    Subtree,
    Words,
    compile_matcher,
    event_matcher,
    read_event,
)
from service.domain.custom_fields import Instant
from service.domain.events import Event, EventQuery, SortKey
from service.domain.filters import like_pattern
from service.domain.live import EventFilter

T0 = 1_700_000_000_000_000
TIMES = [T0 - 1, T0, T0 + 1, T0 + 86_400_000_000]
DOMAINS = ["/", "/root", "/root/sub1", "/root/sub1/x", "/root/sub10", "/rootx", "/root/Sub1"]
# Text with the characters that LIKE, GLOB and regular expressions treat specially.
TEXT = st.text(alphabet="ab_%*?[\\é", max_size=3)
TEXTS: dict[str, list[str]] = {
    "type_id": ["t.a", "t.b", "t_a"],
    "correlation_id": ["", "c1"],
    "entity_type": ["", "Pump", "pump"],
    "entity_id": ["", "e1", "e_1", "e%1"],
    "code": ["", "1", "12", "a*b"],
    "classification": ["", "ALARM", "WARNING"],
    "category": ["", "x"],
    "acknowledged_by": ["", "u1"],
    "status": ["", "ACTIVE", "ACKNOWLEDGED", "CLEARED"],
    "cleared_by": ["", "u1"],
    "app_id": ["", "app"],
}
INTEGERS = {"severity": [0, 1, 2, 5], "etag": [1, 2]}
OCCURRENCES = [1, 2, 1000]
CUSTOM: dict[str, FieldType] = {
    "plant": "string",
    "temperature": "double",
    "cycles": "integer",
    "urgent": "boolean",
    "due": "timestamp",
}
NUMBERS = [-1.5, 0, 0.1, 2, 2.5, 10**6]
# JSON values of every type, for the source, its members and custom fields read as JSON.
JSON_VALUES = ["", "src", "Src b", 'é"q', 5, "5", 2.5, True, False, None]
SOURCES = [*JSON_VALUES, {"a": 1}, [1, 2], {"a": "src", "b": True}, {"a": 2.5, "b": None}]


def _custom_value(name: str) -> st.SearchStrategy[Any]:
    kind = CUSTOM[name]
    if kind == "string":
        return st.one_of(st.sampled_from(["P1", "P2", "p*"]), TEXT)
    if kind == "double":
        return st.sampled_from(NUMBERS)
    if kind == "integer":
        return st.sampled_from([-3, 0, 2, 7])
    if kind == "boolean":
        return st.booleans()
    return st.sampled_from(TIMES).map(Instant)


# Values a custom field may hold against its declared type (a type that does not declare it,
# or declares it otherwise, stored them): a filter of the declared type never matches them.
STRAYS = ["5", 5, 2.5, "P1", True, {"$timestamp": 5}]


@st.composite
def events(draw: st.DrawFn, strays: bool = False) -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: draw(
            st.one_of(st.sampled_from(values), TEXT)
            if name != "type_id"
            else st.sampled_from(values)
        )
        for name, values in TEXTS.items()
    }
    fields.update({name: draw(st.sampled_from(values)) for name, values in INTEGERS.items()})
    fields.update(
        domain=draw(st.sampled_from(DOMAINS)),
        timestamp=draw(st.sampled_from(TIMES)),
        create_time=draw(st.sampled_from(TIMES)),
        update_time=draw(st.sampled_from(TIMES)),
        description=draw(TEXT),
        source=draw(st.sampled_from(SOURCES)),
        acknowledgement_required=draw(st.booleans()),
        acknowledged=draw(st.booleans()),
        acknowledged_at=draw(st.one_of(st.none(), st.sampled_from(TIMES))),
        cleared_at=draw(st.one_of(st.none(), st.sampled_from(TIMES))),
        internal=draw(st.booleans()),
        # Alarms' occurrence fields; None on other events.
        count=draw(st.one_of(st.none(), st.sampled_from(OCCURRENCES))),
        first_occurrence_time=draw(st.one_of(st.none(), st.sampled_from(TIMES))),
        last_occurrence_time=draw(st.one_of(st.none(), st.sampled_from(TIMES))),
        custom_fields={
            name: draw(
                st.one_of(_custom_value(name), st.sampled_from(STRAYS))
                if strays
                else _custom_value(name)
            )
            for name in draw(st.lists(st.sampled_from(sorted(CUSTOM)), unique=True))
        },
    )
    return fields


def _values(ref: FieldRef) -> st.SearchStrategy[Any]:
    if ref.type == "json":
        return st.sampled_from([v for v in JSON_VALUES if v is not None])
    if ref.custom:
        if ref.type == "timestamp":
            return st.sampled_from(TIMES)
        if ref.type in ("integer", "double"):
            return st.sampled_from([*NUMBERS, -3, 7])
        return _custom_value(ref.name)
    if ref.name in TEXTS:
        return st.one_of(st.sampled_from(TEXTS[ref.name]), TEXT)
    if ref.name in INTEGERS:
        return st.sampled_from([*INTEGERS[ref.name], 3, -1])
    if ref.name == "count":
        return st.sampled_from([*OCCURRENCES, 0, 3])
    if ref.name in ("description", "domain"):
        return st.one_of(TEXT, st.sampled_from(DOMAINS))
    if ref.type == "boolean":
        return st.booleans()
    return st.sampled_from(TIMES)


STANDARD = [
    *(FieldRef(name, "string") for name in [*TEXTS, "description", "domain"]),
    FieldRef("description", "string", lowercase=True),
    FieldRef("source", "json"),
    FieldRef("source", "json", key="a"),
    FieldRef("source", "json", key="b"),
    *(FieldRef(name, "integer") for name in [*INTEGERS, "count"]),
    *(
        FieldRef(name, "timestamp")
        for name in (
            "timestamp",
            "create_time",
            "update_time",
            "acknowledged_at",
            "cleared_at",
            "first_occurrence_time",
            "last_occurrence_time",
        )
    ),
    *(
        FieldRef(name, "boolean")
        for name in ("acknowledgement_required", "acknowledged", "internal")
    ),
]
FIELDS = [
    *STANDARD,
    *(FieldRef(name, kind, custom=True) for name, kind in CUSTOM.items()),
    *(FieldRef(name, "json", custom=True) for name in CUSTOM),
]
WORDS = st.lists(st.sampled_from(["a", "b", "ab", "src", "1"]), min_size=1, max_size=2)


@st.composite
def comparisons(draw: st.DrawFn) -> Condition:
    ref = draw(st.sampled_from(FIELDS))
    if ref.name == "domain" and draw(st.booleans()):
        return Subtree(DOMAIN, draw(st.sampled_from(DOMAINS)))
    texts = ref.type in ("string", "json")
    if not ref.custom or ref.type == "json":
        tests = ["exists", "prefix", "words"] if texts else ["exists"]
        test = draw(st.sampled_from([*tests, "compare", "compare", "compare"]))
        if test == "exists":
            return Exists(ref)
        if test == "prefix":
            return Prefix(ref, draw(st.one_of(st.sampled_from(["", "s", "S", "e", "a"]), TEXT)))
        if test == "words":
            words = tuple(draw(WORDS))
            return Words(ref, words, require_all=draw(st.booleans()), phrase=draw(st.booleans()))
    ops = ["eq", "in"]
    if texts:
        ops.append("like")
    if ref.type in ("integer", "double", "timestamp", "json") or (not ref.custom and texts):
        ops += ["lt", "le", "gt", "ge"]
    op = draw(st.sampled_from(ops))
    if op == "in":
        return Compare(ref, op, tuple(draw(st.lists(_values(ref), min_size=1, max_size=3))))
    if op == "like":
        return Compare(ref, op, like_pattern(draw(st.text(alphabet="ab_%*?[\\é1ePp", max_size=4))))
    value = draw(_values(ref))
    if op in ("lt", "le", "gt", "ge") and isinstance(value, bool):
        value = draw(st.sampled_from(NUMBERS))  # booleans have no order
    return Compare(ref, op, value)


conditions = st.recursive(
    comparisons(),
    lambda parts: st.one_of(
        st.lists(parts, max_size=3).map(lambda p: AllOf(tuple(p))),
        st.lists(parts, max_size=3).map(lambda p: AnyOf(tuple(p))),
        st.lists(parts, min_size=2, max_size=3).flatmap(
            lambda p: st.integers(2, len(p)).map(lambda n: AtLeast(n, tuple(p)))
        ),
        parts.map(Negation),
    ),
    max_leaves=6,
)


def _store(store: Store, tenant: str, stored: list[dict[str, Any]]) -> list[Event]:
    created = [Event(id=str(uuid.uuid4()), tenant_id=tenant, **fields) for fields in stored]
    # Another tenant's copy of every event, which no scope may reach.
    others = [Event(id=str(uuid.uuid4()), tenant_id="other", **fields) for fields in stored]

    async def go() -> None:
        await asyncio.gather(*(store.events.insert(e) for e in [*created, *others]))

    asyncio.run(go())
    return created


def _in_scope(principal: Principal, event: Event) -> bool:
    scope = Subtree(DOMAIN, principal.domain)
    return event.tenant_id == principal.tenant_id and compile_matcher(scope, read_event)(event)


def _select_the_same_events(
    store: Store, stored: list[dict[str, Any]], condition: Condition, domain: str
) -> None:
    tenant = f"t-{uuid.uuid4()}"
    created = _store(store, tenant, stored)
    principal = Principal(tenant, "k", "tester", Role.READ, domain=domain)
    query = EventQuery(
        sort=(SortKey("timestamp", descending=True),),
        condition=condition,
        history=True,
        limit=100,
    )

    listed, total = asyncio.run(store.events.query(principal, query))

    matcher = event_matcher(condition)
    expected = {e.id for e in created if _in_scope(principal, e) and matcher(e)}
    assert {e.id for e in listed} == expected
    assert total == len(expected)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    stored=st.lists(events(), max_size=8),
    condition=conditions,
    domain=st.sampled_from(DOMAINS),
)
def test_sql_and_python_select_the_same_events(
    store: Store, stored: list[dict[str, Any]], condition: Condition, domain: str
) -> None:
    _select_the_same_events(store, stored, condition, domain)


@pytest.fixture
def declared(store: Store) -> Store:
    """The store after a type declared every custom field filterable: on PostgreSQL their
    conditions then read the fields' columns, on SQLite their expression indexes serve."""
    from persistence.event_types import EventTypeRepository
    from service.domain.custom_fields import FieldDefinition
    from service.domain.custom_fields import FieldType as Declared
    from service.domain.event_types import EventTypeManager, EventTypeSpec

    fields = tuple(
        FieldDefinition(name, Declared(kind.upper()), filterable=True)
        for name, kind in CUSTOM.items()
    )
    admin = Principal("declaring", "k", "admin", Role.ADMIN)
    types = EventTypeManager(EventTypeRepository(store))
    asyncio.run(types.create(admin, EventTypeSpec(name="all", fields=fields)))

    async def settle() -> dict[str, str]:
        await store.custom_indexes.settled()
        return await store.read(store.custom_indexes.refresh_columns)

    columns = asyncio.run(settle())
    assert len(columns) == (len(CUSTOM) if store.postgres else 0)
    return store


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    stored=st.lists(events(strays=True), max_size=8),
    condition=conditions,
    domain=st.sampled_from(DOMAINS),
)
def test_sql_and_python_select_the_same_events_of_declared_fields(
    declared: Store, stored: list[dict[str, Any]], condition: Condition, domain: str
) -> None:
    _select_the_same_events(declared, stored, condition, domain)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    stored=st.lists(events(), max_size=8),
    domain=st.sampled_from(DOMAINS),
    type_ids=st.frozensets(st.sampled_from(TEXTS["type_id"]), max_size=2),
    severities=st.frozensets(st.sampled_from(INTEGERS["severity"]), max_size=2),
    classifications=st.frozensets(st.sampled_from(["ALARM", "WARNING"]), max_size=1),
    entity_id=st.sampled_from(["", "e1", "e_1"]),
    statuses=st.frozensets(st.sampled_from(["ACTIVE", "CLEARED"]), max_size=2),
)
def test_a_subscriptions_catch_up_query_and_its_live_matching_agree(
    store: Store,
    stored: list[dict[str, Any]],
    domain: str,
    type_ids: frozenset[str],
    severities: frozenset[int],
    classifications: frozenset[str],
    entity_id: str,
    statuses: frozenset[str],
) -> None:
    tenant = f"t-{uuid.uuid4()}"
    created = _store(store, tenant, stored)
    principal = Principal(tenant, "k", "tester", Role.READ, domain="/root")
    event_filter = EventFilter(
        domain=domain,
        type_ids=type_ids,
        severities=severities,
        classifications=classifications,
        entity_id=entity_id,
        statuses=statuses,
    )

    page = asyncio.run(store.events.feed_page(principal, event_filter, 0, 2**62, 1000))

    expected = {e.id for e in created if _in_scope(principal, e) and event_filter.matches(e)}
    assert {e.id for e in page} == expected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    stored=st.lists(
        st.tuples(
            events(),
            st.lists(
                st.tuples(
                    st.sampled_from(["ACTIVE", "ACKNOWLEDGED", "CLEARED"]),
                    st.sampled_from(TIMES),
                    st.one_of(st.none(), st.sampled_from(OCCURRENCES)),
                    st.one_of(st.none(), st.sampled_from(TIMES)),
                ),
                max_size=3,
            ),
        ),
        max_size=5,
    ),
    condition=conditions,
)
def test_transitions_caught_up_and_transitions_live_match_alike(
    store: Store, stored: list[tuple[dict[str, Any], list[tuple[Any, ...]]]], condition: Condition
) -> None:
    """A subscriber catching up from the store gets exactly the transitions whose alarm, as
    each left it (its status, count, last occurrence, no later acknowledgement or clearing),
    matches: what a subscriber listening live was delivered."""
    tenant = f"t-{uuid.uuid4()}"
    created = _store(store, tenant, [fields for fields, _ in stored])
    transitions = [
        Transition(
            event_id=event.id,
            tenant_id=tenant,
            change="COUNTED",
            from_status=status,
            to_status=status,
            by="",
            at=moment,
            event=event,
            count=count,
            last_occurrence_time=last,
        )
        for event, (_, changes) in zip(created, stored, strict=True)
        for status, moment, count, last in changes
    ]

    def record(cursor: Any) -> None:
        store.writes.lock_feed(cursor)
        store.writes.record_transitions(cursor, transitions)

    asyncio.run(store.writer.submit(record))
    principal = Principal(tenant, "k", "tester", Role.READ, domain="/root")
    event_filter = EventFilter(domain="/", where=condition)

    page = asyncio.run(store.events.feed_page(principal, event_filter, 0, 2**62, 1000))

    expected = [
        t.seq
        for t in transitions
        if _in_scope(principal, t.subject) and event_filter.matches(as_left_by(t.subject, t))
    ]
    assert [item.seq for item in page if isinstance(item, Transition)] == expected
