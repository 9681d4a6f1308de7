"""The web console at `GET /console`, served by the real Envoy, driven in a real headless
browser (Debian's chromium through playwright): sign in with an API key, or as a user with a
username and password (and out again), the live tail with its filters and its resume after
the server and gateway restart, the list with the JSON filter and paging, acknowledging from
the list, one event's detail. Screenshots are kept in the test's tmp dir (and in
EVENTMGMT_SCREENSHOT_DIR when set)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Service

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
# Flags that work on these machines: no sandbox (root), no GPU, nothing phoning home.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # a bound for the page to show something, never a timing assertion


def chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: install chromium ({CHROMIUM}); .ci/run does")
    pytest.skip("no chromium: apt-get install chromium to run the browser test")


@pytest.fixture
def console_service(tmp_path: Path) -> Iterator[Service]:
    """Its own server and gateway: the test restarts them under the open page."""
    running = Service(f"sqlite:///{tmp_path / 'events.db'}", tmp_path)
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile for every test
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            opened = context.new_page()
            opened.set_default_timeout(WAIT_MS)
            yield opened
        finally:
            context.close()


class Screenshots:
    def __init__(self, page: Any, directory: Path) -> None:
        self.page = page
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> Path:
        path = self.directory / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        extra = os.environ.get("EVENTMGMT_SCREENSHOT_DIR")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path


def post_event(service: Service, key: str, **fields: Any) -> dict[str, Any]:
    answer = service.request("POST", "/events", fields, key)
    assert answer.status == 201, answer.body
    return dict(answer.json())


def live_ids(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all("#live-table tbody tr", "rows => rows.map(r => r.dataset.id)")
    )


def test_console_in_a_real_browser(console_service: Service, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    service = console_service
    key = service.create_key("acme", "ReadWrite")
    shots = Screenshots(page, tmp_path / "screenshots")

    # Served by the gateway, from the repo's static files.
    answer = service.request("GET", "/console")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert service.request("GET", "/console/console.js").status == 200

    page.goto(f"{service.rest_url}/console")
    page.fill("#api-key", "not-a-key")
    page.click("#sign-in-button")
    expect(page.locator("#error")).to_contain_text("not valid")
    page.fill("#api-key", key)
    page.click("#sign-in-button")
    expect(page.locator("#tabs")).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#live-status")).to_have_text("live")

    # The live tail, filtered by domain and severity.
    page.fill("#live-domain", "/plant")
    page.check("#live-severities input[value='1']")
    page.check("#live-severities input[value='2']")
    page.click("#live-apply")
    expect(page.locator("#live-status")).to_have_text("live")
    first = post_event(
        service,
        key,
        description="pump on fire",
        domain="/plant/a",
        severity=1,
        entityType="Device",
        entityId="pump-1",
    )
    post_event(service, key, description="elsewhere", domain="/other", severity=1, entityId="e-1")
    post_event(service, key, description="too mild", domain="/plant", severity=4, entityId="e-2")
    second = post_event(
        service, key, description="<b>motor</b> hot", domain="/plant/b", severity=2, entityId="m-3"
    )
    expect(page.locator("#live-table tbody tr")).to_have_count(2)
    assert live_ids(page) == [second["id"], first["id"]]
    # Text stays text: a description with markup is not rendered as HTML.
    expect(page.locator("#live-table tbody tr").first).to_contain_text("<b>motor</b> hot")

    # A network drop: server and gateway go away and come back on the same ports. The feed
    # reconnects with the last cursor it saw: what was committed meanwhile arrives once.
    service.stop()
    expect(page.locator("#live-status")).to_have_text("reconnecting")
    service.start()
    third = post_event(
        service, key, description="after the drop", domain="/plant", severity=1, entityId="e-4"
    )
    expect(page.locator("#live-table tbody tr")).to_have_count(3)
    expect(page.locator("#live-status")).to_have_text("live")
    assert live_ids(page) == [third["id"], second["id"], first["id"]]
    shots.take("console-live")

    # The type filter: only events of the named type.
    created = service.request("POST", "/eventTypes", {"name": "Door", "fields": []}, key)
    assert created.status == 201, created.body
    door_type = created.json()["id"]
    page.fill("#live-domain", "")
    page.uncheck("#live-severities input[value='1']")
    page.uncheck("#live-severities input[value='2']")
    page.fill("#live-types", door_type)
    page.click("#live-apply")
    expect(page.locator("#live-table tbody tr")).to_have_count(0)
    expect(page.locator("#live-status")).to_have_text("live")
    post_event(service, key, description="standard event", severity=3, entityId="e-5")
    door = post_event(service, key, description="door open", typeId=door_type, entityId="door-1")
    expect(page.locator("#live-table tbody tr")).to_have_count(1)
    assert live_ids(page) == [door["id"]]

    # The list: the JSON filter and paging.
    entity = f"lister-{uuid.uuid4().hex[:8]}"
    listed = [
        post_event(
            service,
            key,
            description=f"reading {n:02d}",
            entityId=entity,
            severity=3,
            timestamp=f"2026-11-30T10:{n:02d}:00Z",
        )
        for n in range(25)
    ]
    page.click("#tabs button[data-view='list']")
    page.fill("#list-filter", f'{{"entityId": "{entity}"}}')
    page.select_option("#list-size", "10")
    page.click("#list-search")
    expect(page.locator("#list-page")).to_have_text("page 1 of 3 · 25 events")
    expect(page.locator("#list-table tbody tr")).to_have_count(10)
    expect(page.locator("#list-table tbody tr").first).to_contain_text("reading 24")
    expect(page.locator("#list-prev")).to_be_disabled()
    page.click("#list-next")
    expect(page.locator("#list-page")).to_have_text("page 2 of 3 · 25 events")
    expect(page.locator("#list-table tbody tr").first).to_contain_text("reading 14")
    page.click("#list-next")
    expect(page.locator("#list-table tbody tr")).to_have_count(5)
    expect(page.locator("#list-next")).to_be_disabled()
    page.click("#list-prev")
    expect(page.locator("#list-page")).to_have_text("page 2 of 3 · 25 events")
    page.click("#list-prev")
    expect(page.locator("#list-page")).to_have_text("page 1 of 3 · 25 events")

    # Acknowledge from the list.
    newest = listed[-1]["id"]
    row = page.locator(f"#list-table tbody tr[data-id='{newest}']")
    row.locator("button.ack").click()
    expect(row.locator(".ack-cell")).to_have_text("✓ test-key")
    stored = service.request("GET", f"/events/{newest}", key=key).json()
    assert stored["acknowledged"] is True and stored["acknowledgedBy"] == "test-key"
    shots.take("console-list")

    # One event's detail, reached from the list.
    page.locator(f"#list-table tbody tr[data-id='{listed[-2]['id']}'] td").nth(5).click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text("reading 23")
    expect(page.locator("#detail-fields tr[data-field='id'] td")).to_have_text(listed[-2]["id"])
    expect(page.locator("#detail-fields tr[data-field='entityId'] td")).to_have_text(entity)
    expect(page.locator("#detail-ack")).to_be_visible()
    page.click("#detail-ack")
    expect(page.locator("#detail-fields tr[data-field='acknowledged'] td")).to_have_text("true")
    shots.take("console-detail")
    page.click("#detail-back")
    expect(page.locator("#list")).to_be_visible()

    # A bad filter is the server's 400, shown with the field it names.
    page.fill("#list-filter", '{"severity": {"nope": 1}}')
    page.click("#list-search")
    expect(page.locator("#error")).to_contain_text("400")
    assert all(p.stat().st_size > 0 for p in (tmp_path / "screenshots").iterdir())


def test_console_signs_in_a_user_and_out_again(
    console_service: Service, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    service = console_service
    service.cli("admin", "create-tenant", "acme")
    username = f"u{uuid.uuid4().hex[:8]}"
    password = "correct horse battery staple"
    service.cli(
        "admin", "users", "create", username, "--tenant", "acme", "--role", "ReadWrite",
        "--password-stdin",
        input=password + "\n",
    )  # fmt: skip
    key = service.create_key("acme", "ReadWrite")
    shots = Screenshots(page, tmp_path / "screenshots")

    page.goto(f"{service.rest_url}/console")
    page.fill("#username", username)
    page.fill("#password", "not the password")
    page.click("#sign-in-user-button")
    expect(page.locator("#error")).to_contain_text("Wrong username or password")
    page.fill("#password", password)
    page.click("#sign-in-user-button")
    expect(page.locator("#tabs")).to_be_visible()
    expect(page.locator("#signed-in-as")).to_contain_text(f"{username} (ReadWrite, acme)")
    expect(page.locator("#live-status")).to_have_text("live")
    token = page.evaluate("sessionStorage.getItem('eventmgmt.token')")
    assert token and token.startswith("eyJ")

    posted = post_event(service, key, description="seen by a user", entityId="pump-9")
    expect(page.locator(f"#live-table tbody tr[data-id='{posted['id']}']")).to_be_visible()
    # Acknowledging from the console acts as the user.
    page.click("button[data-view='list']")
    row = page.locator(f"#list-table tbody tr[data-id='{posted['id']}']")
    row.locator("button.ack").click()
    expect(row.locator(".ack-cell")).to_contain_text(username)
    shots.take("signed-in-user")

    page.click("#sign-out")
    expect(page.locator("#sign-in-user-form")).to_be_visible()
    # Signing out ended the session on the server.
    answer = service.request("GET", "/events", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 401, answer.body


def test_console_shows_alarms_their_count_and_acknowledges_and_clears_them(
    console_service: Service, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    service = console_service
    key = service.create_key("acme", "ReadWrite")
    shots = Screenshots(page, tmp_path / "screenshots")
    page.goto(f"{service.rest_url}/console")
    page.fill("#api-key", key)
    page.click("#sign-in-button")
    expect(page.locator("#live-status")).to_have_text("live")

    entity = f"pump-{uuid.uuid4().hex[:8]}"
    alarm = {"classification": "ALARM", "entityId": entity, "code": "hot", "severity": 1}
    first = post_event(service, key, description="pump hot", **alarm)
    repeated = service.request("POST", "/events", {"description": "pump hot", **alarm}, key)
    assert repeated.status == 200 and repeated.json()["count"] == 2, repeated.body
    other = post_event(service, key, description="pump loud", **{**alarm, "code": "loud"})
    live_row = page.locator(f"#live-table tbody tr[data-id='{first['id']}']")
    expect(live_row.locator(".live-status")).to_have_text("ACTIVE")

    # The list shows each alarm's status and count, and what can be done next.
    page.click("#tabs button[data-view='list']")
    page.fill("#list-filter", f'{{"entityId": "{entity}"}}')
    page.click("#list-search")
    row = page.locator(f"#list-table tbody tr[data-id='{first['id']}']")
    expect(row.locator(".alarm-cell")).to_contain_text("ACTIVE")
    expect(row.locator(".count")).to_have_text("\u00d72")  # the multiplication sign, then 2
    row.locator("button.ack").click()
    expect(row.locator(".alarm")).to_have_text("ACKNOWLEDGED")
    expect(row.locator("button.ack")).to_have_count(0)
    row.locator("button.clear").click()
    expect(row.locator(".alarm")).to_have_text("CLEARED")
    expect(row.locator("button")).to_have_count(0)
    stored = service.request("GET", f"/events/{first['id']}", key=key).json()
    assert (stored["status"], stored["clearedBy"], stored["count"]) == ("CLEARED", "test-key", 2)
    shots.take("console-alarms")

    # The live tail heard both transitions.
    page.click("#tabs button[data-view='live']")
    expect(live_row.locator(".live-status")).to_have_text("CLEARED")

    # Cleared from its detail page; a cleared alarm offers no Clear.
    page.click("#tabs button[data-view='list']")
    page.click("#list-search")
    page.locator(f"#list-table tbody tr[data-id='{other['id']}'] td").nth(5).click()
    expect(page.locator("#detail-clear")).to_be_visible()
    page.click("#detail-clear")
    expect(page.locator("#detail-fields tr[data-field='status'] td")).to_have_text("CLEARED")
    expect(page.locator("#detail-clear")).to_be_hidden()
    assert service.request("GET", f"/events/{other['id']}", key=key).json()["status"] == "CLEARED"
