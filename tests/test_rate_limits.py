"""Rate limits: the rules' syntax, the shared window counter on both backends (also with
several stores on one database, as replicas see it), and the limits as clients meet them."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from hypothesis import given
from hypothesis import strategies as st

from helpers import (
    BACKENDS,
    Replicas,
    Response,
    Service,
    auth,
    error_reason,
    grpc_details,
    metric_value,
    rows,
    run,
    scrape,
)
from persistence.database import open_database
from persistence.rate_counters import SharedRateCounters
from persistence.store import Store
from service.domain.access import Principal, Role
from service.domain.errors import InvalidInput, ResourceExhausted
from service.domain.rate_limits import (
    PRODUCTION_RULES,
    Operation,
    Per,
    RateLimits,
    RateRule,
    WindowCounter,
    parse_rate_limits,
)
from service.v1 import (
    device_event_service_pb2,
    device_event_service_pb2_grpc,
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    event_stream_service_pb2,
    event_stream_service_pb2_grpc,
)

WAIT = 30.0  # a bound for things to arrive, never a timing assertion


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rules_are_read_with_their_windows() -> None:
    rules = parse_rate_limits("tenant.create=3000/1m, key.read=600/10s,Tenant.Write=5/h")
    assert rules == (
        RateRule(Per.TENANT, Operation.CREATE, 3000, 60),
        RateRule(Per.KEY, Operation.READ, 600, 10),
        RateRule(Per.TENANT, Operation.WRITE, 5, 3600),
    )
    assert [str(r) for r in rules] == [
        "tenant.create=3000/1m",
        "key.read=600/10s",
        "tenant.write=5/1h",
    ]
    assert parse_rate_limits("none") == () == parse_rate_limits("")
    assert parse_rate_limits(PRODUCTION_RULES)[0] == RateRule(
        Per.TENANT, Operation.CREATE, 3000, 60
    )


@given(
    st.lists(
        st.builds(
            RateRule,
            st.sampled_from(Per),
            st.sampled_from(Operation),
            st.integers(1, 999_999_999),
            st.integers(1, 86_400),
        ),
        max_size=5,
    )
)
def test_written_rules_read_back_as_themselves(rules: list[RateRule]) -> None:
    text = ",".join(str(r) for r in rules)
    kept = {(r.per, r.operation, r.window_s): r for r in rules}  # a later rule replaces one
    assert parse_rate_limits(text) == tuple(kept.values())


@given(st.text(max_size=60))
def test_any_setting_parses_or_is_refused_naming_the_setting(text: str) -> None:
    try:
        parse_rate_limits(text)
    except InvalidInput as error:
        assert error.violations[0].field == "rate-limits"


@pytest.mark.parametrize(
    "text",
    ["tenant.create=3000", "tenant.delete=1/1m", "app.create=1/1m", "tenant.create=0/1m",
     "tenant.create=5/2d", "tenant.create=5/1y", "tenant.create=-1/1m", "tenant.create=5/0s"],
)  # fmt: skip
def test_a_broken_rule_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rate_limits(f"key.read=1/1s,{text}")
    assert caught.value.violations[0].field == "rate-limits"
    assert text in caught.value.message


def test_the_shared_counter_grants_the_limit_per_window(store: Store) -> None:
    clock = Clock(time.time() // 60 * 60 + 0.5)  # half a second into a minute
    counter = WindowCounter(SharedRateCounters(store).reserve, clock)

    async def scenario() -> None:
        verdicts = [await counter.take("tenant:a:create", 10, 60) for _ in range(12)]
        assert [v.allowed for v in verdicts] == [True] * 10 + [False] * 2
        assert verdicts[-1].retry_after == pytest.approx(59.5)
        # Another scope has its own count.
        assert (await counter.take("tenant:b:create", 10, 60)).allowed
        # More than is left: all or nothing, or as many as are left.
        clock.now += 60
        assert (await counter.take("tenant:a:create", 10, 60, 7)).allowed
        assert not (await counter.take("tenant:a:create", 10, 60, 4)).allowed
        partial = await counter.take("tenant:a:create", 10, 60, 4, partial=True)
        assert (partial.granted, partial.allowed) == (3, False)

    run(scenario())
    used = dict(rows(store, "SELECT scope, SUM(used) FROM rate_counters GROUP BY scope"))
    assert set(used) == {"tenant:a:create", "tenant:b:create"}


def test_a_call_that_one_limit_refuses_spends_nothing_of_the_others(store: Store) -> None:
    clock = Clock(time.time() // 60 * 60 + 0.5)  # half a second into a minute
    limits = RateLimits(
        parse_rate_limits("key.create=5/1m,tenant.create=3/1s"),
        WindowCounter(SharedRateCounters(store).reserve, clock),
    )
    caller = Principal("acme", "k1", "writer", Role.READ_WRITE)

    async def allowed() -> bool:
        try:
            await limits.check(caller, Operation.CREATE)
        except ResourceExhausted:
            return False
        return True

    async def scenario() -> None:
        # The tenant's second refuses the 4th and 5th call; the key is charged only for 3.
        assert [await allowed() for _ in range(5)] == [True] * 3 + [False] * 2
        clock.now += 1  # the tenant's next second, the key's same minute
        assert [await allowed() for _ in range(3)] == [True, True, False]  # the key's 5
        clock.now += 60
        # Partly granted: the key gave 4, the tenant 3; the key's 4th unit is not spent.
        granted, refusal = await limits.grant(caller, Operation.CREATE, 4)
        assert granted == 3 and refusal is not None and "tenant" in refusal.message
        clock.now += 1
        granted, refusal = await limits.grant(caller, Operation.CREATE, 5)
        assert granted == 2 and refusal is not None and "API key" in refusal.message

    run(scenario())


def test_stores_of_one_database_never_grant_more_than_the_limit_together(
    database_url: str,
) -> None:
    """Four stores (as four replicas have) take units of one scope concurrently: together
    they get the limit, less at most the shares the others reserved and did not use."""
    stores = [Store(database_url) for _ in range(4)]
    stores[0].migrate()
    limit = 1000  # shares of 10
    try:

        async def one_replica(store: Store) -> int:
            counter = WindowCounter(SharedRateCounters(store).reserve, Clock(time.time()))
            granted = 0

            async def caller() -> None:
                nonlocal granted
                while (await counter.take("tenant:shared:create", limit, 3600)).allowed:
                    granted += 1

            await asyncio.gather(*(caller() for _ in range(5)))
            return granted

        async def everyone() -> list[Any]:
            return await asyncio.gather(*(one_replica(s) for s in stores))

        granted = run(everyone())
        assert limit - 3 * 10 <= sum(granted) <= limit, granted
        assert all(g > 0 for g in granted), granted
    finally:
        for opened in stores:
            opened.close()


# --- as clients meet them: through Envoy and gRPC, both backends ------------------------------

# Daily windows (aligned to UTC midnight), so that no test runs across a window's end.
LIMITED = ("--rate-limits", "tenant.create=12/1d,key.read=5/1d")


def refused_by_the_tenant_limit(service: Service) -> float:
    """What the metrics page counts as refused by LIMITED's tenant rule."""
    return metric_value(
        scrape(service),
        "eventmgmt_refused_total",
        reason="RATE_LIMIT_EXCEEDED",
        limit="tenant.create=12/1d",
    )


CREATES = 12
_timestamps = itertools.count(1_700_000_000_000)


def report() -> dict[str, Any]:
    """A device report (docs/device-api.md) no other has the fingerprint of."""
    return {"typeId": "0045", "description": "limited", "appId": "APP-1", "severity": 3,
            "data": {"n": 1}, "timestamp": next(_timestamps)}  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def limited(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: Any,
) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp(f"limited-{request.param}")
    url = (
        f"sqlite:///{data_dir / 'events.db'}"
        if request.param == "sqlite"
        else str(postgres_databases())
    )
    running = Service(url, data_dir, serve_args=LIMITED)
    running.start()
    yield running
    running.stop()


def fresh_tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def stored_events(service: Service, tenant: str) -> int:
    database = open_database(service.database_url)
    try:
        p = database.param
        row = database.execute_sql(
            f"SELECT COUNT(*) FROM events WHERE tenant_id = {p} AND NOT internal", (tenant,)
        ).fetchone()
        return int(row[0])
    finally:
        database.close()


def retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToMilliseconds() / 1000
    raise AssertionError(f"no RetryInfo in {status}")


def assert_rest_refusal(answer: Response) -> None:
    assert answer.status == 429, answer.body
    assert 1 <= int(answer.headers["retry-after"]) <= 86_400, answer.headers
    body = answer.json()
    assert body["code"] == 8, body
    assert (
        "rate limit exceeded: this tenant may make 12 create operations per 1d" in body["message"]
    )
    assert error_reason(answer) == "RATE_LIMIT_EXCEEDED"


def grpc_create(stub: Any, key: str, description: str = "limited") -> Any:
    return stub.CreateEvent(
        event_service_pb2.CreateEventRequest(
            event=event_pb2.Event(description=description, entity_id="e-1")
        ),
        metadata=auth(key),
    )


@pytest.mark.integration
def test_creates_beyond_a_tenants_limit_are_refused_with_when_to_retry_and_store_nothing(
    limited: Service,
) -> None:
    """Every way of creating counts against one limit: REST and gRPC creates of two keys,
    device reports on both APIs, streamed ingest per event."""
    tenant = fresh_tenant()
    keys = [limited.create_key(tenant, "Admin", name=f"k{i}") for i in range(2)]
    limited.cli("admin", "create-device", "dev-1", "--tenant", tenant)
    limited.cli("admin", "create-app", "APP-1", "--tenant", tenant)
    device_path = f"/rest/v1/api/tenants/{tenant}/devices/dev-1/events"
    body = {"description": "limited", "entityId": "e-1"}
    refused_before = refused_by_the_tenant_limit(limited)
    with grpc.insecure_channel(limited.grpc_target) as channel:
        events = event_service_pb2_grpc.EventServiceStub(channel)
        devices = device_event_service_pb2_grpc.DeviceEventServiceStub(channel)
        for _ in range(4):
            assert limited.request("POST", "/events", body, key=keys[0]).status == 201
            grpc_create(events, keys[1])
        assert limited.request("POST", device_path, report(), key=keys[0]).status == 201
        devices.ReportDeviceEvent(
            device_event_service_pb2.ReportDeviceEventRequest(
                tenant_id=tenant, device_id="dev-1", type_id="0045", description="limited",
                app_id="APP-1", severity=3, data_json="{}",
                timestamp=Timestamp(seconds=next(_timestamps) // 1000),
            ),
            metadata=auth(keys[1]),
        )  # fmt: skip
        # Two of the batch's four events fit; the others fail alone, saying when to retry.
        stream = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
        batch = event_stream_service_pb2.IngestEventsRequest(
            items=[
                event_stream_service_pb2.IngestItem(
                    event=event_pb2.Event(description=f"ingested {i}", entity_id="e-1")
                )
                for i in range(4)
            ]
        )
        (answer,) = stream.IngestEvents(iter([batch]), metadata=auth(keys[1]))
        assert [bool(r.id) for r in answer.results] == [True, True, False, False]
        refused = answer.results[2].error
        assert refused.code == code_pb2.RESOURCE_EXHAUSTED
        assert "rate limit exceeded" in refused.message
        assert stored_events(limited, tenant) == CREATES

        assert_rest_refusal(limited.request("POST", "/events", body, key=keys[1]))
        with pytest.raises(grpc.RpcError) as caught:
            grpc_create(events, keys[0])
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert grpc_details(caught.value)[0] == "RATE_LIMIT_EXCEEDED"
        assert 0 < retry_delay(caught.value) <= 86_400
        device = limited.request("POST", device_path, report(), key=keys[0])
        assert device.status == 429, device.body
        assert set(device.json()) == {"error", "message"}
        assert int(device.headers["retry-after"]) >= 1
    assert stored_events(limited, tenant) == CREATES
    # Operators see each refusal (two streamed items, REST, gRPC, the device path) by rule.
    refused = refused_by_the_tenant_limit(limited) - refused_before
    assert refused == 5


@pytest.mark.integration
def test_a_key_over_its_read_limit_is_refused_while_another_key_reads(limited: Service) -> None:
    tenant = fresh_tenant()
    busy, other = (limited.create_key(tenant, "Read", name=n) for n in ("busy", "other"))
    for _ in range(5):
        assert limited.request("GET", "/events", key=busy).status == 200
    refused = limited.request("GET", "/events", key=busy)
    assert refused.status == 429, refused.body
    assert "this API key may make 5 read operations per 1d" in refused.json()["message"]
    assert int(refused.headers["retry-after"]) >= 1
    with grpc.insecure_channel(limited.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(busy))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(other))
    assert limited.request("GET", "/events", key=other).status == 200


@pytest.mark.integration
def test_a_tenant_at_its_limit_leaves_other_tenants_writing(limited: Service) -> None:
    """Four threads of one tenant create until refused, beside two threads of another
    tenant making its creates over REST and gRPC at the same time: the other tenant gets
    every one, the first exactly its limit."""
    noisy, quiet = fresh_tenant(), fresh_tenant()
    noisy_key, quiet_key = (
        limited.create_key(noisy, "ReadWrite"),
        limited.create_key(quiet, "ReadWrite"),
    )
    body = {"description": "x", "entityId": "e-1"}
    created: Counter[str] = Counter()
    lock = threading.Lock()

    def flood() -> None:
        while (answer := limited.request("POST", "/events", body, key=noisy_key)).status == 201:
            with lock:
                created[noisy] += 1
        assert_rest_refusal(answer)

    def steady(over_grpc: bool) -> None:
        with grpc.insecure_channel(limited.grpc_target) as channel:
            stub = event_service_pb2_grpc.EventServiceStub(channel)
            for _ in range(CREATES // 2):
                if over_grpc:
                    grpc_create(stub, quiet_key)
                else:
                    assert limited.request("POST", "/events", body, key=quiet_key).status == 201
                with lock:
                    created[quiet] += 1

    with ThreadPoolExecutor(6) as pool:
        work = [pool.submit(flood) for _ in range(4)]
        work += [pool.submit(steady, over_grpc) for over_grpc in (False, True)]
        for done in work:
            done.result(timeout=120)
    assert created == {noisy: CREATES, quiet: CREATES}
    assert stored_events(limited, noisy) == stored_events(limited, quiet) == CREATES


@pytest.mark.integration
def test_create_jobs_count_their_events_and_wait_for_the_next_window(limited: Service) -> None:
    tenant = fresh_tenant()
    key = limited.create_key(tenant, "ReadWrite")
    items = [{"description": f"job {i}", "entityId": "e-1"} for i in range(CREATES + 5)]
    submitted = limited.request("POST", "/createEventsJobs", {"events": items}, key=key)
    assert submitted.status == 201, submitted.body
    job = submitted.json()["id"]
    deadline = time.monotonic() + WAIT
    while stored_events(limited, tenant) < CREATES and time.monotonic() < deadline:
        time.sleep(0.2)
    status = limited.request("GET", f"/createEventsJobs/{job}", key=key).json()
    assert stored_events(limited, tenant) == CREATES, status
    assert status["state"] == "IN_PROGRESS", status
    assert status["progress"] == {"done": CREATES, "total": CREATES + 5}
    # The tenant's single creates are refused too: the job used the window.
    assert_rest_refusal(
        limited.request("POST", "/events", {"description": "x", "entityId": "e"}, key=key)
    )


@pytest.mark.integration
def test_replicas_share_one_limit(replicas: Callable[..., Replicas]) -> None:
    """Two server processes on one PostgreSQL database, and `serve --workers 2` on either
    backend: creates of one tenant through both, from four threads, until both refuse."""
    limit = 200  # each process reserves 2 at a time
    started = replicas({"EVENTMGMT_RATE_LIMITS": f"tenant.create={limit}/1d"})
    key = started.create_key("shared", "ReadWrite")
    stubs = [event_service_pb2_grpc.EventServiceStub(c) for c in started.channels]
    created = Counter[int]()
    lock = threading.Lock()

    def create_until_refused(index: int) -> None:
        stub = stubs[index % 2]
        while True:
            try:
                grpc_create(stub, key)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                return
            with lock:
                created[index % 2] += 1

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(create_until_refused, i) for i in range(4)]:
            done.result(timeout=120)
    total = sum(created.values())
    assert limit - 2 <= total <= limit, created
    assert all(created[i] > 0 for i in (0, 1)), created
    for stub in stubs:
        with pytest.raises(grpc.RpcError) as caught:
            grpc_create(stub, key)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    database = open_database(started.database_url)
    try:
        row = database.execute_sql("SELECT COUNT(*) FROM events WHERE NOT internal").fetchone()
    finally:
        database.close()
    assert int(row[0]) == total
