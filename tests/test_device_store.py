"""The device registry and device reports in the store, on SQLite and PostgreSQL: the duplicate
rule enforced by the database, pending reports, tenant scoping; and the admin commands."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from helpers import DEVICE_APP, DEVICE_REPORT, rows
from persistence.store import Store
from service.cli import main
from service.domain.access import Principal, Role
from service.domain.device_events import DeviceEventReporter, check_report
from service.domain.errors import AlreadyExists, PermissionDenied
from service.domain.registry import RegistryManager

# The documented report as parsed: its timestamp in microseconds.
REPORT = {**DEVICE_REPORT, "timestamp": DEVICE_REPORT["timestamp"] * 1000}


def admin(tenant: str = "acme", domain: str = "/") -> Principal:
    return Principal(tenant_id=tenant, key_id="k1", name="tester", role=Role.ADMIN, domain=domain)


@pytest.fixture
def registered(store: Store) -> Store:
    """Tenants acme and globex; acme has device dev-1 in /root/sub1 and the documented app."""

    async def register() -> None:
        registry = RegistryManager(store.registry)
        await registry.create_device(admin(), "dev-1", "/root/sub1")
        await registry.create_app(admin(), DEVICE_APP)
        await registry.create_device(admin("globex"), "g-1")

    store.keys.create_tenant("acme", "Acme")
    store.keys.create_tenant("globex", "Globex")
    asyncio.run(register())
    return store


def report_events(store: Store, **changes: Any) -> list[Any]:
    """Reports REPORT (with `changes`) several times at once; returns each outcome."""
    reporter = DeviceEventReporter(store.registry, store.device_events)

    async def report_all(times: int) -> list[Any]:
        device = await reporter.check_access(admin(), "acme", "dev-1")
        return await asyncio.gather(
            *(reporter.report(admin(), device, {**REPORT, **changes}) for _ in range(times)),
            return_exceptions=True,
        )

    return asyncio.run(report_all(changes.pop("times", 1)))


def test_identical_reports_at_once_store_one_event(registered: Store) -> None:
    outcomes = report_events(registered, times=5)

    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    duplicates = [o for o in outcomes if isinstance(o, AlreadyExists)]
    assert len(stored) == 1 and len(duplicates) == 4
    assert {d.existing_id for d in duplicates} == {stored[0][0].id}
    assert rows(registered, "SELECT id FROM events") == [(stored[0][0].id,)]


def test_the_database_refuses_a_second_row_of_the_same_report(registered: Store) -> None:
    report_events(registered)

    def insert_copy(db: Any) -> None:
        # Columns named: later migrations (the live feed's seq) add columns to events.
        columns = (
            "id, tenant_id, type_id, correlation_id, entity_type, entity_id, domain, ts, "
            "create_time, update_time, etag, severity, code, description, source, "
            "classification, category, ack_required, acknowledged, acknowledged_at, "
            "acknowledged_by, app_id, internal, payload_type, payload_data, custom, report_hash"
        )
        db.execute_sql(
            f"INSERT INTO events ({columns}) "
            "SELECT 'copy', tenant_id, type_id, correlation_id, entity_type, "
            "entity_id, domain, ts, create_time, update_time, etag, severity, code, description,"
            " source, classification, category, ack_required, acknowledged, acknowledged_at, "
            "acknowledged_by, app_id, internal, payload_type, payload_data, custom, report_hash "
            "FROM events"
        )

    with pytest.raises(Exception, match=r"(?i)unique"):
        registered.run_sync(insert_copy)


def test_other_data_or_other_events_are_no_duplicates(registered: Store) -> None:
    report_events(registered)
    report_events(registered, data={**REPORT["data"], "version": 2})
    report_events(registered, severity=4)
    ordinary = asyncio.run(_create_plain_event(registered, entity_id="dev-1", type_id="0045"))

    # Three reports that differ in data or severity, and two plain events of that device, type
    # and time, which carry no report hash.
    assert len(rows(registered, "SELECT id FROM events")) == 5
    assert rows(registered, f"SELECT report_hash FROM events WHERE id = '{ordinary}'") == [(None,)]


async def _create_plain_event(store: Store, **fields: Any) -> str:
    from service.domain.events import Event

    event = Event(id="plain-1", tenant_id="acme", timestamp=REPORT["timestamp"], **fields)
    await store.events.insert(event)
    await store.events.insert(
        Event(id="plain-2", tenant_id="acme", timestamp=REPORT["timestamp"], **fields)
    )
    return event.id


def test_pending_reports_become_events_and_duplicates_are_dropped(registered: Store) -> None:
    reporter = DeviceEventReporter(registered.registry, registered.device_events)

    async def scenario() -> tuple[Any, ...]:
        device = await reporter.check_access(admin(), "acme", "dev-1")
        first, pending = await reporter.report(admin(), device, REPORT, respond_async=True)
        with pytest.raises(AlreadyExists) as again:
            await reporter.report(admin(), device, REPORT, respond_async=True)
        # A synchronous twin stored meanwhile wins; the pending one is then dropped.
        other = {**REPORT, "timestamp": REPORT["timestamp"] + 1000}
        await reporter.report(admin(), device, other, respond_async=True)
        twin, _ = await reporter.report(admin(), device, other)
        return first, pending, again.value, twin, await reporter.process_pending()

    first, pending, again, twin, processed = asyncio.run(scenario())

    assert pending and again.existing_id == first.id
    assert processed == (1, 1)
    stored = rows(registered, "SELECT id, payload_data FROM events ORDER BY ts")
    assert [r[0] for r in stored] == [first.id, twin.id]
    assert json.loads(bytes(stored[0][1])) == REPORT["data"]
    assert rows(registered, "SELECT id FROM pending_device_events") == []


def test_registry_is_scoped_to_the_principals_tenant_and_domain(registered: Store) -> None:
    registry = RegistryManager(registered.registry)

    async def scenario() -> tuple[Any, ...]:
        acme = [d.id for d in await registry.list_devices(admin())]
        globex = [d.id for d in await registry.list_devices(admin("globex"))]
        sub2 = [d.id for d in await registry.list_devices(admin(domain="/root/sub2"))]
        with pytest.raises(AlreadyExists):
            await registry.create_device(admin(), "dev-1")
        with pytest.raises(PermissionDenied):
            await registry.disable_device(admin(domain="/root/sub2"), "dev-1")
        apps = await registry.list_apps(admin("globex"))
        return acme, globex, sub2, apps

    assert asyncio.run(scenario()) == (["dev-1"], ["g-1"], [], [])


def test_a_domain_limited_admin_registers_only_inside_its_subtree(registered: Store) -> None:
    registry = RegistryManager(registered.registry)
    sub1 = admin(domain="/root/sub1")

    async def scenario() -> tuple[Any, ...]:
        created = await registry.create_device(sub1, "dev-sub1x")
        with pytest.raises(PermissionDenied):
            await registry.create_device(sub1, "dev-sub2x", "/root/sub2")
        await registry.create_device(admin(), "dev-sub10", "/root/sub10")
        return created.domain, [d.id for d in await registry.list_devices(sub1)]

    assert asyncio.run(scenario()) == ("/root/sub1", ["dev-1", "dev-sub1x"])


def test_fingerprint_ignores_key_order_and_keeps_json_types() -> None:
    base = check_report(REPORT)
    reordered = check_report(
        {**REPORT, "data": {"active": True, "version": 2.5, "source": "Software"}}
    )
    as_int = check_report({**REPORT, "data": {**REPORT["data"], "version": 2}})
    as_float = check_report({**REPORT, "data": {**REPORT["data"], "version": 2.0}})

    assert base.fingerprint() == reordered.fingerprint()
    assert as_int.fingerprint() != as_float.fingerprint()


def test_admin_commands_manage_devices_and_apps(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"

    def run(*args: str) -> tuple[int, str]:
        code = main(["--database", url, "--log-level", "WARNING", "admin", *args])
        return code, capsys.readouterr().out

    assert run("create-device", "--tenant", "acme", "d1")[0] == 1  # no such tenant yet
    run("create-tenant", "acme")
    assert run("create-device", "--tenant", "acme", "d1", "--domain", "/root/sub1")[0] == 0
    assert run("create-device", "--tenant", "acme", "d2")[0] == 0
    assert run("create-device", "--tenant", "acme", "d1")[0] == 2  # exists already
    assert run("disable-device", "--tenant", "acme", "d2") == (0, "device d2 disabled\n")
    assert run("list-devices", "--tenant", "acme")[1].splitlines() == [
        "d1  /root/sub1  Device  enabled",
        "d2  /  Device  disabled",
    ]
    assert run("create-app", "--tenant", "acme", DEVICE_APP, "--name", "Seed app")[0] == 0
    assert run("disable-app", "--tenant", "acme", DEVICE_APP)[0] == 0
    assert run("list-apps", "--tenant", "acme")[1] == f"{DEVICE_APP}  Seed app  licence inactive\n"
    assert run("disable-app", "--tenant", "acme", "nope")[0] == 2
