"""Event types and custom events end to end: REST through the real Envoy and gRPC against the
real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from helpers import (
    DOCUMENTED_CUSTOM_EVENT,
    STANDARD_EVENT_ID,
    auth,
    error_reason,
    grpc_violations,
    violations,
)
from service.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    event_type_pb2,
    event_type_service_pb2,
    event_type_service_pb2_grpc,
)

if TYPE_CHECKING:
    from helpers import Keys, Service

pytestmark = pytest.mark.integration


def unique(prefix: str = "type") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def field(name: str, kind: str = "STRING", **flags: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, **flags}


def create_type(service: Service, key: str, **definition: Any) -> dict[str, Any]:
    definition.setdefault("name", "test type")
    answer = service.request("POST", "/eventTypes", definition, key=key)
    assert answer.status == 201, answer.body
    return dict(answer.json())


# --- the documented custom event (docs/rest-v3.md#custom-event) ----------------------------------


def test_documented_parent_and_child_types_and_the_custom_event(
    service: Service, keys: Keys
) -> None:
    parent = create_type(
        service,
        keys.writer,
        name="Parent",
        fields=[field("additionalFieldParent", required=True, filterable=True)],
    )
    assert parent["parentId"] == STANDARD_EVENT_ID
    assert (parent["scope"], parent["ttl"], parent["etag"]) == ("LOCAL", 35, 1)
    assert parent["fields"] == [
        {
            "name": "additionalFieldParent",
            "type": "STRING",
            "values": [],
            "required": True,
            "filterable": True,
            # Not sent: fields are updatable unless declared otherwise, as at the platform.
            "updatable": True,
        }
    ]
    uuid.UUID(parent["id"])
    answer = service.request(
        "POST",
        "/eventTypes",
        {
            "id": "c3d6749a-c9e4-11e7-abc4-cec278b6b50a",
            "name": "Child",
            "parentId": parent["id"],
            "fields": [field("additionalFieldChild")],
        },
        key=keys.writer,
    )
    assert answer.status == 201, answer.body
    assert answer.headers["location"].endswith("/eventTypes/c3d6749a-c9e4-11e7-abc4-cec278b6b50a")
    assert not any(h.startswith("grpc-") for h in answer.headers)

    created = service.request("POST", "/events", DOCUMENTED_CUSTOM_EVENT, key=keys.writer)

    assert created.status == 201, created.body
    body = created.json()
    for name, value in DOCUMENTED_CUSTOM_EVENT.items():
        assert body[name] == value, name
    fetched = service.request("GET", f"/events/{body['id']}", key=keys.read)
    assert fetched.json() == body
    read_type = service.request("GET", f"/eventTypes/{parent['id']}", key=keys.read)
    assert read_type.status == 200
    assert read_type.json() == parent


def test_custom_events_check_required_fields_of_every_ancestor(
    service: Service, keys: Keys
) -> None:
    parent = create_type(service, keys.writer, fields=[field("parentField", required=True)])
    child = create_type(
        service,
        keys.writer,
        parentId=parent["id"],
        fields=[field("childField", "INTEGER", required=True)],
    )

    answer = service.request(
        "POST", "/events", {"typeId": child["id"], "entityId": "e-1"}, key=keys.writer
    )

    assert answer.status == 400
    found = violations(answer)
    assert found["parentField"].startswith("required by event type")
    assert found["childField"].startswith("required by event type")


def test_custom_field_values_are_checked_by_type(service: Service, keys: Keys) -> None:
    kind = create_type(
        service,
        keys.writer,
        fields=[
            field("cycles", "INTEGER"),
            field("ratio", "DOUBLE"),
            field("on", "BOOLEAN"),
            field("seen", "TIMESTAMP"),
            field("level", "ENUM", values=["LOW", "HIGH"]),
            field("note"),
        ],
    )
    bad = {
        "typeId": kind["id"],
        "cycles": 1.5,
        "ratio": "0.5",
        "on": "true",
        "seen": "2018-07-29T06:09:29",
        "level": "MEDIUM",
        "note": 5,
        "colour": "red",
        "shade": "dark",
    }

    answer = service.request("POST", "/events", {"entityId": "e-1", **bad}, key=keys.writer)

    assert answer.status == 400
    found = violations(answer)
    assert found["cycles"] == "must be an integer"
    assert found["ratio"] == "must be a number"
    assert found["on"] == "must be true or false"
    assert found["seen"].startswith("must include a time zone")
    assert found["level"] == "must be one of LOW, HIGH"
    assert found["note"] == "must be a string"
    assert found["colour, shade"].startswith("unknown fields: colour, shade")

    good = {
        "typeId": kind["id"],
        "cycles": 7,
        "ratio": 2,
        "on": False,
        "seen": 1532844569743,
        "level": "HIGH",
        "note": "ok",
    }
    created = service.request("POST", "/events", {"entityId": "e-1", **good}, key=keys.writer)
    assert created.status == 201, created.body
    body = created.json()
    assert (body["cycles"], body["ratio"], body["on"], body["level"]) == (7, 2.0, False, "HIGH")
    assert isinstance(body["ratio"], float)
    assert body["seen"] == "2018-07-29T06:09:29.743Z"


def test_standard_events_still_refuse_unknown_fields(service: Service, keys: Keys) -> None:
    answer = service.request("POST", "/events", {"colour": "red"}, key=keys.writer)

    assert answer.status == 400
    assert violations(answer)["colour"].startswith("unknown field: colour")


def test_update_changes_only_updatable_custom_fields(service: Service, keys: Keys) -> None:
    kind = create_type(
        service,
        keys.writer,
        fields=[field("phase", updatable=True), field("serial", required=True, updatable=False)],
    )
    event = service.request(
        "POST",
        "/events",
        {"typeId": kind["id"], "entityId": "e-1", "phase": "open", "serial": "A1"},
        key=keys.writer,
    ).json()

    answer = service.request(
        "PUT",
        f"/events/{event['id']}",
        {"phase": "closed", "serial": "B2"},
        key=keys.writer,
        headers={"If-Match": "1"},
    )

    assert answer.status == 200, answer.body
    assert (answer.json()["phase"], answer.json()["serial"]) == ("closed", "A1")
    assert "serial" in answer.headers["warning"]
    bad = service.request("PUT", f"/events/{event['id']}", {"phase": 3}, key=keys.writer)
    assert violations(bad) == {"phase": "must be a string"}


def test_create_jobs_check_custom_events_like_single_creates(service: Service, keys: Keys) -> None:
    kind = create_type(service, keys.writer, fields=[field("customStringField", required=True)])
    events = [
        {"typeId": kind["id"], "entityId": "e-1", "customStringField": "customValue"},
        {"typeId": kind["id"], "entityId": "e-2"},
        {"typeId": unique("missing"), "entityId": "e-3"},
    ]
    answer = service.request("POST", "/createEventsJobs", {"events": events}, key=keys.writer)
    assert answer.status == 201, answer.body
    path = f"/createEventsJobs/{answer.json()['id']}"

    give_up = time.monotonic() + 60  # a guard against hanging, not a speed requirement
    status = service.request("GET", path, key=keys.read).json()
    while status["state"] not in ("FINISHED", "FINISHED_WITH_ERROR"):
        assert time.monotonic() < give_up, status
        time.sleep(0.05)
        status = service.request("GET", path, key=keys.read).json()

    results = status["details"]["resultDescription"]
    assert [r["resultCode"] for r in results] == ["201", "400", "400"]
    assert results[0]["event"]["customStringField"] == "customValue"
    assert "customStringField" in results[1]["errorMessage"]
    assert "typeId" in results[2]["errorMessage"]


# --- type rules ----------------------------------------------------------------------------------


def test_bad_type_definitions_name_the_field(service: Service, keys: Keys) -> None:
    parent = create_type(service, keys.writer, fields=[field("shared")])
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"fields": [field("severity")]}, "fields[0].name", "severity is a standard event"),
        ({"fields": [field("_links")]}, "fields[0].name", "a letter, then letters"),
        (
            {"parentId": parent["id"], "fields": [field("shared")]},
            "fields[0].name",
            f"shared is already a field of ancestor event type {parent['id']}",
        ),
        ({"parentId": unique("missing")}, "parentId", "no visible event type"),
        ({"fields": [field("x", "ENUM")]}, "fields[0].values", "an ENUM field needs"),
        ({"fields": [field("x", "COLOUR")]}, "fields[0].type", "must be one of STRING"),
        ({"ttl": "35"}, "ttl", "must be an integer"),
        ({"ttl": 0.5}, "ttl", "must be an integer"),
        ({"colour": "red"}, "colour", "unknown field: colour"),
        ({"fields": [{"name": "x", "type": "STRING", "size": 3}]}, "fields[0].size", "unknown"),
        ({"id": "has space"}, "id", "a machine name"),
        ({"name": ""}, "name", "required"),
    ]
    for definition, name, rule in cases:
        answer = service.request(
            "POST", "/eventTypes", {"name": "bad", **definition}, key=keys.writer
        )
        assert answer.status == 400, (definition, answer.body)
        assert violations(answer)[name].startswith(rule), (definition, answer.body)


def test_duplicate_ids_are_already_exists(service: Service, keys: Keys) -> None:
    type_id = unique("dup")
    create_type(service, keys.writer, id=type_id)

    answer = service.request(
        "POST", "/eventTypes", {"id": type_id, "name": "again"}, key=keys.admin
    )

    assert answer.status == 409
    assert error_reason(answer) == "EVENT_TYPE_EXISTS"


def test_inheritance_is_at_most_eight_deep_and_acyclic(service: Service, keys: Keys) -> None:
    chain = [create_type(service, keys.writer)]
    for _ in range(7):
        chain.append(create_type(service, keys.writer, parentId=chain[-1]["id"]))

    too_deep = service.request(
        "POST", "/eventTypes", {"name": "ninth", "parentId": chain[-1]["id"]}, key=keys.writer
    )
    assert too_deep.status == 400
    assert "at most 8" in violations(too_deep)["parentId"]

    root = chain[0]
    cycle = service.request(
        "PUT",
        f"/eventTypes/{root['id']}",
        {"name": "root", "parentId": chain[2]["id"]},
        key=keys.writer,
    )
    assert cycle.status == 400
    assert violations(cycle)["parentId"].startswith("would make a cycle")
    itself = service.request(
        "PUT",
        f"/eventTypes/{root['id']}",
        {"name": "root", "parentId": root["id"]},
        key=keys.writer,
    )
    assert "own parent" in violations(itself)["parentId"]


def test_update_is_guarded_by_the_etag(service: Service, keys: Keys) -> None:
    kind = create_type(service, keys.writer, name="before")
    path = f"/eventTypes/{kind['id']}"

    stale = service.request(
        "PUT", path, {"name": "after"}, key=keys.writer, headers={"If-Match": "7"}
    )
    assert stale.status == 412  # RFC 9110 Precondition Failed
    assert error_reason(stale) == "ETAG_MISMATCH"

    updated = service.request("PUT", path, {"name": "after", "etag": 1, "ttl": 2}, key=keys.writer)
    assert updated.status == 200, updated.body
    assert (updated.json()["name"], updated.json()["etag"], updated.json()["ttl"]) == (
        "after",
        2,
        2,
    )
    assert service.request("GET", path, key=keys.read).json() == updated.json()


def test_update_keeps_what_it_does_not_name(service: Service, keys: Keys) -> None:
    parent = create_type(service, keys.admin, scope="GLOBAL")
    kind = create_type(
        service, keys.admin, name="pump", parentId=parent["id"], scope="GLOBAL", fields=[field("a")]
    )
    path = f"/eventTypes/{kind['id']}"

    ttl_only = service.request("PUT", path, {"ttl": 3}, key=keys.admin).json()
    assert {k: v for k, v in ttl_only.items() if k not in ("ttl", "etag", "updateTime")} == {
        k: v for k, v in kind.items() if k not in ("ttl", "etag", "updateTime")
    }
    assert (ttl_only["ttl"], ttl_only["etag"]) == (3, 2)

    moved = service.request(
        "PUT", path, {"parentId": "StandardEvent", "fields": []}, key=keys.admin
    ).json()
    assert (moved["parentId"], moved["fields"], moved["scope"]) == (
        STANDARD_EVENT_ID,
        [],
        "GLOBAL",
    )


def test_types_in_use_cannot_be_deleted(service: Service, keys: Keys) -> None:
    parent = create_type(service, keys.writer)
    child = create_type(service, keys.writer, parentId=parent["id"])
    service.request("POST", "/events", {"typeId": child["id"], "entityId": "e-1"}, key=keys.writer)

    for kind, what in ((parent, "child event types"), (child, "events")):
        answer = service.request("DELETE", f"/eventTypes/{kind['id']}", key=keys.writer)
        assert answer.status == 400
        assert error_reason(answer) == "EVENT_TYPE_IN_USE"
        assert what in answer.json()["message"]

    unused = create_type(service, keys.writer)
    stale = service.request(
        "DELETE", f"/eventTypes/{unused['id']}", key=keys.writer, headers={"If-Match": "2"}
    )
    assert stale.status == 412
    deleted = service.request("DELETE", f"/eventTypes/{unused['id']}?etag=1", key=keys.writer)
    assert (deleted.status, deleted.json()) == (200, {})
    assert service.request("GET", f"/eventTypes/{unused['id']}", key=keys.read).status == 404


# --- access --------------------------------------------------------------------------------------


def test_local_types_are_invisible_to_other_tenants(service: Service, keys: Keys) -> None:
    kind = create_type(service, keys.writer)

    assert service.request("GET", f"/eventTypes/{kind['id']}", key=keys.other_tenant).status == 404
    answer = service.request(
        "POST", "/events", {"typeId": kind["id"], "entityId": "e-1"}, key=keys.other_tenant
    )
    assert answer.status == 400
    assert violations(answer)["typeId"].startswith("unknown event type")
    listed = service.request("GET", "/eventTypes?pageSize=1000", key=keys.other_tenant).json()
    assert kind["id"] not in {t["id"] for t in listed["_embedded"]["eventTypes"]}
    child = service.request(
        "POST", "/eventTypes", {"name": "x", "parentId": kind["id"]}, key=keys.other_tenant
    )
    assert child.status == 400


def test_global_types_are_shared_but_changed_only_by_their_owner(
    service: Service, keys: Keys
) -> None:
    by_writer = service.request(
        "POST", "/eventTypes", {"name": "g", "scope": "GLOBAL"}, key=keys.writer
    )
    assert by_writer.status == 403
    assert error_reason(by_writer) == "MISSING_PRIVILEGE_ADMIN"
    kind = create_type(service, keys.admin, scope="GLOBAL", fields=[field("zone")])

    seen = service.request("GET", f"/eventTypes/{kind['id']}", key=keys.other_tenant)
    assert seen.status == 200
    event = service.request(
        "POST",
        "/events",
        {"typeId": kind["id"], "entityId": "e-1", "zone": "z1"},
        key=keys.other_tenant,
    )
    assert event.status == 201, event.body
    change = service.request(
        "PUT", f"/eventTypes/{kind['id']}", {"name": "mine"}, key=keys.other_tenant
    )
    assert change.status == 403
    assert error_reason(change) == "EVENT_TYPE_READ_ONLY"
    # Another tenant's events use it, so it stays.
    assert service.request("DELETE", f"/eventTypes/{kind['id']}", key=keys.admin).status == 400


def test_read_keys_cannot_create_types(service: Service, keys: Keys) -> None:
    answer = service.request("POST", "/eventTypes", {"name": "x"}, key=keys.read)

    assert answer.status == 403
    assert error_reason(answer) == "MISSING_PRIVILEGE_EVENT_TYPES_WRITE"


def test_list_pages_through_visible_types(service: Service, keys: Keys) -> None:
    for _ in range(3):
        create_type(service, keys.writer)

    # A HAL page now, as the platform serves it; the older pageSize still works.
    first = service.request("GET", "/eventTypes?pageSize=2", key=keys.read).json()
    next_href = first["_links"]["next"]["href"]
    second = service.request("GET", next_href.removeprefix(service.rest_url), key=keys.read).json()

    assert len(first["_embedded"]["eventTypes"]) == 2
    assert first["page"]["totalElements"] >= 3
    assert second["page"]["number"] == 1
    ids = [t["id"] for t in first["_embedded"]["eventTypes"] + second["_embedded"]["eventTypes"]]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


# --- gRPC ----------------------------------------------------------------------------------------


def test_custom_events_over_grpc(channel: grpc.Channel, keys: Keys) -> None:
    types = event_type_service_pb2_grpc.EventTypeServiceStub(channel)
    events = event_service_pb2_grpc.EventServiceStub(channel)
    kind = types.CreateEventType(
        event_type_service_pb2.CreateEventTypeRequest(
            event_type=event_type_pb2.EventType(
                name="pump",
                fields=[
                    event_type_pb2.FieldDefinition(
                        name="pressure", type=event_type_pb2.DOUBLE, required=True, updatable=True
                    ),
                    event_type_pb2.FieldDefinition(name="checked", type=event_type_pb2.TIMESTAMP),
                ],
            )
        ),
        metadata=auth(keys.writer),
    ).event_type
    assert (kind.scope, kind.ttl, kind.etag) == (event_type_pb2.LOCAL, 35, 1)

    checked = timestamp_pb2.Timestamp(seconds=1_532_844_569, nanos=743_000_000)
    event = event_pb2.Event(type_id=kind.id)
    event.custom_fields["pressure"].integer_value = 4
    event.custom_fields["checked"].timestamp_value.CopyFrom(checked)
    created = events.CreateEvent(
        event_service_pb2.CreateEventRequest(event=event), metadata=auth(keys.writer)
    ).event

    assert created.custom_fields["pressure"].double_value == 4.0
    assert created.custom_fields["checked"].timestamp_value == checked
    read = events.GetEvent(
        event_service_pb2.GetEventRequest(id=created.id), metadata=auth(keys.read)
    ).event
    assert read.custom_fields == created.custom_fields
    change = event_pb2.Event(etag=1)
    change.custom_fields["pressure"].double_value = 5.5
    updated = events.UpdateEvent(
        event_service_pb2.UpdateEventRequest(
            id=created.id, event=change, update_fields=["custom_fields"]
        ),
        metadata=auth(keys.writer),
    ).event
    assert updated.custom_fields["pressure"].double_value == 5.5
    assert updated.custom_fields["checked"].timestamp_value == checked

    missing = event_pb2.Event(type_id=kind.id)
    missing.custom_fields["unknown"].boolean_value = True
    with pytest.raises(grpc.RpcError) as caught:
        events.CreateEvent(
            event_service_pb2.CreateEventRequest(event=missing), metadata=auth(keys.writer)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = grpc_violations(caught.value)
    assert found["pressure"].startswith("required")
    assert found["unknown"].startswith("unknown field: unknown")


def test_event_type_errors_over_grpc(channel: grpc.Channel, keys: Keys) -> None:
    types = event_type_service_pb2_grpc.EventTypeServiceStub(channel)
    created = types.CreateEventType(
        event_type_service_pb2.CreateEventTypeRequest(
            event_type=event_type_pb2.EventType(name="x")
        ),
        metadata=auth(keys.writer),
    ).event_type

    with pytest.raises(grpc.RpcError) as caught:
        types.UpdateEventType(
            event_type_service_pb2.UpdateEventTypeRequest(
                id=created.id, event_type=event_type_pb2.EventType(name="y", etag=5)
            ),
            metadata=auth(keys.writer),
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError) as caught:
        types.GetEventType(
            event_type_service_pb2.GetEventTypeRequest(id=created.id),
            metadata=auth(keys.other_tenant),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        types.CreateEventType(
            event_type_service_pb2.CreateEventTypeRequest(
                event_type=event_type_pb2.EventType(
                    name="z", fields=[event_type_pb2.FieldDefinition(name="code")]
                )
            ),
            metadata=auth(keys.writer),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(grpc_violations(caught.value)) == {"fields[0].type"}
    types.DeleteEventType(
        event_type_service_pb2.DeleteEventTypeRequest(id=created.id, etag=1),
        metadata=auth(keys.writer),
    )
