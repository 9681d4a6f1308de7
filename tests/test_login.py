"""Users and their sessions end to end, on both backends, through Envoy and gRPC: login and
the token on every path beside or instead of an API key, logout, users managed by an Admin
(UserService and `eventmgmt admin users`), revocation that counts at the next call and ends
open streams (also on two replicas), the login throttle, and the audit events all of it
leaves in the tenant's log."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from helpers import (
    BACKENDS,
    EVENTMGMT,
    Service,
    Subscription,
    error_reason,
    grpc_details,
    rest_stream_ends,
)
from persistence.database import open_database
from service.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
WAIT = 30.0


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: Any,
) -> Iterator[Service]:
    """A service of its own with a quick login throttle (lock after 4 failures for 3 s;
    slowed after 2), so that other tests' logins never meet its locks. Every REST client here
    is 127.0.0.1: its address lock is out of reach (see the address test's own server)."""
    data_dir = tmp_path_factory.mktemp(f"login-{request.param}")
    url = (
        f"sqlite:///{data_dir / 'events.db'}"
        if request.param == "sqlite"
        else str(postgres_databases())
    )
    running = Service(
        url,
        data_dir,
        env={
            "EVENTMGMT_LOGIN_LOCK_AFTER": "4",
            "EVENTMGMT_LOGIN_SLOW_AFTER": "2",
            "EVENTMGMT_LOGIN_ADDRESS_LOCK_AFTER": "1000",
            "EVENTMGMT_LOGIN_LOCK_SECONDS": "3",
        },
    )
    running.start()
    yield running
    running.stop()


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def create_user(
    service: Service, tenant: str, role: str = "ReadWrite", *extra: str
) -> tuple[str, str]:
    """A new user of `tenant` (made if missing) through the CLI; returns (username, id)."""
    service.cli("admin", "create-tenant", tenant)
    username = fresh("u")
    line = service.cli(
        "admin", "users", "create", username, "--tenant", tenant, "--role", role,
        "--password-stdin", *extra,
        input=PASSWORD + "\n",
    )  # fmt: skip
    return username, line.split()[0]


def login(service: Service, username: str, password: str = PASSWORD) -> Any:
    return service.request("POST", "/auth/login", {"username": username, "password": password})


def token_of(service: Service, username: str) -> str:
    answer = login(service, username)
    assert answer.status == 200, answer.body
    return str(answer.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored(service: Service, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    database = open_database(service.database_url)
    try:
        sql = sql.replace("?", database.param)
        return [tuple(r) for r in database.execute_sql(sql, args).fetchall()]
    finally:
        database.close()


def audit_events(service: Service, tenant: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(code, entity id, source) of the tenant's internal access events, oldest first."""
    found = stored(
        service,
        "SELECT code, entity_id, source FROM events WHERE tenant_id = ? AND internal = ? "
        "AND code >= '1300' AND code < '1400' ORDER BY seq",
        tenant,
        True,
    )
    return [(code, entity, json.loads(source)) for code, entity, source in found]


def test_login_answers_a_token_that_works_on_rest_and_grpc(served: Service) -> None:
    tenant = fresh("t")
    username, user_id = create_user(served, tenant, "ReadWrite", "--domain", "/root")

    answer = login(served, username)
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["tokenType"] == "Bearer"
    assert body["tenant"] == tenant
    assert body["role"] == "ReadWrite"
    assert body["domains"] == ["/root"]
    assert body["userId"] == user_id and body["username"] == username
    assert "Events.CREATE" in body["privileges"] and "Admin" not in body["privileges"]
    expires = time.mktime(time.strptime(body["expiresAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 3000 < expires - time.mktime(time.gmtime()) <= 3600
    token = body["token"]

    # Bearer and the find API's bare token both work; the event is the user's.
    created = served.request(
        "POST", "/events", {"description": "by a user", "entityId": "e-1", "domain": "/root/a"},
        headers=bearer(token),
    )  # fmt: skip
    assert created.status == 201, created.body
    event_id = created.json()["id"]
    acked = served.request(
        "POST", f"/events/{event_id}/acknowledge", headers={"Authorization": token}
    )
    assert acked.status == 200, acked.body
    assert acked.json()["acknowledgedBy"] == username
    # Outside the user's domain: refused like a key of that domain.
    outside = served.request(
        "POST", "/events", {"description": "x", "entityId": "e-1", "domain": "/other"},
        headers=bearer(token),
    )  # fmt: skip
    assert outside.status == 403, outside.body

    with grpc.insecure_channel(served.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        listed = stub.ListEvents(
            event_service_pb2.ListEventsRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
        assert event_id in [e.id for e in listed.events]
        # gRPC login answers the same.
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        session = auth.Login(
            auth_service_pb2.LoginRequest(
                credentials=auth_service_pb2.LoginCredentials(username=username, password=PASSWORD)
            )
        )
        assert session.tenant == tenant and session.token and session.token != token

    # A garbage or foreign token is 401 with its reason.
    for bad, reason in [
        ("Bearer not-a-token", "TOKEN_INVALID"),
        (token[:-4] + "AAAA", "TOKEN_INVALID"),
    ]:
        refused = served.request("GET", "/events", headers={"Authorization": bad})
        assert refused.status == 401, refused.body
        assert error_reason(refused) == reason


def test_a_token_beside_a_key_is_the_user_calling_through_the_app(served: Service) -> None:
    tenant = fresh("t")
    username, _ = create_user(served, tenant, "ReadWrite")
    token = token_of(served, username)
    reader_key = served.create_key(tenant, "Read")
    other_key = served.create_key(fresh("t"), "Admin")

    # Both valid for the tenant: the narrower of the two applies (the key reads only).
    both = {**bearer(token), "x-api-key": reader_key}
    assert served.request("GET", "/events", headers=both).status == 200
    refused = served.request("POST", "/events", {"description": "x", "entityId": "e"}, headers=both)
    assert refused.status == 403
    assert error_reason(refused) == "MISSING_PRIVILEGE_EVENTS_CREATE"
    mismatch = served.request("GET", "/events", headers={**bearer(token), "x-api-key": other_key})
    assert mismatch.status == 401
    assert error_reason(mismatch) == "CREDENTIALS_TENANT_MISMATCH"
    invalid_key = served.request(
        "GET", "/events", headers={**bearer(token), "x-api-key": "emk_x_y"}
    )
    assert invalid_key.status == 401
    assert error_reason(invalid_key) == "API_KEY_INVALID"


def test_wrong_credentials_answer_alike_and_malformed_ones_store_nothing(served: Service) -> None:
    tenant = fresh("t")
    username, _user_id = create_user(served, tenant)
    wrong = login(served, username, "not the password")
    unknown = login(served, fresh("nobody"), "not the password")
    for answer in (wrong, unknown):
        assert answer.status == 401, answer.body
        assert error_reason(answer) == "LOGIN_FAILED"
    assert wrong.json()["message"] == unknown.json()["message"]
    assert [c for c, _, _ in audit_events(served, tenant)] == ["1311", "1302"]

    before = stored(served, "SELECT subject, failures FROM login_failures ORDER BY subject")
    events_before = stored(served, "SELECT COUNT(*) FROM events")
    for body in [
        {},
        {"username": username},
        {"username": "", "password": PASSWORD},
        {"username": username, "password": PASSWORD, "tenant": tenant},
        {"username": "a b", "password": "x"},
        {"username": username, "password": 5},
    ]:
        answer = served.request("POST", "/auth/login", body)
        assert answer.status == 400, (body, answer.body)
    assert served.request("POST", "/auth/login", b"not json").status == 400
    with grpc.insecure_channel(served.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            auth_service_pb2_grpc.AuthServiceStub(channel).Login(auth_service_pb2.LoginRequest())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored(served, "SELECT subject, failures FROM login_failures ORDER BY subject") == before
    assert stored(served, "SELECT COUNT(*) FROM events") == events_before
    # The user still signs in.
    assert login(served, username).status == 200


def test_logout_revokes_the_token_at_once_and_ends_its_streams(served: Service) -> None:
    tenant = fresh("t")
    username, _user_id = create_user(served, tenant)
    token, kept = token_of(served, username), token_of(served, username)
    assert served.request("GET", "/events", headers=bearer(token)).status == 200
    with grpc.insecure_channel(served.grpc_target) as channel:
        subscription = Subscription(channel, "", metadata=(("authorization", token),))
        rest_ended = rest_stream_ends(served, "", headers=bearer(token))
        stub = event_service_pb2_grpc.EventServiceStub(channel)

        answer = served.request("POST", "/auth/logout", {}, headers=bearer(token))
        assert answer.status == 200, answer.body
        assert "revokeTime" in answer.json()

        for path in ("/events", "/eventTypes"):
            refused = served.request("GET", path, headers=bearer(token))
            assert refused.status == 401, refused.body
            assert error_reason(refused) == "TOKEN_REVOKED"
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListEvents(
                event_service_pb2.ListEventsRequest(), metadata=(("authorization", token),)
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ended = subscription.ending()
        assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
        assert grpc_details(ended)[0] == "TOKEN_REVOKED"
        assert rest_ended.wait(WAIT)
        # The user's other session goes on.
        assert served.request("GET", "/events", headers=bearer(kept)).status == 200
    # Logging out twice, or with a key only, is refused.
    assert served.request("POST", "/auth/logout", {}, headers=bearer(token)).status == 401
    key = served.create_key(tenant, "Read")
    keyed = served.request("POST", "/auth/logout", {}, key=key)
    assert keyed.status == 400 and error_reason(keyed) == "TOKEN_MISSING"
    assert served.request("POST", "/auth/logout", {"all": True}, headers=bearer(kept)).status == 400
    # No body at all works too.
    assert served.request("POST", "/auth/logout", headers=bearer(kept)).status == 200
    assert served.request("GET", "/events", headers=bearer(kept)).status == 401
    codes = [c for c, _, _ in audit_events(served, tenant)]
    assert codes == ["1311", "1301", "1301", "1303", "1321", "1303"], codes


def users_stub(channel: grpc.Channel) -> user_service_pb2_grpc.UserServiceStub:
    return user_service_pb2_grpc.UserServiceStub(channel)


def test_admins_manage_users_and_changes_count_at_the_next_call(served: Service) -> None:
    tenant = fresh("t")
    admin = (("x-api-key", served.create_key(tenant, "Admin")),)
    writer = (("x-api-key", served.create_key(tenant, "ReadWrite")),)
    with grpc.insecure_channel(served.grpc_target) as channel:
        users = users_stub(channel)
        username = fresh("u")
        created = users.CreateUser(
            user_service_pb2.CreateUserRequest(
                user=user_service_pb2.User(
                    username=username,
                    role="ReadWrite",
                    domain="/root",
                    privileges=["Events.READ", "Events.CREATE"],
                ),
                password=PASSWORD,
            ),
            metadata=admin,
        ).user
        assert created.tenant_id == tenant and list(created.privileges) == [
            "Events.READ",
            "Events.CREATE",
        ]
        # Only Admins manage users; bad input is named; a taken username is a conflict.
        for request, metadata, code in [
            (user_service_pb2.ListUsersRequest(), writer, grpc.StatusCode.PERMISSION_DENIED),
            (
                user_service_pb2.ListUsersRequest(page_size=-1),
                admin,
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                users.ListUsers(request, metadata=metadata)
            assert caught.value.code() == code
        for user, password, code in [
            (
                user_service_pb2.User(username=username, role="Read"),
                PASSWORD,
                grpc.StatusCode.ALREADY_EXISTS,
            ),
            (
                user_service_pb2.User(username=fresh("u"), role="Read"),
                "short",
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                user_service_pb2.User(username=fresh("u"), role="Boss"),
                PASSWORD,
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                users.CreateUser(
                    user_service_pb2.CreateUserRequest(user=user, password=password), metadata=admin
                )
            assert caught.value.code() == code, caught.value
        listed = users.ListUsers(user_service_pb2.ListUsersRequest(), metadata=admin).users
        assert [u.username for u in listed] == [username]

        token = token_of(served, username)
        # The user's own narrower privileges apply.
        assert served.request("GET", "/events", headers=bearer(token)).status == 200
        refused = served.request("GET", "/eventTypes", headers=bearer(token))
        assert (
            refused.status == 403 and error_reason(refused) == "MISSING_PRIVILEGE_EVENT_TYPES_READ"
        )

        # A privilege change counts at the next call, with the same token.
        users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user_id=created.id,
                user=user_service_pb2.User(privileges=["Events.READ", "EventTypes.READ"]),
                update_mask=field_mask_pb2.FieldMask(paths=["privileges"]),
            ),
            metadata=admin,
        )
        assert served.request("GET", "/eventTypes", headers=bearer(token)).status == 200

        # A new password voids the user's tokens; the new one signs in, the old no more.
        subscription = Subscription(channel, "", metadata=(("authorization", token),))
        users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user_id=created.id,
                password="a brand new password",
                update_mask=field_mask_pb2.FieldMask(paths=["password"]),
            ),
            metadata=admin,
        )
        refused = served.request("GET", "/events", headers=bearer(token))
        assert refused.status == 401 and error_reason(refused) == "TOKEN_REVOKED"
        assert subscription.ending().code() == grpc.StatusCode.UNAUTHENTICATED
        assert login(served, username).status == 401
        token = token_of_password(served, username, "a brand new password")

        # Revoking ends it all.
        revoked = users.RevokeUser(
            user_service_pb2.RevokeUserRequest(user_id=created.id), metadata=admin
        ).user
        assert revoked.HasField("revoke_time")
        refused = served.request("GET", "/events", headers=bearer(token))
        assert refused.status == 401 and error_reason(refused) == "TOKEN_REVOKED"
        failed = login_password(served, username, "a brand new password")
        assert failed.status == 401 and error_reason(failed) == "LOGIN_FAILED"

    codes = [(code, entity) for code, entity, _ in audit_events(served, tenant)]
    assert ("1311", created.id) in codes and ("1313", created.id) in codes
    assert ("1312", created.id) in codes and ("1314", created.id) in codes
    assert [c for c, _ in codes].count("1301") == 2 and "1302" in [c for c, _ in codes]
    assert [c for c, _ in codes].count("1321") == 2  # the two keys made above
    for code, _, source in audit_events(served, tenant):
        text = json.dumps(source)
        assert PASSWORD not in text and "brand new" not in text and "eyJ" not in text, code
        assert "emk_" not in text and "argon2" not in text, code


def login_password(service: Service, username: str, password: str) -> Any:
    return login(service, username, password)


def token_of_password(service: Service, username: str, password: str) -> str:
    answer = login(service, username, password)
    assert answer.status == 200, answer.body
    return str(answer.json()["token"])


def test_an_admin_gives_no_more_than_it_has_and_only_inside_its_domain(served: Service) -> None:
    tenant = fresh("t")
    sub_admin = (("x-api-key", served.create_key(tenant, "Admin", "/root/sub1")),)
    with grpc.insecure_channel(served.grpc_target) as channel:
        users = users_stub(channel)
        for user, reason in [
            (
                user_service_pb2.User(username=fresh("u"), role="Read", domain="/root"),
                "NOT_AUTHORIZED_DOMAIN",
            ),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                users.CreateUser(
                    user_service_pb2.CreateUserRequest(user=user, password=PASSWORD),
                    metadata=sub_admin,
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert grpc_details(caught.value)[0] == reason
        inside = users.CreateUser(
            user_service_pb2.CreateUserRequest(
                user=user_service_pb2.User(username=fresh("u"), role="Read"), password=PASSWORD
            ),
            metadata=sub_admin,
        ).user
        assert inside.domain == "/root/sub1"
    _, outside_id = create_user(served, tenant, "Read", "--domain", "/root/sub2")
    with grpc.insecure_channel(served.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            users_stub(channel).GetUser(
                user_service_pb2.GetUserRequest(user_id=outside_id), metadata=sub_admin
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_cli_manages_users_and_keys_and_audits_them(served: Service) -> None:
    tenant = fresh("t")
    username, user_id = create_user(served, tenant, "Read")
    listed = served.cli("admin", "users", "list", "--tenant", tenant)
    assert username in listed and "Read" in listed
    served.cli("admin", "users", "update", user_id, "--tenant", tenant, "--role", "ReadWrite")
    updated = served.cli("admin", "users", "update", user_id, "--tenant", tenant, "--password")
    new_password = updated.splitlines()[-1]
    assert login(served, username, new_password).status == 200
    served.cli("admin", "users", "revoke", user_id, "--tenant", tenant)
    assert "revoked" in served.cli("admin", "users", "get", user_id, "--tenant", tenant)
    key = served.create_key(tenant, "Read")
    served.cli("admin", "revoke-key", key.split("_")[1])
    codes = [code for code, _, _ in audit_events(served, tenant)]
    assert codes == ["1311", "1313", "1312", "1301", "1314", "1321", "1322"], codes


def test_repeated_failures_are_slowed_then_locked_for_a_while(served: Service) -> None:
    tenant = fresh("t")
    username, _ = create_user(served, tenant)
    # Failures 1 and 2 answer at once; 3 waits (0.5 s) and 4 waits more (1 s), then locks.
    waited = []
    for _ in range(4):
        started = time.monotonic()
        assert login(served, username, "wrong password").status == 401
        waited.append(time.monotonic() - started)
    assert waited[2] >= 0.5 and waited[3] >= 1.0, waited
    locked = login(served, username)  # the right password, refused while locked
    assert locked.status == 429, locked.body
    assert error_reason(locked) == "LOGIN_LOCKED"
    assert 1 <= int(locked.headers["retry-after"]) <= 3
    with grpc.insecure_channel(served.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            auth_service_pb2_grpc.AuthServiceStub(channel).Login(
                auth_service_pb2.LoginRequest(
                    credentials=auth_service_pb2.LoginCredentials(
                        username=username, password=PASSWORD
                    )
                )
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    time.sleep(3.2)
    assert login(served, username).status == 200


def test_guesses_sent_at_once_get_no_more_tries_than_sent_one_by_one(served: Service) -> None:
    tenant = fresh("t")
    username, _ = create_user(served, tenant)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: login(served, username, "guess").status, range(16)))
    # Each attempt is counted before its password is checked: at most 4 are checked.
    assert sorted(set(statuses)) == [401, 429] and statuses.count(401) <= 4, statuses


def test_unknown_users_are_throttled_like_known_ones(served: Service) -> None:
    nobody = fresh("nobody")
    for _ in range(4):
        assert login(served, nobody, "wrong password").status == 401
    answer = login(served, nobody, "wrong password")
    assert answer.status == 429 and error_reason(answer) == "LOGIN_LOCKED"


# What a proxy of one's own sends to vouch for its X-Forwarded-For (README: Users and login).
GATEWAY_TOKEN = "a-proxy-of-our-own-token"


def grpc_login(
    channel: grpc.Channel, username: str, password: str, address: str, token: str = GATEWAY_TOKEN
) -> str:
    """The status code name of a gRPC login from `address`, as a proxy vouching with `token`
    forwards it."""
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    credentials = auth_service_pb2.LoginCredentials(username=username, password=password)
    try:
        stub.Login(
            auth_service_pb2.LoginRequest(credentials=credentials),
            metadata=(("x-forwarded-for", address), ("x-eventmgmt-gateway", token)),
        )
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


def address_locking_service(database_url: str, tmp_path: Path, lock_seconds: int) -> Service:
    """A started server (no gateway) that locks an address after 5 failed logins and
    believes the X-Forwarded-For of calls carrying GATEWAY_TOKEN."""
    running = Service(
        database_url,
        tmp_path,
        gateway=False,
        env={
            "EVENTMGMT_LOGIN_ADDRESS_LOCK_AFTER": "5",
            "EVENTMGMT_LOGIN_LOCK_SECONDS": str(lock_seconds),
            "EVENTMGMT_GATEWAY_TOKEN": GATEWAY_TOKEN,
        },
    )
    running.start()
    return running


def test_one_address_guessing_many_usernames_is_locked(database_url: str, tmp_path: Path) -> None:
    running = address_locking_service(database_url, tmp_path, lock_seconds=3)
    try:
        username, _ = create_user(running, fresh("t"))
        with grpc.insecure_channel(running.grpc_target) as channel:
            # Each username fails once: the address's own count locks it after 5, and then
            # refuses a right password too; another address is not affected.
            codes = [
                grpc_login(channel, fresh("guess"), "wrong password", "198.51.100.7")
                for _ in range(6)
            ]
            assert codes == ["UNAUTHENTICATED"] * 5 + ["RESOURCE_EXHAUSTED"], codes
            assert grpc_login(channel, username, PASSWORD, "198.51.100.7") == "RESOURCE_EXHAUSTED"
            assert grpc_login(channel, username, PASSWORD, "198.51.100.8") == "OK"
            time.sleep(3.2)
            assert grpc_login(channel, username, PASSWORD, "198.51.100.7") == "OK"
    finally:
        running.stop()


@pytest.mark.parametrize("token", ["", "a-guessed-token-of-16", GATEWAY_TOKEN[:-1]])
def test_a_forwarded_address_without_the_gateways_token_is_not_believed(
    database_url: str, tmp_path: Path, token: str
) -> None:
    # A program on the server's machine reaches the gRPC port directly: were its own
    # X-Forwarded-For believed, each guess could claim a new address and never be locked.
    running = address_locking_service(database_url, tmp_path, lock_seconds=60)
    try:
        username, _ = create_user(running, fresh("t"))
        with grpc.insecure_channel(running.grpc_target) as channel:
            codes = [
                grpc_login(channel, fresh("guess"), "wrong password", f"198.51.100.{n}", token)
                for n in range(6)
            ]
            # All six counted against the peer's own address (127.0.0.1), which is now locked,
            # whatever address the caller claims.
            assert codes == ["UNAUTHENTICATED"] * 5 + ["RESOURCE_EXHAUSTED"], codes
            assert grpc_login(channel, username, PASSWORD, "198.51.100.99", token) == (
                "RESOURCE_EXHAUSTED"
            )
    finally:
        running.stop()


def test_a_malformed_gateway_token_stops_the_server_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [*EVENTMGMT, "--database", f"sqlite:///{tmp_path / 'e.db'}", "serve", "--no-gateway"],
        env={**os.environ, "EVENTMGMT_GATEWAY_TOKEN": "short"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "EVENTMGMT_GATEWAY_TOKEN" in done.stderr and "16 to 256" in done.stderr


def test_the_dev_login_file_signs_in(served: Service) -> None:
    path = served.data_dir / "dev-login.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert set(document) == {"username", "password"}
    answer = login(served, document["username"], document["password"])
    assert answer.status == 200 and answer.json()["role"] == "Admin"
    assert document["password"] not in (served.data_dir / "serve.log").read_text()
    keys = json.loads((served.data_dir / "token-keys.json").read_text())
    assert keys["active"] in keys["keys"]
    assert stat.S_IMODE((served.data_dir / "token-keys.json").stat().st_mode) == 0o600


def test_user_revocation_counts_at_once_on_every_replica(replicas: Any, tmp_path: Path) -> None:
    keys_file = tmp_path / "shared-token-keys.json"
    keys_file.write_text(json.dumps({"active": "k2", "keys": {"k1": "a" * 43, "k2": "b" * 43}}))
    started = replicas({"EVENTMGMT_TOKEN_KEYS": str(keys_file)})
    first = started.services[0]
    first.cli("admin", "create-tenant", "replicated")
    admin = (("x-api-key", started.create_key("replicated", "Admin")),)
    users = users_stub(started.channels[0])
    user = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            user=user_service_pb2.User(username=fresh("u"), role="Read"), password=PASSWORD
        ),
        metadata=admin,
    ).user
    other = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            user=user_service_pb2.User(username=fresh("u"), role="Read"), password=PASSWORD
        ),
        metadata=admin,
    ).user
    # Signed in on one replica, used on both.
    tokens = []
    for name in (user.username, other.username):
        session = auth_service_pb2_grpc.AuthServiceStub(started.channels[0]).Login(
            auth_service_pb2.LoginRequest(
                credentials=auth_service_pb2.LoginCredentials(username=name, password=PASSWORD)
            )
        )
        tokens.append((("authorization", f"Bearer {session.token}"),))
    stubs = [event_service_pb2_grpc.EventServiceStub(c) for c in started.channels]
    for stub in stubs:
        for token in tokens:
            stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=token)
    subscriptions = [Subscription(c, "", metadata=tokens[0]) for c in started.channels]
    survivor = Subscription(started.channels[1], "", metadata=tokens[1])

    users.RevokeUser(user_service_pb2.RevokeUserRequest(user_id=user.id), metadata=admin)

    # The replica that revoked refuses at its very next call; the other once the NOTIFY (or
    # on SQLite the version row) reached it, milliseconds later: bounded, not timed.
    assert refused_within(stubs[0], tokens[0], 0.0)
    assert refused_within(stubs[1], tokens[0], WAIT)
    for stub in stubs:
        stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=tokens[1])
    for subscription in subscriptions:
        assert subscription.ending().code() == grpc.StatusCode.UNAUTHENTICATED
    assert not isinstance(survivor.messages.get(timeout=WAIT), grpc.RpcError)
    survivor.call.cancel()

    # Logout on one replica counts on the other.
    auth_service_pb2_grpc.AuthServiceStub(started.channels[0]).Logout(
        auth_service_pb2.LogoutRequest(), metadata=tokens[1]
    )
    assert refused_within(stubs[0], tokens[1], 0.0)
    assert refused_within(stubs[1], tokens[1], WAIT)


def refused_within(stub: Any, token: Any, seconds: float) -> bool:
    """Whether a call with `token` is refused as unauthenticated, asking until `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=token)
        except grpc.RpcError as error:
            return bool(error.code() == grpc.StatusCode.UNAUTHENTICATED)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_a_login_of_nobody_checks_a_password_hash_like_one_of_somebody(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the answers take the same time: each login verifies exactly one Argon2 hash, a
    dummy one when the user does not exist (timings are not asserted, see the guide)."""
    from service.domain import users
    from service.domain.access import Principal, Role
    from service.domain.errors import Unauthenticated
    from service.server import Services

    verified: list[str] = []
    real_verify = users._verify
    monkeypatch.setattr(
        users,
        "_verify",
        lambda stored_hash, password: (
            verified.append(stored_hash) or real_verify(stored_hash, password)
        ),
    )
    services = Services.over(store)
    store.keys.create_tenant("acme", "acme")
    operator = Principal("acme", "cli", "operator", Role.ADMIN, "/")

    async def attempts() -> list[str]:
        await services.users.create(operator, "somebody", PASSWORD, "Read")
        reasons = []
        for username in ("somebody", "nobody"):
            try:
                await services.sessions.login(username, "wrong password", "192.0.2.1")
            except Unauthenticated as error:
                reasons.append(error.reason)
        return reasons

    import asyncio

    assert asyncio.run(attempts()) == ["LOGIN_FAILED", "LOGIN_FAILED"]
    assert len(verified) == 2 and all(h.startswith("$argon2id$") for h in verified)
    assert verified[0] != verified[1]


def test_keys_rotate_without_voiding_tokens_and_expired_ones_are_named() -> None:
    from service.domain.errors import Unauthenticated
    from service.domain.tokens import SigningKeys, TokenCodec

    old, new = b"o" * 32, b"n" * 32
    before = TokenCodec(SigningKeys({"k1": old}, "k1"))
    token, claims = before.issue("u1", "acme", time.time_ns() // 1000)
    # Step 1 and 2 of the README's rotation: the new key is added, then made active.
    during = TokenCodec(SigningKeys({"k1": old, "k2": new}, "k2"))
    assert during.verify(token) == claims
    fresh_token, _ = during.issue("u1", "acme", time.time_ns() // 1000)
    # Step 3: the old key goes; what it signed is refused, what the new one signed is not.
    after = TokenCodec(SigningKeys({"k2": new}, "k2"))
    assert after.verify(fresh_token).user_id == "u1"
    with pytest.raises(Unauthenticated) as caught:
        after.verify(token)
    assert caught.value.reason == "TOKEN_INVALID"
    expired, _ = during.issue("u1", "acme", (time.time_ns() // 1000) - 7200 * 1_000_000)
    with pytest.raises(Unauthenticated) as caught:
        during.verify(expired)
    assert caught.value.reason == "TOKEN_EXPIRED"
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        SigningKeys({"k": b"short"}, "k")
