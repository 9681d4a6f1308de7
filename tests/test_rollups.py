"""Rollups (persistence/upkeep.py, persistence/rollups.py): find's counts and its terms and
date histograms answered from the daily rollups equal the raw aggregation over the events,
on random events after random deletes (delete jobs and retention), on both backends."""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence.event_types import RetentionRepository
from persistence.find_run import run_find
from persistence.jobs import JobRepository
from persistence.rollups import qualifies
from persistence.store import Store
from persistence.upkeep import day_sql
from service.domain.access import Principal, Role
from service.domain.events import Event, EventManager
from service.domain.find_answer import answer_document
from service.domain.find_parser import parse_find_request
from service.domain.jobs import JobManager, JobRunner, RunnerSettings
from service.job_views import parse_job_item

DAY_MS = 86_400_000
BASE_MS = 1_700_006_400_000  # a UTC midnight
DOMAINS = ["/", "/root", "/root/sub1", "/root/sub10"]
TYPES = ["RULE", "THING.CREATE", "THING.UPDATE"]


@st.composite
def events(draw: Any) -> dict[str, Any]:
    ts_ms = BASE_MS + draw(st.integers(-3 * DAY_MS, 40 * DAY_MS))
    return {
        "domain": draw(st.sampled_from(DOMAINS)),
        "type_id": draw(st.sampled_from(TYPES)),
        "timestamp": ts_ms * 1000,
        # How long ago it was stored decides what retention takes.
        "create_time": (BASE_MS + draw(st.integers(0, 9)) * DAY_MS) * 1000,
        "entity_id": draw(st.sampled_from(["e1", "e2", "e3"])),
        "severity": draw(st.integers(0, 5)),
    }


midnights = st.integers(-4, 42).map(lambda d: BASE_MS + d * DAY_MS)
queries = st.one_of(
    st.just({"match_all": {}}),
    st.builds(lambda t: {"term": {"type": t}}, st.sampled_from([*TYPES, "nothing"])),
    st.builds(lambda ts: {"terms": {"typeId": ts}}, st.lists(st.sampled_from(TYPES), min_size=1)),
    st.builds(
        lambda low, high: {"range": {"timestamp": {"gte": low, "lt": high}}}, midnights, midnights
    ),
    st.builds(
        lambda t, low: {
            "bool": {"filter": [{"term": {"type": t}}, {"range": {"timestamp": {"gte": low}}}]}
        },
        st.sampled_from(TYPES),
        midnights,
    ),
)
histograms = st.sampled_from(
    [
        {"calendar_interval": "day"},
        {"calendar_interval": "month"},
        {"calendar_interval": "quarter"},
        {"fixed_interval": "3d"},
        {"fixed_interval": "2d"},
        {"calendar_interval": "week"},
        {"calendar_interval": "year"},
    ]
)
terms = st.builds(
    lambda size, order, min_count: {
        "field": "type",
        "size": size,
        "order": order,
        "min_doc_count": min_count,
    },
    st.integers(1, 3),
    st.sampled_from([{"_count": "desc"}, {"_count": "asc"}, {"_key": "asc"}, {"_key": "desc"}]),
    st.integers(1, 3),
)


def aggregations(histogram: dict[str, Any], term: dict[str, Any], nest: bool) -> dict[str, Any]:
    daily = {"date_histogram": {"field": "timestamp", **histogram}}
    types = {"terms": term}
    if nest:
        return {
            "types": {**types, "aggs": {"daily": daily}},
            "daily": {**daily, "aggs": {"types": types}},
        }
    return {"types": types, "daily": daily}


def scenario(
    store: Store,
    stored: list[dict[str, Any]],
    doomed_entity: str,
    retention_cutoff_days: int,
    documents: list[dict[str, Any]],
    domain: str,
) -> list[tuple[Any, Any]]:
    tenant = uuid.uuid4().hex
    store.keys.create_tenant(tenant, tenant)
    writer = Principal(tenant, "k", "writer", Role.ADMIN)
    reader = Principal(tenant, "k", "reader", Role.READ, domain)
    jobs = JobRepository(store)
    runner = JobRunner(jobs, EventManager(store.events), parse_job_item, RunnerSettings())

    async def go() -> list[tuple[Any, Any]]:
        for e in stored:
            await store.events.insert(
                Event(id=str(uuid.uuid4()), tenant_id=tenant, update_time=e["create_time"], **e)
            )
        # A delete job of one entity's events, then retention of one type.
        await JobManager(jobs).submit_delete(writer, {"entityId": doomed_entity})
        while await runner.run_one():
            pass
        cutoff = (BASE_MS + retention_cutoff_days * DAY_MS) * 1000
        await RetentionRepository(store).delete_stored_before("RULE", cutoff, 1000)
        answers = []
        for document in documents:
            request = parse_find_request(document)
            assert qualifies(request) is not None, document
            fast, raw = [
                await store.read(
                    functools.partial(run_find, reader, request, store.postgres, rollups=r)
                )
                for r in (True, False)
            ]
            answers.append((answer_document(request, fast, 0), answer_document(request, raw, 0)))
        return answers

    return asyncio.run(go())


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    stored=st.lists(events(), max_size=25),
    doomed=st.sampled_from(["e1", "e2", "nobody"]),
    cutoff=st.integers(0, 10),
    query=queries,
    histogram=histograms,
    term=terms,
    nest=st.booleans(),
    domain=st.sampled_from(DOMAINS),
)
def test_rollup_answers_equal_the_raw_aggregation_after_deletes(
    store: Store,
    stored: list[dict[str, Any]],
    doomed: str,
    cutoff: int,
    query: dict[str, Any],
    histogram: dict[str, Any],
    term: dict[str, Any],
    nest: bool,
    domain: str,
) -> None:
    document = {"query": query, "size": 3, "aggs": aggregations(histogram, term, nest)}
    for fast, raw in scenario(store, stored, doomed, cutoff, [document], domain):
        assert fast == raw


def test_rollups_count_exactly_what_the_table_holds(store: Store) -> None:
    """The rollup table itself after inserts and deletes: one row per tenant, domain, type and
    UTC day, holding that many events, and no row for a day whose events are all gone."""
    stored = [
        {**e, "entity_id": f"e{n % 3 + 1}"}
        for n, e in enumerate(
            {
                "domain": DOMAINS[n % 2],
                "type_id": TYPES[n % 3],
                "timestamp": (BASE_MS + (n % 5) * DAY_MS + n) * 1000,
                "create_time": BASE_MS * 1000,
                "entity_id": "",
                "severity": 1,
            }
            for n in range(30)
        )
    ]
    scenario(store, stored, "e1", 0, [], "/")

    def read(db: Any) -> tuple[list[Any], list[Any]]:
        rollups = db.execute_sql(
            "SELECT domain, type_id, day_us, event_count FROM event_rollups ORDER BY 1, 2, 3"
        ).fetchall()
        day = day_sql("ts", store.postgres)
        raw = db.execute_sql(
            f"SELECT domain, type_id, {day}, COUNT(*) FROM events "
            f"GROUP BY domain, type_id, {day} ORDER BY 1, 2, 3"
        ).fetchall()
        return [tuple(r) for r in rollups], [tuple(r) for r in raw]

    rollups, raw = asyncio.run(store.read(read))
    assert rollups == raw
    # 30 events on 2 domains x 3 types x 5 days; the job deleted entity e1's (all RULE) and
    # recorded its own audit event.
    assert len([r for r in raw if r[1] in TYPES]) == 20
