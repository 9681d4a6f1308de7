"""Revocation on two replicas of one PostgreSQL database, each behind its own gateway: a key
revoked by another process (the CLI) is refused at the next REST and gRPC call on both, and
every open stream of it ends there: SubscribeEvents, IngestEvents and REST /liveEvents."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_access import WAIT, Subscription, create_key, error_info, key_id, rest_stream_ends

from helpers import Service, auth, error_reason
from service.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    event_stream_service_pb2,
    event_stream_service_pb2_grpc,
)

pytestmark = pytest.mark.integration


class Ingest:
    """An open IngestEvents stream that has stored one event."""

    def __init__(self, channel: grpc.Channel, key: str) -> None:
        stub = event_stream_service_pb2_grpc.EventStreamServiceStub(channel)
        self.requests: queue.Queue[Any] = queue.Queue()
        self.call = stub.IngestEvents(
            iter(self.requests.get, None), metadata=auth(key), timeout=120
        )
        self.answers = iter(self.call)
        self.requests.put(
            event_stream_service_pb2.IngestEventsRequest(
                items=[
                    event_stream_service_pb2.IngestItem(
                        event=event_pb2.Event(description="before", entity_id="e-1")
                    )
                ]
            )
        )
        (result,) = next(self.answers).results
        assert result.id, result

    def ending(self) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            next(self.answers)
        return caught.value


def test_revocation_ends_calls_and_streams_on_both_replicas_through_both_apis(
    tmp_path: Path, postgres_databases: Any
) -> None:
    url = postgres_databases()
    replicas = [Service(url, tmp_path / name) for name in ("a", "b")]
    for replica in replicas:
        replica.data_dir.mkdir()
        replica.start()
    channels: list[grpc.Channel] = []
    try:
        key = create_key(replicas[0], "revoked-on-both", "ReadWrite")
        channels = [grpc.insecure_channel(r.grpc_target) for r in replicas]
        stubs = [event_service_pb2_grpc.EventServiceStub(c) for c in channels]
        for replica, stub in zip(replicas, stubs, strict=True):  # cached on both
            assert replica.request("GET", "/events", key=key).status == 200
            stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(key))
        subscriptions = [Subscription(c, key) for c in channels]
        ingests = [Ingest(c, key) for c in channels]
        live = [rest_stream_ends(r, key) for r in replicas]

        replicas[0].cli("admin", "revoke-key", key_id(key))

        for replica, stub in zip(replicas, stubs, strict=True):
            answer = replica.request("GET", "/events", key=key)
            assert answer.status == 401, answer.body
            assert error_reason(answer) == "API_KEY_INVALID"
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListEvents(event_service_pb2.ListEventsRequest(), metadata=auth(key))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for subscription in subscriptions:
            assert subscription.ending().code() == grpc.StatusCode.UNAUTHENTICATED
        for ingest in ingests:
            ended = ingest.ending()
            assert ended.code() == grpc.StatusCode.UNAUTHENTICATED, ended
            assert error_info(ended).reason == "API_KEY_INVALID"
            ingest.requests.put(None)
        for ended_stream in live:
            assert ended_stream.wait(WAIT)
    finally:
        for opened in channels:
            opened.close()
        for replica in replicas:
            replica.stop()
