"""Alarm de-duplication: a repeated ALARM of an open alarm's tenant, domain, entity, type and
code counts into it instead of storing a new event; on both backends, through the store's
group-commit writer, through Envoy and gRPC, and raced from two replicas on one database."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from helpers import auth, rows, run, violations
from persistence.event_types import RetentionRepository
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.event_types import DEFAULT_TTL_DAYS
from service.domain.events import Event, EventManager, EventQuery, now_us
from service.domain.retention import DAY_US, RetentionSweeper
from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from service.v1 import event_stream_service_pb2 as stream_pb
from service.v1 import event_stream_service_pb2_grpc as stream_grpc

if TYPE_CHECKING:
    from helpers import Keys, Replicas, Service

T0 = 1_700_000_000_000_000


def principal(tenant: str = "acme", domain: str = "/") -> Principal:
    return Principal(tenant_id=tenant, key_id="k1", name="tester", role=Role.ADMIN, domain=domain)


def alarm(entity: str, **fields: Any) -> dict[str, Any]:
    return {
        "classification": "ALARM",
        "entity_type": "Device",
        "entity_id": entity,
        "code": "10042",
        "description": "pump overheating",
        "timestamp": T0,
        **fields,
    }


@pytest.fixture
def batch_sizes(store: Store) -> Iterator[list[int]]:
    """Instrumentation, not a mock: records the size of every batch the real writer commits."""
    sizes: list[int] = []
    commit = store.writer._commit

    def recording_commit(operations: list[Any]) -> list[Any]:
        sizes.append(len(operations))
        return commit(operations)

    store.writer._commit = recording_commit  # type: ignore[method-assign]
    yield sizes


def stored(store: Store, event_id: str) -> Event:
    found = run(store.events.get(principal(), event_id))
    assert found is not None
    return found


# --- the store ------------------------------------------------------------------------------


def test_a_repeated_alarm_counts_into_the_open_one(store: Store) -> None:
    manager = EventManager(store.events)
    first = run(manager.record(principal(), alarm("pump-1")))
    again = run(manager.record(principal(), alarm("pump-1", timestamp=T0 + 5_000_000)))
    earlier = run(manager.record(principal(), alarm("pump-1", timestamp=T0 - 5_000_000)))

    assert not first.deduplicated
    assert (first.event.count, first.event.etag) == (1, 1)
    assert first.event.first_occurrence_time == first.event.last_occurrence_time == T0
    assert again.deduplicated and again.event.id == first.event.id
    assert (again.event.count, again.event.etag) == (2, 2)
    assert again.event.last_occurrence_time == T0 + 5_000_000
    # An occurrence reported with an earlier time never moves the last one back.
    assert (earlier.event.count, earlier.event.last_occurrence_time) == (3, T0 + 5_000_000)
    assert earlier.event.first_occurrence_time == T0
    assert stored(store, first.event.id) == earlier.event
    _, total = run(store.events.query(principal(), EventQuery()))
    assert total == 1


def test_only_the_same_domain_entity_type_and_code_fold(store: Store) -> None:
    manager = EventManager(store.events)
    base = run(manager.record(principal(), alarm("pump-1"))).event
    others = [
        alarm("pump-2"),
        alarm("pump-1", code="10043"),
        alarm("pump-1", entity_type="Asset"),
        alarm("pump-1", domain="/root/sub1"),
        alarm("pump-1", classification="WARNING"),
    ]
    created = [run(manager.record(principal(), fields)) for fields in others]
    assert not any(c.deduplicated for c in created)
    assert len({c.event.id for c in created} | {base.id}) == 6
    assert stored(store, base.id).count == 1
    warning = created[-1].event
    assert (warning.count, warning.first_occurrence_time, warning.last_occurrence_time) == (
        None,
        None,
        None,
    )
    other_tenant = run(manager.record(principal("globex"), alarm("pump-1")))
    assert not other_tenant.deduplicated


def test_identical_concurrent_creates_in_one_batch_end_as_one_alarm(
    store: Store, batch_sizes: list[int]
) -> None:
    manager = EventManager(store.events)

    async def together() -> list[Any]:
        return await asyncio.gather(
            *(manager.record(principal(), alarm("pump-9", timestamp=T0 + i)) for i in range(200))
        )

    created = run(together())
    assert max(batch_sizes) > 1, "the creates were meant to share batches"
    ids = {c.event.id for c in created}
    assert len(ids) == 1
    assert sum(not c.deduplicated for c in created) == 1
    # Each answer is the alarm right after its own occurrence: counts 1 to 200, once each.
    assert sorted(c.event.count for c in created) == list(range(1, 201))
    final = stored(store, ids.pop())
    assert (final.count, final.last_occurrence_time, final.first_occurrence_time) == (
        200,
        T0 + 199,
        T0,
    )
    assert final.etag == 200
    assert rows(store, "SELECT COUNT(*) FROM open_alarms") == [(1,)]


def test_a_failing_write_costs_no_fold_of_its_batch(store: Store, batch_sizes: list[int]) -> None:
    manager = EventManager(store.events)
    first = run(manager.record(principal(), alarm("pump-3"))).event
    batch_sizes.clear()
    hostile = dataclasses.replace(
        run(manager.prepare(principal(), alarm("other"))), description="a \ud800 b"
    )

    async def together() -> list[Any]:
        folds = [manager.record(principal(), alarm("pump-3")) for _ in range(10)]
        folds.insert(5, store.events.insert(hostile))
        return await asyncio.gather(*folds, return_exceptions=True)

    results = run(together())
    assert isinstance(results.pop(5), UnicodeEncodeError)
    assert max(batch_sizes) > 1
    assert all(r.deduplicated and r.event.id == first.id for r in results)
    assert stored(store, first.id).count == 11


def test_an_alarm_that_is_gone_leaves_its_key_to_the_next_one(store: Store) -> None:
    manager = EventManager(store.events)
    first = run(manager.record(principal(), alarm("pump-4"))).event
    store.run_sync(
        lambda db: db.execute_sql(f"DELETE FROM events WHERE id = {db.param}", (first.id,))
    )
    after = run(manager.record(principal(), alarm("pump-4")))
    assert not after.deduplicated and after.event.id != first.id
    again = run(manager.record(principal(), alarm("pump-4")))
    assert again.deduplicated and again.event.id == after.event.id and again.event.count == 2


def test_an_alarm_changed_to_another_code_no_longer_absorbs_its_old_key(store: Store) -> None:
    manager = EventManager(store.events)
    first = run(manager.record(principal(), alarm("pump-5"))).event
    run(manager.update(principal(), first.id, {"code": "10099"}, None))
    after = run(manager.record(principal(), alarm("pump-5")))
    assert not after.deduplicated
    assert stored(store, first.id).count == 1


def test_streamed_batches_fold_and_keep_their_idempotency_keys(store: Store) -> None:
    from service.domain.events import Draft

    manager = EventManager(store.events)
    drafts = [Draft(alarm("pump-6"), f"k{i}") for i in range(3)]
    outcomes = run(manager.create_many(principal(), drafts))
    assert [o.deduplicated for o in outcomes] == [False, True, True]
    alarm_id = outcomes[0].event.id  # type: ignore[union-attr]
    assert [o.event.count for o in outcomes] == [1, 2, 3]  # type: ignore[union-attr]
    # A resend answers as the first time did (the alarm's id) and counts nothing again.
    resent = run(manager.create_many(principal(), drafts))
    assert [o.duplicate_of for o in resent] == [alarm_id] * 3
    assert stored(store, alarm_id).count == 3


def test_a_deleted_alarm_frees_the_idempotency_keys_of_the_creates_it_counted(
    store: Store,
) -> None:
    from service.domain.events import Draft

    manager = EventManager(store.events)
    drafts = [Draft(alarm("pump-8"), f"k8-{i}") for i in range(3)]
    alarm_id = run(manager.create_many(principal(), drafts))[0].event.id  # type: ignore[union-attr]
    later = now_us() + (DEFAULT_TTL_DAYS + 1) * DAY_US

    assert run(RetentionSweeper(RetentionRepository(store)).sweep(later)) == 1

    assert rows(store, "SELECT COUNT(*) FROM event_idempotency_keys") == [(0,)]
    # A resend is stored anew: none of its keys names the deleted alarm any more.
    again = run(manager.create_many(principal(), drafts))
    assert [o.duplicate_of for o in again] == [None] * 3
    assert again[0].event.id != alarm_id  # type: ignore[union-attr]
    assert [o.event.count for o in again] == [1, 2, 3]  # type: ignore[union-attr]


def test_migration_35_counts_stored_alarms_and_opens_the_newest_of_each_key(
    store: Store,
) -> None:
    manager = EventManager(store.events)
    older = run(manager.prepare(principal(), alarm("pump-7")))
    newer = run(manager.prepare(principal(), alarm("pump-7", timestamp=T0 + 1)))
    note = run(manager.prepare(principal(), {**alarm("pump-7"), "classification": "WARNING"}))
    for e in (older, newer, note):  # stored side by side, as before de-duplication existed
        run(store.events.insert(e))

    def undo_35(db: Any) -> None:
        db.execute_sql("DROP TABLE open_alarms")
        for column in ("occurrence_count", "first_occurrence", "last_occurrence"):
            db.execute_sql(f"ALTER TABLE events DROP COLUMN {column}")
        db.execute_sql("DELETE FROM schema_migrations WHERE version = 35")

    store.run_sync(undo_35)
    assert store.migrate() == [35]
    assert (stored(store, older.id).count, stored(store, older.id).last_occurrence_time) == (1, T0)
    assert stored(store, note.id).count is None
    folded = run(manager.record(principal(), alarm("pump-7")))
    assert folded.deduplicated and folded.event.id == newer.id and folded.event.count == 2


# --- through Envoy and gRPC -------------------------------------------------------------------


def rest_alarm(entity: str, **fields: Any) -> dict[str, Any]:
    return {
        "classification": "ALARM",
        "entityType": "Device",
        "entityId": entity,
        "code": "10042",
        "description": "pump overheating",
        **fields,
    }


@pytest.mark.integration
def test_rest_answers_201_with_count_1_then_200_with_the_counted_alarm(
    service: Service, keys: Keys
) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    first = service.request(
        "POST", "/events", rest_alarm(entity, timestamp="2026-11-30T10:00:00Z"), key=keys.writer
    )
    assert first.status == 201, first.body
    body = first.json()
    assert (body["count"], body["etag"]) == (1, 1)
    assert body["firstOccurrenceTime"] == body["lastOccurrenceTime"] == "2026-11-30T10:00:00.000Z"

    again = service.request(
        "POST", "/events", rest_alarm(entity, timestamp="2026-11-30T10:05:00Z"), key=keys.writer
    )
    assert again.status == 200, again.body
    folded = again.json()
    assert folded["id"] == body["id"]
    assert (folded["count"], folded["etag"]) == (2, 2)
    assert again.headers["etag"] in ('"2"', "2", 'W/"2"')
    assert folded["firstOccurrenceTime"] == "2026-11-30T10:00:00.000Z"
    assert folded["lastOccurrenceTime"] == "2026-11-30T10:05:00.000Z"
    assert folded["timestamp"] == "2026-11-30T10:00:00.000Z"

    read = service.request("GET", f"/events/{body['id']}", key=keys.read).json()
    assert read == folded
    # Other events carry no occurrence fields, and each create stores one.
    note = service.request("POST", "/events", {"entityId": entity}, key=keys.writer)
    assert note.status == 201
    assert not {"count", "firstOccurrenceTime", "lastOccurrenceTime"} & set(note.json())


@pytest.mark.integration
def test_a_key_of_another_domain_opens_its_own_alarm(service: Service, keys: Keys) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    root = service.request("POST", "/events", rest_alarm(entity), key=keys.writer).json()
    sub1 = service.request("POST", "/events", rest_alarm(entity), key=keys.sub1_writer)
    assert sub1.status == 201, sub1.body
    assert sub1.json()["id"] != root["id"] and sub1.json()["domain"] == "/root/sub1"


@pytest.mark.integration
def test_grpc_create_says_deduplicated(channel: grpc.Channel, keys: Keys) -> None:
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    draft = event_pb2.Event(
        entity_type="Device",
        entity_id=f"pump-{uuid.uuid4().hex[:8]}",
        code="10042",
        classification=event_pb2.CLASSIFICATION_ALARM,
    )
    request = event_service_pb2.CreateEventRequest(event=draft)
    first = stub.CreateEvent(request, metadata=auth(keys.writer))
    second = stub.CreateEvent(request, metadata=auth(keys.writer))
    assert not first.deduplicated and first.event.count == 1
    assert second.deduplicated and second.event.id == first.event.id
    assert second.event.count == 2 and second.event.etag == 2
    assert second.event.first_occurrence_time == first.event.first_occurrence_time


@pytest.mark.integration
def test_streamed_ingest_folds_and_says_so(channel: grpc.Channel, keys: Keys) -> None:
    stub = stream_grpc.EventStreamServiceStub(channel)
    draft = event_pb2.Event(
        entity_id=f"pump-{uuid.uuid4().hex[:8]}",
        code="10042",
        classification=event_pb2.CLASSIFICATION_ALARM,
    )
    items = [stream_pb.IngestItem(idempotency_key=uuid.uuid4().hex, event=draft) for _ in range(3)]

    def send(batch: list[stream_pb.IngestItem]) -> list[stream_pb.IngestResult]:
        answers = stub.IngestEvents(
            iter([stream_pb.IngestEventsRequest(items=batch)]), metadata=auth(keys.writer)
        )
        return [r for answer in answers for r in answer.results]

    results = send(items)
    assert [r.deduplicated for r in results] == [False, True, True]
    assert len({r.id for r in results}) == 1
    resent = send(items)
    assert all(r.duplicate and r.id == results[0].id for r in resent)
    read = event_service_pb2_grpc.EventServiceStub(channel).GetEvent(
        event_service_pb2.GetEventRequest(id=results[0].id), metadata=auth(keys.read)
    )
    assert read.event.count == 3


def race(channels: list[grpc.Channel], key: str, entity: str, n: int) -> list[Any]:
    """n identical alarm creates at once, spread over the channels."""
    stubs = [event_service_pb2_grpc.EventServiceStub(c) for c in channels]
    request = event_service_pb2.CreateEventRequest(
        event=event_pb2.Event(
            entity_type="Device",
            entity_id=entity,
            code="10042",
            classification=event_pb2.CLASSIFICATION_ALARM,
        )
    )
    futures = [
        stubs[i % len(stubs)].CreateEvent.future(request, metadata=auth(key)) for i in range(n)
    ]
    return [f.result(timeout=60) for f in futures]


@pytest.mark.integration
def test_concurrent_identical_creates_end_as_one_alarm(
    service: Service, channel: grpc.Channel, keys: Keys
) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    answers = race([channel], keys.writer, entity, 100)
    assert len({a.event.id for a in answers}) == 1
    assert sum(not a.deduplicated for a in answers) == 1
    assert sorted(a.event.count for a in answers) == list(range(1, 101))
    # And through Envoy, concurrently with those of gRPC.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda _: (
                    service.request("POST", "/events", rest_alarm(entity), key=keys.writer).status
                ),
                range(40),
            )
        )
    assert statuses == [200] * 40
    listed = service.request(
        "GET", f"/events?filter=%7B%22entityId%22%3A%22{entity}%22%7D", key=keys.read
    ).json()
    events = listed["_embedded"]["events"]
    assert len(events) == 1 and events[0]["count"] == 140


@pytest.mark.integration
def test_identical_creates_on_two_replicas_end_as_one_alarm(
    replicas: Any,
) -> None:
    running: Replicas = replicas()
    key = running.create_key("acme", "ReadWrite")
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    answers = race(running.channels, key, entity, 200)
    assert len({a.event.id for a in answers}) == 1
    assert sum(not a.deduplicated for a in answers) == 1
    assert sorted(a.event.count for a in answers) == list(range(1, 201))
    for channel in running.channels:  # each replica reads the one alarm with every count
        read = event_service_pb2_grpc.EventServiceStub(channel).GetEvent(
            event_service_pb2.GetEventRequest(id=answers[0].event.id), metadata=auth(key)
        )
        assert read.event.count == 200


@pytest.mark.integration
def test_counts_and_occurrence_times_filter_sort_and_aggregate(
    service: Service, keys: Keys
) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    counts = {"10001": 3, "10002": 1, "10003": 2}
    for code, n in counts.items():
        for i in range(n):
            at = f"2026-11-30T10:0{i}:00Z"
            fields = rest_alarm(entity, code=code, timestamp=at)
            assert service.request("POST", "/events", fields, key=keys.writer).status in (200, 201)
    note = {"entityId": entity, "code": "10004", "timestamp": "2026-11-30T11:00:00Z"}
    assert service.request("POST", "/events", note, key=keys.writer).status == 201

    def listed(query: str) -> list[tuple[str, int | None]]:
        answer = service.request("GET", f"/events?{query}", key=keys.read)
        assert answer.status == 200, answer.body
        return [(e["code"], e.get("count")) for e in answer.json()["_embedded"]["events"]]

    from urllib.parse import quote

    def where(extra: str) -> str:
        return quote(f'{{"entityId": "{entity}"{extra}}}')

    repeated = where(', "count": {"after": 1}')
    assert listed(f"filter={repeated}&sort=count,desc") == [
        ("10001", 3),
        ("10003", 2),
    ]
    # Sorting puts events without a count below every alarm, on every page of a cursor.
    ascending = [("10004", None), ("10002", 1), ("10003", 2), ("10001", 3)]
    assert listed(f"filter={where('')}&sort=count,asc") == ascending
    seen: list[tuple[str, int | None]] = []
    query = f"filter={where('')}&sort=count,asc&size=1"
    page = service.request("GET", f"/events?{query}", key=keys.read).json()
    while True:
        seen += [(e["code"], e.get("count")) for e in page["_embedded"]["events"]]
        following = page["_links"].get("next")
        if not following:
            break
        page = service.request(
            "GET", following["href"].split(service.rest_url, 1)[-1], key=keys.read
        ).json()
    assert seen == ascending
    last = where(', "lastOccurrenceTime": {"after": "2026-11-30T10:01:30Z"}')
    assert listed(f"filter={last}") == [("10001", 3)]

    body = {
        "query": {
            "bool": {
                "filter": [
                    {"term": {"entityId": entity}},
                    {"range": {"count": {"gte": 2}}},
                ]
            }
        },
        "sort": [{"lastOccurrenceTime": {"order": "desc"}}],
        "aggs": {
            "occurrences": {"sum": {"field": "count"}},
            "latest": {"max": {"field": "lastOccurrenceTime"}},
        },
    }
    found = service.request("POST", "/events/find", body, key=keys.read)
    assert found.status == 200, found.body
    answer = found.json()
    assert [h["_source"]["code"] for h in answer["hits"]["hits"]] == ["10001", "10003"]
    assert answer["aggregations"]["occurrences"]["value"] == 5
    assert answer["aggregations"]["latest"]["value_as_string"].startswith("2026-11-30T10:02:00")


@pytest.mark.integration
def test_an_event_type_can_turn_de_duplication_off(service: Service, keys: Keys) -> None:
    created = service.request(
        "POST",
        "/eventTypes",
        {"name": "raw alarms", "id": f"raw-{uuid.uuid4().hex[:8]}", "deduplicateAlarms": False},
        key=keys.writer,
    )
    assert created.status == 201, created.body
    kind = created.json()
    assert kind["deduplicateAlarms"] is False
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    answers = [
        service.request("POST", "/events", rest_alarm(entity, typeId=kind["id"]), key=keys.writer)
        for _ in range(2)
    ]
    assert [a.status for a in answers] == [201, 201]
    assert answers[0].json()["id"] != answers[1].json()["id"]
    assert [a.json()["count"] for a in answers] == [1, 1]

    # Merge patch turns it on again; a type that does not say keeps it on.
    patched = service.request(
        "PATCH",
        f"/eventTypes/{kind['id']}",
        {"deduplicateAlarms": True},
        key=keys.writer,
        headers={"Content-Type": "application/merge-patch+json", "If-Match": str(kind["etag"])},
    )
    assert patched.status == 200, patched.body
    assert patched.json()["deduplicateAlarms"] is True
    third = service.request(
        "POST", "/events", rest_alarm(entity, typeId=kind["id"]), key=keys.writer
    )
    fourth = service.request(
        "POST", "/events", rest_alarm(entity, typeId=kind["id"]), key=keys.writer
    )
    # Alarms stored while it was off hold no key: the next one opens it.
    assert (third.status, fourth.status) == (201, 200)
    assert fourth.json()["id"] == third.json()["id"] and fourth.json()["count"] == 2
    plain = service.request("POST", "/eventTypes", {"name": "plain"}, key=keys.writer).json()
    assert plain["deduplicateAlarms"] is True


@pytest.mark.integration
def test_create_jobs_fold_alarms_and_answer_200_for_them(service: Service, keys: Keys) -> None:
    from test_jobs import submit, wait_for_job

    entity = f"pump-{uuid.uuid4().hex[:8]}"
    events = [rest_alarm(entity), rest_alarm(entity), {"entityId": entity}, rest_alarm(entity)]
    path, _ = submit(service, "createEventsJobs", {"events": events}, keys.writer)
    status = wait_for_job(service, path, keys.read)
    assert status["state"] == "FINISHED"
    results = status["details"]["resultDescription"]
    assert [r["resultCode"] for r in results] == ["201", "200", "201", "200"]
    alarm_id = results[0]["event"]["id"]
    assert results[1]["event"]["id"] == results[3]["event"]["id"] == alarm_id
    read = service.request("GET", f"/events/{alarm_id}", key=keys.read).json()
    assert read["count"] == 3
    # A later single create counts into the job's alarm too.
    again = service.request("POST", "/events", rest_alarm(entity), key=keys.writer)
    assert again.status == 200 and again.json()["count"] == 4


@pytest.mark.integration
def test_deleting_an_alarm_closes_its_window(service: Service, keys: Keys) -> None:
    from test_jobs import submit, wait_for_job

    entity = f"pump-{uuid.uuid4().hex[:8]}"
    first = service.request("POST", "/events", rest_alarm(entity), key=keys.writer).json()
    path, _ = submit(service, "deleteEventsJobs", {"filter": {"entityId": entity}}, keys.writer)
    assert wait_for_job(service, path, keys.read)["state"] == "FINISHED"
    after = service.request("POST", "/events", rest_alarm(entity), key=keys.writer)
    assert after.status == 201 and after.json()["id"] != first["id"]
    assert after.json()["count"] == 1


def test_retention_forgets_the_keys_of_the_alarms_it_deletes(store: Store) -> None:
    from persistence.event_types import RetentionRepository

    manager = EventManager(store.events)
    first = run(manager.record(principal(), alarm("pump-8"))).event
    note = run(manager.record(principal(), {"entity_id": "pump-8"})).event
    assert rows(store, "SELECT event_id FROM open_alarms") == [(first.id,)]
    deleted = run(
        RetentionRepository(store).delete_stored_before(first.type_id, note.create_time + 1, 10)
    )
    assert deleted == 2
    assert rows(store, "SELECT COUNT(*) FROM open_alarms") == [(0,)]
    after = run(manager.record(principal(), alarm("pump-8")))
    assert not after.deduplicated and after.event.count == 1


# --- storm control ----------------------------------------------------------------------------


class Clock:
    """The time a storm control reads: set by the test, so windows end when it says."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def storm_control(store: Store, clock: Clock, rules: str) -> Any:
    from persistence.rate_counters import SharedRateCounters
    from persistence.storms import StormRepository
    from service.domain.rate_limits import WindowCounter
    from service.domain.storms import StormControl, parse_storm_rules

    counter = WindowCounter(SharedRateCounters(store).reserve, clock)
    return StormControl(parse_storm_rules(rules), counter, StormRepository(store), clock)


def storm_events(store: Store) -> list[Event]:
    page, _ = run(
        store.events.query(principal(), EventQuery(limit=100, condition=_code_in("1110", "1111")))
    )
    return sorted(page, key=lambda e: e.seq)


def _code_in(*codes: str) -> Any:
    from service.domain.conditions import Compare, FieldRef

    return Compare(FieldRef("code", "string"), "in", codes)


def test_beyond_the_storm_rate_alarms_are_counted_and_the_rest_refused(store: Store) -> None:
    from service.domain.errors import ResourceExhausted

    clock = Clock()
    storms = storm_control(store, clock, "entity=3/1m")
    manager = EventManager(store.events, storms=storms)
    writer = principal()
    first = run(manager.record(writer, alarm("pump-s")))
    run(manager.record(writer, alarm("pump-s")))
    run(manager.record(writer, {"entity_type": "Device", "entity_id": "pump-s"}))
    assert storm_events(store) == []

    beyond = run(manager.record(writer, alarm("pump-s")))
    assert beyond.deduplicated and beyond.event.id == first.event.id and beyond.event.count == 3
    for refused in (
        {"entity_type": "Device", "entity_id": "pump-s"},  # not an alarm
        alarm("pump-s", code="10077"),  # an alarm with no open alarm of its key
    ):
        with pytest.raises(ResourceExhausted) as raised:
            run(manager.record(writer, refused))
        assert raised.value.reason == "ALARM_STORM"
        assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 60
    # Another entity is not in the storm.
    assert not run(manager.record(writer, alarm("pump-t"))).deduplicated
    started = storm_events(store)
    assert [e.code for e in started] == ["1110"]
    assert started[0].internal and started[0].entity_id == "pump-s"
    assert started[0].source["limit"] == "entity=3/1m"

    run(storms.sweep())  # still inside the window over the rate: the storm goes on
    assert [e.code for e in storm_events(store)] == ["1110"]
    clock.now += 60  # a window within the rate (nothing happened in it) ...
    run(storms.sweep())
    assert [e.code for e in storm_events(store)] == ["1110"]
    clock.now += 60  # ... has passed: the storm ended
    run(storms.sweep())
    ended = storm_events(store)[-1]
    assert ended.code == "1111"
    assert (ended.source["folded"], ended.source["refused"]) == (1, 2)
    assert rows(store, "SELECT COUNT(*) FROM alarm_storms") == [(0,)]
    after = run(manager.record(writer, {"entity_type": "Device", "entity_id": "pump-s"}))
    assert not after.deduplicated


def test_a_storm_starts_once_for_every_process_that_sees_it(store: Store) -> None:
    from service.domain.errors import ResourceExhausted

    clock = Clock()
    processes = [storm_control(store, clock, "tenant=2/1m") for _ in range(2)]
    managers = [EventManager(store.events, storms=s) for s in processes]
    notes = [{"entity_id": f"e{i}"} for i in range(8)]
    refused = 0
    for index, fields in enumerate(notes):
        try:
            run(managers[index % 2].record(principal(), fields))
        except ResourceExhausted:
            refused += 1
    stored = run(store.events.query(principal(), EventQuery(limit=100)))[1]
    # Nothing dropped: every create was either stored or refused.
    assert stored - len(storm_events(store)) + refused == len(notes)
    assert [e.code for e in storm_events(store)] == ["1110"]
    assert storm_events(store)[0].entity_type == "Tenant"
    for storms in processes:
        run(storms.sweep())
    clock.now += 120
    run(processes[0].sweep())
    run(processes[1].sweep())
    ended = [e for e in storm_events(store) if e.code == "1111"]
    assert len(ended) == 1 and ended[0].source["refused"] == refused


def test_streamed_ingest_in_a_storm_counts_alarms_and_refuses_the_rest(store: Store) -> None:
    from service.domain.events import Draft

    clock = Clock()
    manager = EventManager(store.events, storms=storm_control(store, clock, "entity=2/1m"))
    drafts = [
        Draft(alarm("pump-u")),
        Draft(alarm("pump-u")),
        Draft(alarm("pump-u")),
        Draft({"entity_type": "Device", "entity_id": "pump-u"}),
        Draft(alarm("pump-u", code="10099")),
    ]
    outcomes = run(manager.create_many(principal(), drafts))
    assert [o.deduplicated for o in outcomes[:3]] == [False, True, True]
    assert outcomes[2].event is not None and outcomes[2].event.count == 3
    assert [o.error.reason if o.error else None for o in outcomes[3:]] == [
        "ALARM_STORM",
        "ALARM_STORM",
    ]


def test_storm_rules_parse_or_are_refused_naming_the_setting() -> None:
    from service.domain.errors import InvalidInput
    from service.domain.storms import StormPer, parse_storm_rules

    rules = parse_storm_rules("tenant=1000/1m, entity=60/10s")
    assert [(r.per, r.limit, r.window_s) for r in rules] == [
        (StormPer.ENTITY, 60, 10),
        (StormPer.TENANT, 1000, 60),
    ]
    assert [str(r) for r in rules] == ["entity=60/10s", "tenant=1000/1m"]
    assert parse_storm_rules("none") == ()
    for bad in ("entity=0/1m", "device=5/1m", "entity=5/2d", "entity=5"):
        with pytest.raises(InvalidInput) as raised:
            parse_storm_rules(bad)
        assert raised.value.violations[0].field == "alarm-storms"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stormy(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: Any,
) -> Iterator[Service]:
    """A server with storm control of 4 creates per entity and type an hour."""
    from helpers import Service

    data_dir = tmp_path_factory.mktemp(f"stormy-{request.param}")
    url = (
        f"sqlite:///{data_dir / 'events.db'}"
        if request.param == "sqlite"
        else str(postgres_databases())
    )
    running = Service(url, data_dir, env={"EVENTMGMT_ALARM_STORMS": "entity=4/1h"})
    running.start()
    yield running
    running.stop()


@pytest.mark.integration
def test_a_storm_counts_alarms_and_refuses_other_creates_on_every_path(stormy: Service) -> None:
    from google.rpc import code_pb2, error_details_pb2
    from grpc_status import rpc_status

    from helpers import error_reason

    tenant = f"t{uuid.uuid4().hex[:10]}"
    key = stormy.create_key(tenant, "Admin")
    entity = "dev-1"
    note = {"entityType": "Device", "entityId": entity, "description": "reading"}
    assert stormy.request("POST", "/events", rest_alarm(entity), key=key).status == 201
    assert stormy.request("POST", "/events", rest_alarm(entity), key=key).status == 200
    for _ in range(2):
        assert stormy.request("POST", "/events", note, key=key).status == 201
    # Beyond 4 an hour: the alarm is counted, anything else refused with when to retry.
    counted = stormy.request("POST", "/events", rest_alarm(entity), key=key)
    assert counted.status == 200 and counted.json()["count"] == 3
    refused = stormy.request("POST", "/events", note, key=key)
    assert refused.status == 429, refused.body
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert error_reason(refused) == "ALARM_STORM"
    new_code = stormy.request("POST", "/events", rest_alarm(entity, code="10077"), key=key)
    assert new_code.status == 429

    with grpc.insecure_channel(stormy.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateEvent(
                event_service_pb2.CreateEventRequest(
                    event=event_pb2.Event(entity_type="Device", entity_id=entity)
                ),
                metadata=auth(key),
            )
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(raised.value)  # type: ignore[arg-type]
        assert status is not None and status.code == code_pb2.RESOURCE_EXHAUSTED
        delays = []
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delays.append(info.retry_delay.ToMilliseconds())
        assert delays and 0 < delays[0] <= 3_600_000

        listed = stub.ListEvents(
            event_service_pb2.ListEventsRequest(
                code="1110", total_size_mode=event_service_pb2.TOTAL_SIZE_MODE_EXACT
            ),
            metadata=auth(key),
        )
        assert listed.total_size == 1
        started = listed.events[0]
        assert started.internal and started.entity_id == entity
        assert "alarm storm started" in started.description

    # The device path (docs/device-api.md) answers its own 429 with Retry-After.
    stormy.cli("admin", "create-device", entity, "--tenant", tenant)
    stormy.cli("admin", "create-app", "APP-1", "--tenant", tenant)
    device_path = f"/rest/v1/api/tenants/{tenant}/devices/{entity}/events"
    answers = [
        stormy.request(
            "POST",
            device_path,
            {
                "typeId": "0045",
                "description": "reading",
                "appId": "APP-1",
                "severity": 3,
                "data": {"n": 1},
                "timestamp": 1532844569743 + n,
            },
            key=key,
        )
        for n in range(5)
    ]
    assert [a.status for a in answers[:4]] == [201] * 4, answers[0].body
    assert answers[-1].status == 429, answers[-1].body
    assert "retry-after" in answers[-1].headers
    assert answers[-1].json()["error"] == -1


# --- clearing closes the window ---------------------------------------------------------------


def test_clearing_closes_the_window_and_acknowledging_does_not(store: Store) -> None:
    manager = EventManager(store.events)
    first = run(manager.record(principal(), alarm("pump-c"))).event
    run(manager.acknowledge(principal(), first.id))
    acknowledged = run(manager.record(principal(), alarm("pump-c")))
    assert acknowledged.deduplicated and acknowledged.event.count == 2
    assert acknowledged.event.status == "ACKNOWLEDGED"
    run(manager.clear(principal(), first.id))
    assert rows(store, "SELECT COUNT(*) FROM open_alarms") == [(0,)]
    after = run(manager.record(principal(), alarm("pump-c")))
    assert not after.deduplicated and after.event.id != first.id
    assert (after.event.count, after.event.status) == (1, "ACTIVE")
    assert stored(store, first.id).count == 2
    again = run(manager.record(principal(), alarm("pump-c")))
    assert again.deduplicated and again.event.id == after.event.id


def test_alarms_deleted_by_retention_leave_neither_windows_nor_transitions(store: Store) -> None:
    manager = EventManager(store.events)
    first = run(manager.record(principal(), alarm("pump-r"))).event
    second = run(manager.record(principal(), alarm("pump-k"))).event
    for event in (first, second):
        run(manager.acknowledge(principal(), event.id))
    assert len(rows(store, "SELECT event_id FROM event_transitions")) == 2
    assert len(rows(store, "SELECT event_id FROM open_alarms")) == 2
    later = now_us() + (DEFAULT_TTL_DAYS + 1) * DAY_US  # both were stored longer ago than that

    assert run(RetentionSweeper(RetentionRepository(store)).sweep(later)) == 2

    assert rows(store, "SELECT event_id FROM open_alarms") == []
    assert rows(store, "SELECT event_id FROM event_transitions") == []
    # The keys are free: the next occurrence is a new alarm.
    again = run(manager.record(principal(), alarm("pump-r")))
    assert not again.deduplicated and again.event.id != first.id


@pytest.mark.integration
def test_after_a_clear_the_next_occurrence_is_a_new_alarm(service: Service, keys: Keys) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    first = service.request("POST", "/events", rest_alarm(entity), key=keys.writer).json()
    assert service.request("POST", "/events", rest_alarm(entity), key=keys.writer).status == 200
    cleared = service.request("POST", f"/events/{first['id']}/clear", key=keys.writer)
    assert cleared.status == 200, cleared.body
    assert cleared.json()["status"] == "CLEARED" and cleared.json()["count"] == 2
    after = service.request("POST", "/events", rest_alarm(entity), key=keys.writer)
    assert after.status == 201, after.body
    assert after.json()["id"] != first["id"] and after.json()["count"] == 1
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        answer = stub.CreateEvent(
            event_service_pb2.CreateEventRequest(
                event=event_pb2.Event(
                    entity_type="Device",
                    entity_id=entity,
                    code="10042",
                    classification=event_pb2.CLASSIFICATION_ALARM,
                )
            ),
            metadata=auth(keys.writer),
        )
        assert answer.deduplicated and answer.event.id == after.json()["id"]


@pytest.mark.integration
def test_an_alarm_read_and_sent_back_updates(service: Service, keys: Keys) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    service.request("POST", "/events", rest_alarm(entity), key=keys.writer)
    read = service.request("POST", "/events", rest_alarm(entity), key=keys.writer).json()
    changed = {**read, "description": "pump overheating, fan off"}
    answer = service.request(
        "PUT",
        f"/events/{read['id']}",
        changed,
        key=keys.writer,
        headers={"If-Match": str(read["etag"])},
    )
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["description"] == "pump overheating, fan off"
    assert (body["count"], body["etag"]) == (2, read["etag"] + 1)


def test_a_create_that_sends_the_occurrence_fields_is_told_they_are_the_servers(
    service: Service, keys: Keys
) -> None:
    entity = f"pump-{uuid.uuid4().hex[:8]}"
    read = service.request("POST", "/events", rest_alarm(entity), key=keys.writer).json()
    # The document read, posted again as a new event: every server-owned field is named.
    answer = service.request(
        "POST", "/events", {**read, "entityId": f"{entity}-2"}, key=keys.writer
    )
    assert answer.status == 400, answer.body
    rules = violations(answer)
    for name in (
        "count",
        "firstOccurrenceTime",
        "lastOccurrenceTime",
        "createTime",
        "id",
        "_links",
    ):
        assert rules[name].startswith("output only: set by the server"), rules
    assert not any("unknown field" in rule for rule in rules.values())
    listed = service.request(
        "GET", f"/events?filter=%7B%22entityId%22%3A%22{entity}-2%22%7D", key=keys.read
    )
    assert listed.json()["page"]["totalElements"] == 0
