"""The platform's existing clients (the v3 Event Management API, docs/rest-v3.md), end to end
through the real Envoy: every path also under `/api/eventmanagement/v3`, with a bearer token, and
links that keep the base path the request came in on."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from helpers import DOCUMENTED_EVENT, STANDARD_EVENT_ID
from service.domain.access import Principal, Role
from service.domain.live import subscription_filter

if TYPE_CHECKING:
    from helpers import Keys, Response, Service

pytestmark = pytest.mark.integration

API_BASE = "/api/eventmanagement/v3"
BASES = ["", API_BASE]


class Client:
    """What a platform SDK sends: a base path, a bearer token, JSON."""

    def __init__(self, service: Service, key: str, base: str) -> None:
        self.service, self.key, self.base = service, key, base

    @property
    def origin(self) -> str:
        return self.service.rest_url + self.base

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        all_headers = {"Authorization": f"Bearer {self.key}", **(headers or {})}
        return self.service.request(method, self.base + path, body, headers=all_headers)

    def list_events(self, event_filter: dict[str, Any], extra: str = "") -> dict[str, Any]:
        answer = self.call("GET", f"/events?filter={quote(json.dumps(event_filter))}{extra}")
        assert answer.status == 200, answer.body
        return dict(answer.json())

    def finished_job(self, location: str, timeout: float = 60) -> dict[str, Any]:
        path = location.removeprefix(self.origin)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.call("GET", path).json()
            if status["state"] in ("FINISHED", "FINISHED_WITH_ERROR"):
                return dict(status)
            time.sleep(0.05)
        raise AssertionError(f"job {path} did not finish in {timeout} s")


@pytest.mark.parametrize("base", BASES)
def test_links_and_location_keep_the_base_path(service: Service, keys: Keys, base: str) -> None:
    client = Client(service, keys.writer, base)

    created = client.call("POST", "/events", {"entityId": "pump-1", "description": "hot"})
    assert created.status == 201, created.body
    event = created.json()
    assert created.headers["location"] == f"{client.origin}/events/{event['id']}"
    assert event["_links"]["self"]["href"] == created.headers["location"]

    page = client.call("GET", "/events?size=1&filter=%7B%22entityId%22%3A%22pump-1%22%7D").json()
    assert page["_links"]["self"]["href"].startswith(f"{client.origin}/events?")
    assert page["_embedded"]["events"][0]["_links"]["self"]["href"].startswith(client.origin)

    job = client.call("POST", "/deleteEventsJobs", {"filter": {"entityId": "no-such-entity"}})
    assert job.status == 201, job.body
    assert job.headers["location"] == f"{client.origin}/deleteEventsJobs/{job.json()['id']}"

    event_type = client.call("POST", "/eventTypes", {"name": "Base path check"})
    assert event_type.status == 201, event_type.body
    type_id = event_type.json()["id"]
    assert event_type.headers["location"] == f"{client.origin}/eventTypes/{type_id}"
    assert client.call("GET", f"/eventTypes/{type_id}").status == 200


def test_every_v3_path_is_served_under_the_base_path(service: Service, keys: Keys) -> None:
    client = Client(service, keys.admin, API_BASE)
    event = client.call("POST", "/events", {"entityId": "pump-2"}).json()

    for method, path, body in [
        ("GET", f"/events/{event['id']}", None),
        ("GET", "/events?includeShared=true", None),
        ("PUT", f"/events/{event['id']}", {"description": "changed"}),
        ("POST", f"/events/{event['id']}/acknowledge", None),
        ("POST", "/events/find", {"query": {"match_all": {}}}),
        ("GET", "/eventTypes", None),
        ("GET", "/sharedEntities", None),
    ]:
        answer = client.call(method, path, body)
        assert answer.status == 200, (method, path, answer.body)
    job = client.call("POST", "/createEventsJobs", {"events": [{"entityId": "pump-2"}]})
    assert job.status == 201, job.body
    assert client.call("GET", f"/createEventsJobs/{job.json()['id']}").status == 200
    # Only the base path is new: a mistyped one still meets the JSON 404.
    assert client.call("GET", "/api/eventmanagement/v2/events").status == 404


@pytest.mark.parametrize("path", ["/", API_BASE + "/", API_BASE])
def test_the_billboard_links_to_the_collections(service: Service, keys: Keys, path: str) -> None:
    answer = service.request("GET", path, headers={"Authorization": f"Bearer {keys.read}"})

    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/hal+json"
    links = answer.json()["_links"]
    origin = service.rest_url + (API_BASE if path.startswith(API_BASE) else "")
    assert links["events"] == {
        "href": f"{origin}/events{{?page,size,sort,filter,history,includeShared}}",
        "templated": True,
    }
    assert links["eventTypes"]["href"] == f"{origin}/eventTypes{{?page,size,sort,filter}}"
    assert links["createEventsJobs"] == {"href": f"{origin}/createEventsJobs"}
    assert links["deleteEventsJobs"] == {"href": f"{origin}/deleteEventsJobs"}
    # Like every call, it needs a key.
    assert service.request("GET", path).status == 401


@pytest.mark.parametrize("type_id", [STANDARD_EVENT_ID, "StandardEvent"])
def test_both_ids_of_the_standard_type_are_accepted_everywhere(
    service: Service, keys: Keys, type_id: str
) -> None:
    client = Client(service, keys.writer, API_BASE)
    entity = f"std-{uuid.uuid4().hex}"
    named = client.call("POST", "/events", {"entityId": entity, "typeId": type_id})
    unnamed = client.call("POST", "/events", {"entityId": entity})
    assert (named.status, unnamed.status) == (201, 201), (named.body, unnamed.body)
    assert named.json()["typeId"] == unnamed.json()["typeId"] == STANDARD_EVENT_ID
    ids = {named.json()["id"], unnamed.json()["id"]}

    for event_filter in (
        {"typeId": type_id, "entityId": entity},
        {"typeId": {"in": [type_id]}, "entityId": entity},
    ):
        page = client.list_events(event_filter)
        assert {e["id"] for e in page["_embedded"]["events"]} == ids, event_filter
    found = client.call(
        "POST",
        "/events/find",
        {
            "query": {
                "bool": {"filter": [{"term": {"type": type_id}}, {"term": {"entityId": entity}}]}
            }
        },
    ).json()
    assert found["hits"]["total"]["value"] == 2

    standard = client.call("GET", f"/eventTypes/{type_id}")
    assert standard.status == 200, standard.body
    assert standard.json()["id"] == STANDARD_EVENT_ID
    assert {f["name"] for f in standard.json()["fields"]} >= {"severity", "code", "description"}
    child = client.call("POST", "/eventTypes", {"name": "Standard's child", "parentId": type_id})
    assert child.status == 201, child.body
    assert child.json()["parentId"] == STANDARD_EVENT_ID

    job = client.call(
        "POST", "/deleteEventsJobs", {"filter": {"typeId": type_id, "entityId": entity}}
    )
    assert job.status == 201, job.body
    done = client.finished_job(job.headers["location"])
    assert done["details"]["resultDescription"] == "2 events deleted."

    principal = Principal(tenant_id="acme", key_id="k", name="n", role=Role.READ, domain="/")
    live = subscription_filter(principal, type_ids=[type_id])
    assert live.type_ids == {STANDARD_EVENT_ID}


def test_type_ids_may_be_128_characters_long(service: Service, keys: Keys) -> None:
    client = Client(service, keys.writer, "")
    long_id = "com.example." + uuid.uuid4().hex + "." + "x" * (128 - 12 - 33)
    assert len(long_id) == 128
    created = client.call("POST", "/eventTypes", {"id": long_id, "name": "Long id"})
    assert created.status == 201, created.body
    event = client.call("POST", "/events", {"entityId": "e", "typeId": long_id})
    assert event.status == 201, event.body
    assert event.json()["typeId"] == long_id
    too_long = client.call("POST", "/eventTypes", {"id": long_id + "y", "name": "Too long"})
    assert too_long.status == 400


# The documented event (docs/rest-v3.md#create-event) without its entity: each session names
# its own.
PLATFORM_EVENT = {k: v for k, v in DOCUMENTED_EVENT.items() if k != "entityId"}


@pytest.mark.parametrize("base", BASES)
def test_a_platform_client_session_replayed(service: Service, keys: Keys, base: str) -> None:
    """The calls an existing client of the platform makes, in its order, with its bodies."""
    client = Client(service, keys.writer, base)
    entity = f"engine-{uuid.uuid4().hex}"
    created = client.call("POST", "/events", {**PLATFORM_EVENT, "entityId": entity})
    assert created.status == 201, created.body
    event = created.json()
    assert (event["typeId"], event["etag"], created.headers["etag"]) == (
        STANDARD_EVENT_ID,
        1,
        '"1"',
    )
    path = f"/events/{event['id']}"
    read = client.call("GET", path)
    assert (read.status, read.headers["etag"], read.json()) == (200, '"1"', event)
    older = {**PLATFORM_EVENT, "entityId": entity, "timestamp": "2018-07-28T06:09:29.745Z"}
    assert client.call("POST", "/events", {**older, "severity": 20}).status == 201

    page = client.list_events(
        # The documented events are from 2018, older than the default window of 7 days.
        {
            "typeId": STANDARD_EVENT_ID,
            "entityId": entity,
            "timestamp": {"after": "2018-07-01T00:00:00Z"},
        },
        "&page=0&size=20&sort=timestamp%2Cdesc&history=true",
    )
    listed = page["_embedded"]["events"]
    assert [e["timestamp"] for e in listed] == [PLATFORM_EVENT["timestamp"], older["timestamp"]]
    assert listed[1]["severity"] == 20
    assert page["page"] == {
        "size": 20,
        "totalElements": 2,
        "totalPages": 1,
        "number": 0,
        "totalElementsRelation": "eq",
    }
    assert page["_links"]["self"]["href"].startswith(f"{client.origin}/events?")

    # GET, modify, PUT the whole document back with If-Match.
    document = read.json()
    document.update(description="Engine restarted", severity=30, acknowledged=True)
    updated = client.call("PUT", path, document, headers={"If-Match": read.headers["etag"]})
    assert updated.status == 200, updated.body
    changed = updated.json()
    assert (changed["etag"], updated.headers["etag"]) == (2, '"2"')
    assert (changed["description"], changed["severity"], changed["acknowledged"]) == (
        "Engine restarted",
        30,
        True,
    )
    assert changed["acknowledgedBy"] == "test-key" and changed["acknowledgedAt"]
    assert "warning" not in updated.headers
    moved = client.call("PUT", path, {**changed, "createTime": "2001-01-01T00:00:00.000Z"})
    assert moved.status == 400
    assert "createTime" in moved.body.decode()

    stale = client.call("PUT", path, {"description": "lost"}, headers={"If-Match": '"1"'})
    assert stale.status == 412, stale.body
    assert "ETAG_MISMATCH" in stale.body.decode()
    assert client.call("GET", path).json() == changed
    not_modified = client.call("GET", path, headers={"If-None-Match": '"2"'})
    assert (not_modified.status, not_modified.body, not_modified.headers["etag"]) == (
        304,
        b"",
        '"2"',
    )
    assert client.call("GET", path, headers={"If-None-Match": '"1"'}).status == 200

    # Parent and child types, as documented (docs/rest-v3.md#custom-event), and a custom event of
    # the child.
    tag = uuid.uuid4().hex
    parent = client.call(
        "POST",
        "/eventTypes",
        {
            "name": f"Parent {tag}",
            "fields": [{"name": "additionalFieldParent", "type": "STRING", "required": True}],
        },
    )
    assert parent.status == 201, parent.body
    assert parent.headers["etag"] == '"1"'
    child = client.call(
        "POST",
        "/eventTypes",
        {
            "id": f"child-{tag}",
            "name": f"Child {tag}",
            "parentId": parent.json()["id"],
            "fields": [{"name": "additionalFieldChild", "type": "STRING"}],
        },
    ).json()
    assert child["owner"] == "acme"
    assert child["_links"]["self"]["href"] == f"{client.origin}/eventTypes/{child['id']}"
    assert child["fields"][0]["updatable"] is True
    types = client.call(
        "GET", f"/eventTypes?filter={quote(json.dumps({'name': f'Parent {tag}'}))}&size=1"
    )
    assert types.status == 200, types.body
    assert [t["id"] for t in types.json()["_embedded"]["eventTypes"]] == [parent.json()["id"]]
    assert types.json()["page"]["totalElements"] == 1

    type_path = f"/eventTypes/{child['id']}"
    renamed = client.call(
        "PUT",
        type_path,
        [{"op": "replace", "path": "/name", "value": f"Renamed {tag}"}],
        headers={"If-Match": '"1"'},
    )
    assert renamed.status == 200, renamed.body
    assert (renamed.json()["name"], renamed.json()["etag"]) == (f"Renamed {tag}", 2)
    patched = client.call(
        "PATCH",
        type_path,
        [{"op": "add", "path": "/fields/-", "value": {"name": "note", "type": "STRING"}}],
        headers={"If-Match": '"2"', "Content-Type": "application/json-patch+json"},
    )
    assert patched.status == 200, patched.body
    assert [f["name"] for f in patched.json()["fields"]] == ["additionalFieldChild", "note"]
    assert patched.headers["etag"] == '"3"'
    stale_patch = client.call(
        "PATCH",
        type_path,
        {"ttl": 7},
        headers={"If-Match": '"2"', "Content-Type": "application/merge-patch+json"},
    )
    assert stale_patch.status == 412, stale_patch.body
    merged = client.call(
        "PATCH",
        type_path,
        {"ttl": 7},
        headers={"If-Match": '"3"', "Content-Type": "application/merge-patch+json"},
    )
    assert (merged.status, merged.json()["ttl"], merged.json()["name"]) == (
        200,
        7,
        f"Renamed {tag}",
    )

    custom = client.call(
        "POST",
        "/events",
        {
            "correlationId": PLATFORM_EVENT["correlationId"],
            "timestamp": "2018-07-29T06:09:29.743Z",
            "entityId": entity,
            "typeId": child["id"],
            "additionalFieldChild": "additionalFieldChildValue",
            "additionalFieldParent": "additionalFieldParentalue",
        },
    )
    assert custom.status == 201, custom.body
    assert custom.json()["additionalFieldParent"] == "additionalFieldParentalue"

    job = client.call(
        "POST",
        "/createEventsJobs",
        {
            "events": [
                {
                    "correlationId": "cd5f73c4-bd67-11e7-abc4-cec278b6b50a",
                    "timestamp": "2018-07-29T12:17:48.454Z",
                    "typeId": child["id"],
                    "additionalFieldParent": "p",
                },
                {
                    "correlationId": "cd5f73c4-bd67-11e7-abc4-cec278b6b50a",
                    "timestamp": "2018-07-29T12:17:48.454Z",
                    "entityId": entity,
                    "typeId": child["id"],
                    "additionalFieldParent": "p",
                },
            ]
        },
    )
    assert job.status == 201, job.body
    results = client.finished_job(job.headers["location"])["details"]["resultDescription"]
    assert [(r["resultCode"], r.get("errorMessage")) for r in results] == [
        ("400", "Missing entity id"),
        ("201", None),
    ]

    delete = client.call(
        "POST", "/deleteEventsJobs", {"filter": {"typeId": STANDARD_EVENT_ID, "entityId": entity}}
    )
    assert delete.status == 201, delete.body
    deleted = client.finished_job(delete.headers["location"])
    assert deleted["details"] == {"resultCode": "200", "resultDescription": "2 events deleted."}

    billboard = client.call("GET", "/")
    assert billboard.json()["_links"]["events"]["href"].startswith(f"{client.origin}/events")


def test_entity_id_is_required_on_v3_paths_but_not_for_grpc_create(
    service: Service, keys: Keys
) -> None:
    client = Client(service, keys.writer, API_BASE)
    missing = client.call("POST", "/events", {"description": "no entity"})
    assert missing.status == 400
    assert missing.json()["message"] == "Missing entity id"
    several = client.call("POST", "/events", {"severity": 101})
    assert "entityId: Missing entity id" in several.json()["message"]
    assert "severity: must be between 0 and 100" in several.json()["message"]
