"""Sharing (docs/rest-v3.md#sharing): a tenant shares an entity; the receiver reads its events only
when it asks for shared events, and can never change, acknowledge or delete them."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from service.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    sharing_service_pb2,
    sharing_service_pb2_grpc,
)

if TYPE_CHECKING:
    from helpers import Keys, Service

pytestmark = pytest.mark.integration


def reason(body: dict[str, Any]) -> str:
    return next(d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo"))


def shared_event(service: Service, keys: Keys) -> tuple[str, str]:
    """An acme event of a fresh entity, shared with globex (the other tenant)."""
    entity = f"asset-{uuid.uuid4().hex[:8]}"
    event = service.request(
        "POST", "/events", {"entityId": entity, "description": "shared"}, key=keys.writer
    ).json()
    answer = service.request(
        "POST", "/sharedEntities", {"entityId": entity, "tenantId": "globex"}, key=keys.admin
    )
    assert answer.status == 201, answer.body
    assert answer.json()["share"]["ownerTenantId"] == "acme"
    return entity, event["id"]


def test_receiver_reads_shared_events_only_when_asking(service: Service, keys: Keys) -> None:
    entity, event_id = shared_event(service, keys)
    unshared = service.request(
        "POST", "/events", {"entityId": "not-shared"}, key=keys.writer
    ).json()

    assert service.request("GET", f"/events/{event_id}", key=keys.other_tenant).status == 404
    seen = service.request("GET", f"/events/{event_id}?includeShared=true", key=keys.other_tenant)
    assert seen.status == 200
    assert seen.json()["entityId"] == entity
    assert (
        service.request(
            "GET", f"/events/{unshared['id']}?includeShared=true", key=keys.other_tenant
        ).status
        == 404
    )


def test_shared_events_are_read_only(service: Service, keys: Keys) -> None:
    entity, event_id = shared_event(service, keys)

    update = service.request(
        "PUT", f"/events/{event_id}", {"description": "mine now"}, key=keys.other_tenant
    )
    assert update.status == 403 and reason(update.json()) == "SHARED_EVENT_READ_ONLY"
    acknowledge = service.request("POST", f"/events/{event_id}/acknowledge", key=keys.other_tenant)
    assert acknowledge.status == 403 and reason(acknowledge.json()) == "SHARED_EVENT_READ_ONLY"

    job = service.request(
        "POST", "/deleteEventsJobs", {"filter": {"entityId": entity}}, key=keys.other_tenant
    ).json()
    deadline = time.monotonic() + 30
    while (
        service.request("GET", f"/deleteEventsJobs/{job['id']}", key=keys.other_tenant).json()[
            "state"
        ]
        != "FINISHED"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stored = service.request("GET", f"/events/{event_id}", key=keys.read).json()
    assert stored["description"] == "shared" and stored["acknowledged"] is False


def test_unsharing_ends_access(service: Service, keys: Keys) -> None:
    entity, event_id = shared_event(service, keys)
    listed = service.request("GET", "/sharedEntities", key=keys.other_tenant).json()["shares"]
    assert {"entityId": entity, "tenantId": "globex", "ownerTenantId": "acme"}.items() <= next(
        s for s in listed if s["entityId"] == entity
    ).items()

    gone = service.request("DELETE", f"/sharedEntities/{entity}/tenants/globex", key=keys.admin)
    assert gone.status == 200
    assert (
        service.request(
            "GET", f"/events/{event_id}?includeShared=true", key=keys.other_tenant
        ).status
        == 404
    )
    again = service.request("DELETE", f"/sharedEntities/{entity}/tenants/globex", key=keys.admin)
    assert again.status == 404 and reason(again.json()) == "SHARE_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "status", "why"),
    [
        ({"entityId": "e", "tenantId": "acme"}, 400, "INVALID_ARGUMENT"),
        ({"entityId": "e", "tenantId": "no-such-tenant"}, 404, "TENANT_NOT_FOUND"),
        ({"entityId": "", "tenantId": "globex"}, 400, "INVALID_ARGUMENT"),
        ({"entityId": "e", "tenantId": "globex", "expires": "never"}, 400, "INVALID_ARGUMENT"),
        (
            {"entityId": "e", "tenantId": "globex", "ownerTenantId": "globex"},
            400,
            "INVALID_ARGUMENT",
        ),
    ],
)
def test_bad_shares_are_refused(
    service: Service, keys: Keys, body: dict[str, str], status: int, why: str
) -> None:
    answer = service.request("POST", "/sharedEntities", body, key=keys.admin)

    assert answer.status == status
    assert reason(answer.json()) == why


def test_only_admins_share_and_only_once(service: Service, keys: Keys) -> None:
    entity, _ = shared_event(service, keys)
    body = {"entityId": entity, "tenantId": "globex"}

    twice = service.request("POST", "/sharedEntities", body, key=keys.admin)
    assert twice.status == 409 and reason(twice.json()) == "SHARE_EXISTS"
    assert service.request("POST", "/sharedEntities", body, key=keys.writer).status == 403
    assert (
        service.request(
            "DELETE", f"/sharedEntities/{entity}/tenants/globex", key=keys.writer
        ).status
        == 403
    )


def test_sharing_over_grpc(service: Service, keys: Keys) -> None:
    entity = f"grpc-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(service.grpc_target) as channel:
        events = event_service_pb2_grpc.EventServiceStub(channel)
        sharing = sharing_service_pb2_grpc.SharingServiceStub(channel)
        created = service.request("POST", "/events", {"entityId": entity}, key=keys.writer).json()
        share = sharing.ShareEntity(
            sharing_service_pb2.ShareEntityRequest(
                share=sharing_service_pb2.EntityShare(entity_id=entity, tenant_id="globex")
            ),
            metadata=(("x-api-key", keys.admin),),
        ).share
        assert share.owner_tenant_id == "acme" and share.create_time.seconds > 0

        with pytest.raises(grpc.RpcError) as hidden:
            events.GetEvent(
                event_service_pb2.GetEventRequest(id=created["id"]),
                metadata=(("x-api-key", keys.other_tenant),),
            )
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        seen = events.GetEvent(
            event_service_pb2.GetEventRequest(id=created["id"], include_shared=True),
            metadata=(("x-api-key", keys.other_tenant),),
        )
        assert seen.event.tenant_id == "acme"
        assert seen.event.entity_id == entity


# --- shares are bounded by the sharer's domain subtree --------------------------------------


@pytest.fixture(scope="module")
def subtree_admins(service: Service) -> dict[str, str]:
    """Admin keys of acme limited to /root/sub1 and /root/sub2."""
    return {
        sub: service.create_key("acme", "Admin", f"/root/{sub}", name=f"{sub}-admin")
        for sub in ("sub1", "sub2")
    }


def entity_in_both_subtrees(service: Service, keys: Keys) -> tuple[str, dict[str, str]]:
    """A fresh entity with one acme event in /root/sub1/a and one in /root/sub2: event ids
    by subtree."""
    entity = f"asset-{uuid.uuid4().hex[:8]}"
    ids = {}
    for sub, domain in (("sub1", "/root/sub1/a"), ("sub2", "/root/sub2")):
        created = service.request(
            "POST", "/events", {"entityId": entity, "domain": domain}, key=keys.writer
        )
        assert created.status == 201, created.body
        ids[sub] = created.json()["id"]
    return entity, ids


def shared_ids(service: Service, keys: Keys, entity: str) -> set[str]:
    """The ids of the entity's events that globex reads as shared."""
    query = urllib.parse.quote(json.dumps({"entityId": entity}))
    answer = service.request(
        "GET", f"/events?includeShared=true&filter={query}", key=keys.other_tenant
    )
    assert answer.status == 200, answer.body
    return {e["id"] for e in answer.json()["_embedded"]["events"]}


def test_a_subtree_admin_shares_only_the_events_of_its_subtree(
    service: Service, keys: Keys, subtree_admins: dict[str, str]
) -> None:
    entity, ids = entity_in_both_subtrees(service, keys)

    share = service.request(
        "POST",
        "/sharedEntities",
        {"entityId": entity, "tenantId": "globex"},
        key=subtree_admins["sub1"],
    )

    assert share.status == 201, share.body
    assert share.json()["share"]["domain"] == "/root/sub1"
    assert shared_ids(service, keys, entity) == {ids["sub1"]}
    hidden = f"/events/{ids['sub2']}?includeShared=true"
    assert service.request("GET", hidden, key=keys.other_tenant).status == 404
    # Find is bounded the same way.
    found = service.request(
        "POST",
        "/events/find?includeShared=true",
        {"query": {"term": {"entityId": entity}}},
        key=keys.other_tenant,
    )
    assert found.status == 200, found.body
    assert {h["_id"] for h in found.json()["hits"]["hits"]} == {ids["sub1"]}

    # A second subtree's admin shares the same entity on its own; the receiver sees both.
    second = service.request(
        "POST",
        "/sharedEntities",
        {"entityId": entity, "tenantId": "globex"},
        key=subtree_admins["sub2"],
    )
    assert second.status == 201, second.body
    assert shared_ids(service, keys, entity) == set(ids.values())


def test_listing_and_unsharing_stay_inside_the_callers_subtree(
    service: Service, keys: Keys, subtree_admins: dict[str, str]
) -> None:
    entity, ids = entity_in_both_subtrees(service, keys)
    body = {"entityId": entity, "tenantId": "globex"}
    assert service.request("POST", "/sharedEntities", body, key=keys.admin).status == 201

    def listed(key: str) -> list[dict[str, str]]:
        answer = service.request("GET", "/sharedEntities", key=key)
        assert answer.status == 200, answer.body
        return [s for s in answer.json().get("shares", []) if s["entityId"] == entity]

    assert [s["domain"] for s in listed(keys.admin)] == ["/"]
    assert listed(subtree_admins["sub1"]) == []
    # The receiver sees the share, without the owner's domain paths.
    assert [s.get("domain", "") for s in listed(keys.other_tenant)] == [""]

    path = f"/sharedEntities/{entity}/tenants/globex"
    refused = service.request("DELETE", path, key=subtree_admins["sub1"])
    assert refused.status == 404 and reason(refused.json()) == "SHARE_NOT_FOUND"
    assert shared_ids(service, keys, entity) == set(ids.values())

    assert (
        service.request("POST", "/sharedEntities", body, key=subtree_admins["sub1"]).status == 201
    )
    assert [s["domain"] for s in listed(subtree_admins["sub1"])] == ["/root/sub1"]
    assert service.request("DELETE", path, key=subtree_admins["sub1"]).status == 200
    assert [s["domain"] for s in listed(keys.admin)] == ["/"]
    # A whole-tenant admin ends every share of the entity, whichever key made it.
    assert (
        service.request("POST", "/sharedEntities", body, key=subtree_admins["sub1"]).status == 201
    )
    assert service.request("DELETE", path, key=keys.admin).status == 200
    assert listed(keys.admin) == []
    assert shared_ids(service, keys, entity) == set()
