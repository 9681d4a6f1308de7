"""The platform's existing clients (seed 003's Event Management API), end to end through the
real Envoy: every path also under `/api/eventmanagement/v3`, with a bearer token, and links
that keep the base path the request came in on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Keys, Response, Service

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


def test_every_seed_003_path_is_served_under_the_base_path(service: Service, keys: Keys) -> None:
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
