"""Access control end to end: every rpc declares what it needs, privileges narrower than a
role, and revocation that counts at the very next call and ends open streams, on one server
(both backends, through Envoy and gRPC) and on two replicas of one PostgreSQL database."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from helpers import Service, Subscription, auth, error_reason, rest_stream_ends
from service.privileges import METHOD_ACCESS, access_table
from service.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
)

pytestmark = pytest.mark.integration
WAIT = 30.0  # a bound for things to arrive, never a timing assertion
README = Path(__file__).resolve().parent.parent / "README.md"


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def served_methods(channel: grpc.Channel) -> list[str]:
    """Every rpc of every service the server offers, as reflection tells an outsider."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**request: Any) -> Any:
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**request)])
        )
        return next(iter(answers))

    services = [s.name for s in ask(list_services="").list_services_response.service]
    methods = []
    for service in services:
        files = ask(file_containing_symbol=service).file_descriptor_response.file_descriptor_proto
        package, _, name = service.rpartition(".")
        for raw in files:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if proto.package != package:
                continue
            for declared in proto.service:
                if declared.name == name:
                    methods += [f"/{service}/{m.name}" for m in declared.method]
    return methods


def test_every_rpc_of_every_service_declares_what_it_needs(channel: grpc.Channel) -> None:
    served = served_methods(channel)

    assert len(served) > 40
    undeclared = sorted(set(served) - set(METHOD_ACCESS))
    assert undeclared == [], f"declare these in service/privileges.py: {undeclared}"
    stale = sorted(set(METHOD_ACCESS) - set(served))
    assert stale == [], f"service/privileges.py names rpcs the server lacks: {stale}"


def test_the_readme_table_is_the_declared_one() -> None:
    assert access_table() in README.read_text(), (
        "README's access table is stale: paste `python -m service.privileges`"
    )


def fresh_tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def create_key(service: Service, tenant: str, role: str, *extra: str) -> str:
    service.cli("admin", "create-tenant", tenant)
    return service.cli("admin", "create-key", "--tenant", tenant, "--role", role, *extra)


def key_id(secret: str) -> str:
    return secret.split("_")[1]


def test_a_key_narrower_than_its_role_is_refused_what_it_lacks(service: Service) -> None:
    tenant = fresh_tenant()
    # The platform model's names (docs/platform-events.md#permissions) work as aliases of
    # Events.READ and Events.CREATE.
    reader = create_key(service, tenant, "ReadWrite", "--privileges", "read event.tenant")
    creator = create_key(
        service, tenant, "ReadWrite", "--privileges", "create event.tenant,Events.READ"
    )

    refused = service.request("POST", "/events", {"description": "x"}, key=reader)
    assert refused.status == 403, refused.body
    assert error_reason(refused) == "MISSING_PRIVILEGE_EVENTS_CREATE"
    assert "Events.CREATE" in refused.json()["message"]
    assert service.request("GET", "/events", key=reader).status == 200
    created = service.request(
        "POST", "/events", {"description": "x", "entityId": "e-1"}, key=creator
    )
    assert created.status == 201, created.body
    event_id = created.json()["id"]
    ack = service.request("POST", f"/events/{event_id}/acknowledge", key=creator)
    assert ack.status == 403
    assert error_reason(ack) == "MISSING_PRIVILEGE_EVENTS_UPDATE"

    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateEvent(
                event_service_pb2.CreateEventRequest(event=event_pb2.Event(description="x")),
                metadata=auth(reader),
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info(caught.value)
        assert info.reason == "MISSING_PRIVILEGE_EVENTS_CREATE"
        assert info.metadata["privilege"] == "Events.CREATE"
        listed = stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(reader))
        # Beside the internal events that record the keys' creation.
        assert [e.id for e in listed.events if not e.internal] == [event_id]


def test_privileges_beyond_the_role_or_unknown_are_refused(service: Service) -> None:
    tenant = fresh_tenant()
    service.cli("admin", "create-tenant", tenant)
    for privileges, words in [
        ("Admin", "does not grant Admin"),
        ("Events.WRITE", "unknown privilege"),
    ]:
        with pytest.raises(AssertionError, match=words):
            service.cli(
                "admin", "create-key", "--tenant", tenant, "--role", "Read",
                "--privileges", privileges,
            )  # fmt: skip


def test_a_revoked_key_fails_at_its_next_call_and_its_streams_end(service: Service) -> None:
    key = create_key(service, fresh_tenant(), "ReadWrite")
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        # Used over both APIs first, so that the server has the key cached.
        assert service.request("GET", "/events", key=key).status == 200
        stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(key))
        subscription = Subscription(channel, key)
        rest_ended = rest_stream_ends(service, key)

        service.cli("admin", "revoke-key", key_id(key))

        answer = service.request("GET", "/events", key=key)
        assert answer.status == 401, answer.body
        assert error_reason(answer) == "API_KEY_INVALID"
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(key))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ended = subscription.ending()
        assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(ended).reason == "API_KEY_INVALID"
        assert rest_ended.wait(WAIT)


def test_revocation_counts_at_once_on_every_replica(
    tmp_path: Path, postgres_databases: Any
) -> None:
    url = postgres_databases()
    replicas = [Service(url, tmp_path / name, gateway=False) for name in ("a", "b")]
    for replica in replicas:
        replica.data_dir.mkdir()
        replica.start()
    try:
        key = create_key(replicas[0], "replicated", "ReadWrite")
        kept = create_key(replicas[0], "replicated", "Read")
        channels = [grpc.insecure_channel(r.grpc_target) for r in replicas]
        stubs = [event_service_pb2_grpc.EventServiceStub(c) for c in channels]
        for stub in stubs:  # cached on both replicas
            stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(key))
        subscriptions = [Subscription(c, key) for c in channels]
        survivor = Subscription(channels[1], kept)

        replicas[0].cli("admin", "revoke-key", key_id(key))

        for stub in stubs:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(key))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(kept))
        for subscription in subscriptions:
            assert subscription.ending().code() == grpc.StatusCode.UNAUTHENTICATED
        # The other key's stream goes on: its heartbeats keep coming.
        assert not isinstance(survivor.messages.get(timeout=WAIT), grpc.RpcError)
        survivor.call.cancel()
        for opened in channels:
            opened.close()
    finally:
        for replica in replicas:
            replica.stop()
