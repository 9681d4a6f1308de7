"""The alarm lifecycle end to end, on both backends: status on alarms, acknowledge and clear
through the real Envoy and over gRPC with their errors, status in list filters, sort and find,
and the backfill of alarms stored before the status existed."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import grpc
import pytest

from helpers import auth, error_reason, grpc_details, violations
from service.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc

if TYPE_CHECKING:
    from helpers import Keys, Service

pytestmark = pytest.mark.integration


def create(service: Service, key: str, **fields: Any) -> dict[str, Any]:
    body = {"description": "pump pressure", "entityId": "pump-1", **fields}
    answer = service.request("POST", "/events", body, key=key)
    assert answer.status == 201, answer.body
    return dict(answer.json())


def alarm(service: Service, key: str, **fields: Any) -> dict[str, Any]:
    # Each alarm its own code: a repeated alarm of one key counts into the open one
    # (README: Alarms, de-duplication).
    fields.setdefault("code", str(10_000 + uuid.uuid4().int % 10**9))
    return create(service, key, classification="ALARM", **fields)


def test_alarms_are_active_when_created_and_other_events_have_no_status(
    service: Service, keys: Keys
) -> None:
    raised = alarm(service, keys.writer)
    assert raised["status"] == "ACTIVE"
    assert "clearedAt" not in raised and "clearedBy" not in raised
    warning = create(service, keys.writer, classification="WARNING")
    assert "status" not in warning
    assert service.request("GET", f"/events/{raised['id']}", key=keys.read).json() == raised

    stub = event_service_pb2_grpc.EventServiceStub(grpc_channel(service))
    got = stub.GetEvent(
        event_service_pb2.GetEventRequest(id=raised["id"]), metadata=auth(keys.read)
    )
    assert got.event.status == event_pb2.ALARM_STATUS_ACTIVE
    got = stub.GetEvent(
        event_service_pb2.GetEventRequest(id=warning["id"]), metadata=auth(keys.read)
    )
    assert got.event.status == event_pb2.ALARM_STATUS_UNSPECIFIED


def test_acknowledge_then_clear_over_rest_records_who_and_when(
    service: Service, keys: Keys
) -> None:
    raised = alarm(service, keys.writer)
    path = f"/events/{raised['id']}"

    acknowledged = service.request("POST", f"{path}/acknowledge", key=keys.writer)
    assert acknowledged.status == 200, acknowledged.body
    stored = service.request("GET", path, key=keys.read).json()
    assert stored["status"] == "ACKNOWLEDGED" and stored["acknowledgedBy"] == "test-key"
    assert stored["etag"] == 2

    cleared = service.request("POST", f"{path}/clear", key=keys.writer)
    assert cleared.status == 200, cleared.body
    body = cleared.json()
    assert body["status"] == "CLEARED" and body["clearedBy"] == "test-key"
    assert body["clearedAt"] >= stored["acknowledgedAt"]
    assert body["etag"] == 3 and cleared.headers["etag"] == '"3"'
    assert body["_links"]["self"]["href"].endswith(path)
    assert service.request("GET", path, key=keys.read).json() == body

    # Twice keeps the first time and person; acknowledging a cleared alarm changes nothing.
    again = service.request("POST", f"{path}/clear", key=keys.admin)
    assert again.status == 200 and again.json() == body
    assert service.request("POST", f"{path}/acknowledge", key=keys.admin).status == 200
    assert service.request("GET", path, key=keys.read).json()["status"] == "CLEARED"


def test_clearing_an_active_alarm_skips_acknowledgement(service: Service, keys: Keys) -> None:
    raised = alarm(service, keys.writer)
    body = service.request("POST", f"/events/{raised['id']}/clear", key=keys.writer).json()
    assert body["status"] == "CLEARED" and body.get("acknowledged", False) is False
    # Acknowledged later: who acknowledged it is kept, the status stays final.
    service.request("POST", f"/events/{raised['id']}/acknowledge", key=keys.writer)
    stored = service.request("GET", f"/events/{raised['id']}", key=keys.read).json()
    assert stored["status"] == "CLEARED" and stored["acknowledged"] is True


def test_clear_errors_name_the_rule(service: Service, keys: Keys) -> None:
    warning = create(service, keys.writer, classification="WARNING")
    answer = service.request("POST", f"/events/{warning['id']}/clear", key=keys.writer)
    assert answer.status == 400
    assert error_reason(answer) == "NOT_AN_ALARM"
    assert "only alarms (classification ALARM)" in answer.json()["message"]
    assert "status" not in service.request("GET", f"/events/{warning['id']}", key=keys.read).json()

    raised = alarm(service, keys.writer)
    path = f"/events/{raised['id']}/clear"
    assert service.request("POST", path, key=keys.read).status == 403
    assert service.request("POST", path, key=keys.other_tenant).status == 404
    assert service.request("POST", path).status == 401
    outside = service.request("POST", path, key=keys.sub1_writer)
    assert outside.status == 403 and error_reason(outside) == "NOT_AUTHORIZED_DOMAIN"
    assert service.request("POST", "/events/not-a-uuid/clear", key=keys.writer).status == 400
    missing = service.request("POST", f"/events/{uuid.uuid4()}/clear", key=keys.writer)
    assert missing.status == 404
    # None of those changed the alarm.
    assert service.request("GET", f"/events/{raised['id']}", key=keys.read).json() == raised


def test_status_is_set_by_the_server_only(service: Service, keys: Keys) -> None:
    refused = service.request(
        "POST",
        "/events",
        {"entityId": "pump-1", "classification": "ALARM", "status": "CLEARED"},
        key=keys.writer,
    )
    assert refused.status == 400
    assert "status" in violations(refused)
    raised = alarm(service, keys.writer)
    path = f"/events/{raised['id']}"
    # A document read and sent back keeps its status; a changed status is refused by name.
    sent_back = {k: v for k, v in raised.items() if k not in ("_links",)}
    assert service.request("PUT", path, {**sent_back, "severity": 2}, key=keys.writer).status == 200
    changed = service.request("PUT", path, {"status": "CLEARED"}, key=keys.writer)
    assert changed.status == 400 and "status" in violations(changed)
    stored = service.request("GET", path, key=keys.read).json()
    assert stored["status"] == "ACTIVE" and stored["severity"] == 2

    stub = event_service_pb2_grpc.EventServiceStub(grpc_channel(service))
    with pytest.raises(grpc.RpcError) as refused_grpc:
        stub.CreateEvent(
            event_service_pb2.CreateEventRequest(
                event=event_pb2.Event(
                    entity_id="pump-1",
                    classification=event_pb2.CLASSIFICATION_ALARM,
                    status=event_pb2.ALARM_STATUS_CLEARED,
                )
            ),
            metadata=auth(keys.writer),
        )
    assert refused_grpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "status" in grpc_details(refused_grpc.value)[1]


def test_reclassifying_an_event_gives_it_the_status_of_its_class(
    service: Service, keys: Keys
) -> None:
    event = create(service, keys.writer, classification="WARNING")
    path = f"/events/{event['id']}"
    service.request("POST", f"{path}/acknowledge", key=keys.writer)
    answer = service.request("PUT", path, {"classification": "ALARM"}, key=keys.writer)
    assert answer.status == 200 and answer.json()["status"] == "ACKNOWLEDGED"
    answer = service.request("PUT", path, {"classification": "NOTIFICATION"}, key=keys.writer)
    assert answer.status == 200 and "status" not in answer.json()


def grpc_channel(service: Service) -> grpc.Channel:
    channel = grpc.insecure_channel(service.grpc_target)
    _CHANNELS.append(channel)
    return channel


_CHANNELS: list[grpc.Channel] = []


@pytest.fixture(autouse=True)
def _close_channels() -> Any:
    yield
    while _CHANNELS:
        _CHANNELS.pop().close()


def test_clear_over_grpc(service: Service, keys: Keys) -> None:
    stub = event_service_pb2_grpc.EventServiceStub(grpc_channel(service))
    raised = stub.CreateEvent(
        event_service_pb2.CreateEventRequest(
            event=event_pb2.Event(entity_id="pump-2", classification=event_pb2.CLASSIFICATION_ALARM)
        ),
        metadata=auth(keys.writer),
    ).event
    assert raised.status == event_pb2.ALARM_STATUS_ACTIVE
    cleared = stub.ClearEvent(
        event_service_pb2.ClearEventRequest(id=raised.id), metadata=auth(keys.writer)
    ).event
    assert cleared.status == event_pb2.ALARM_STATUS_CLEARED
    assert cleared.cleared_by == "test-key" and cleared.HasField("cleared_at")
    assert cleared.etag == 2
    again = stub.ClearEvent(
        event_service_pb2.ClearEventRequest(id=raised.id), metadata=auth(keys.admin)
    ).event
    assert again == cleared

    other = stub.CreateEvent(
        event_service_pb2.CreateEventRequest(event=event_pb2.Event(entity_id="pump-2")),
        metadata=auth(keys.writer),
    ).event
    with pytest.raises(grpc.RpcError) as not_alarm:
        stub.ClearEvent(
            event_service_pb2.ClearEventRequest(id=other.id), metadata=auth(keys.writer)
        )
    assert not_alarm.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_details(not_alarm.value)[0] == "NOT_AN_ALARM"
    with pytest.raises(grpc.RpcError) as read_only:
        stub.ClearEvent(event_service_pb2.ClearEventRequest(id=raised.id), metadata=auth(keys.read))
    assert read_only.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_lists_filter_and_sort_by_status_and_find_queries_and_counts_it(
    service: Service, keys: Keys
) -> None:
    entity = f"status-{uuid.uuid4().hex[:8]}"
    active = alarm(service, keys.writer, entityId=entity)
    acked = alarm(service, keys.writer, entityId=entity)
    cleared = alarm(service, keys.writer, entityId=entity)
    warning = create(service, keys.writer, entityId=entity, classification="WARNING")
    service.request("POST", f"/events/{acked['id']}/acknowledge", key=keys.writer)
    service.request("POST", f"/events/{cleared['id']}/clear", key=keys.writer)

    def listed(filter_document: dict[str, Any], sort: str = "") -> list[str]:
        query = f"filter={quote(json.dumps({'entityId': entity, **filter_document}))}&size=50"
        answer = service.request("GET", f"/events?{query}{sort}", key=keys.read)
        assert answer.status == 200, answer.body
        return [e["id"] for e in answer.json()["_embedded"]["events"]]

    assert listed({"status": "ACTIVE"}) == [active["id"]]
    assert set(listed({"status": {"in": ["ACKNOWLEDGED", "CLEARED"]}})) == {
        acked["id"],
        cleared["id"],
    }
    assert listed({"not": {"status": "CLEARED"}, "classification": "ALARM"}) == [
        acked["id"],
        active["id"],
    ]
    assert listed({}, "&sort=status,asc&sort=timestamp,asc") == [
        warning["id"],
        acked["id"],
        active["id"],
        cleared["id"],
    ]
    assert listed({"clearedAt": {"after": "2000-01-01T00:00:00Z"}}) == [cleared["id"]]
    bad = service.request("GET", "/events?sort=clearedBy", key=keys.read)
    assert bad.status == 400

    grpc_stub = event_service_pb2_grpc.EventServiceStub(grpc_channel(service))
    page = grpc_stub.ListEvents(
        event_service_pb2.ListEventsRequest(
            filter=json.dumps({"entityId": entity, "status": "CLEARED"})
        ),
        metadata=auth(keys.read),
    )
    assert [e.id for e in page.events] == [cleared["id"]]

    found = service.request(
        "POST",
        "/events/find",
        {
            "query": {"bool": {"filter": [{"term": {"entityId": entity}}]}},
            "sort": [{"status": "desc"}],
            "aggs": {"statuses": {"terms": {"field": "status"}}},
        },
        key=keys.read,
    )
    assert found.status == 200, found.body
    answer = found.json()
    hits = answer["hits"]["hits"]
    assert [h["_id"] for h in hits][:3] == [cleared["id"], active["id"], acked["id"]]
    assert hits[0]["_source"]["status"] == "CLEARED"
    buckets = {b["key"]: b["doc_count"] for b in answer["aggregations"]["statuses"]["buckets"]}
    assert buckets == {"ACTIVE": 1, "ACKNOWLEDGED": 1, "CLEARED": 1}
    terms = service.request(
        "POST",
        "/events/find",
        {
            "query": {
                "bool": {"filter": [{"term": {"entityId": entity}}, {"term": {"status": "ACTIVE"}}]}
            }
        },
        key=keys.read,
    ).json()
    assert [h["_id"] for h in terms["hits"]["hits"]] == [active["id"]]


# --- the store: migration backfill ---------------------------------------------------------


_OLD_COLUMNS = (
    "id, tenant_id, type_id, correlation_id, entity_type, entity_id, domain, ts, create_time, "
    "update_time, etag, severity, code, description, classification, category, ack_required, "
    "acknowledged, acknowledged_by, app_id, internal"
)


def test_migration_gives_stored_alarms_their_status(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import peewee

    from persistence import migrations
    from persistence.store import Store

    before = [m for m in migrations.MIGRATIONS if m[0] < 32]
    monkeypatch.setattr(migrations, "MIGRATIONS", before)
    store = Store(database_url)
    try:
        store.migrate()
        stored = {"active": ("ALARM", False), "acked": ("ALARM", True), "note": ("WARNING", True)}

        def fill(db: peewee.Database) -> None:
            p = db.param
            with db.atomic():
                for n, (name, (classification, acknowledged)) in enumerate(stored.items()):
                    db.execute_sql(
                        f"INSERT INTO events ({_OLD_COLUMNS}) VALUES ({', '.join([p] * 21)})",
                        (
                            str(uuid.UUID(int=n + 1)),
                            "acme",
                            "t",
                            "",
                            "",
                            name,
                            "/",
                            1_700_000_000_000_000 + n,
                            1,
                            1,
                            1,
                            0,
                            "",
                            "",
                            classification,
                            "",
                            False,
                            acknowledged,
                            "",
                            "",
                            False,
                        ),
                    )

        asyncio.run(store.read(fill))
        monkeypatch.undo()
        assert 32 in store.migrate()

        def statuses(db: peewee.Database) -> dict[str, tuple[str, Any, str]]:
            rows = db.execute_sql("SELECT entity_id, status, cleared_at, cleared_by FROM events")
            return {r[0]: (r[1], r[2], r[3]) for r in rows.fetchall()}

        assert asyncio.run(store.read(statuses)) == {
            "active": ("ACTIVE", None, ""),
            "acked": ("ACKNOWLEDGED", None, ""),
            "note": ("", None, ""),
        }
    finally:
        store.close()
