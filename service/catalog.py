"""The gRPC services this server offers, declared once. The server registers each one's
servicer from here and names them all to reflection; the gateway transcodes those that carry
google.api.http bindings (the REST twins, docs/api-conventions.md#rest-twins). A new
service is one row below."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from service.servicers.auth_service import AuthServicer
from service.servicers.device_event_service import DeviceEventRestServicer, DeviceEventServicer
from service.servicers.event_job_service import EventJobRestServicer, EventJobServicer
from service.servicers.event_rest_service import EventRestServicer
from service.servicers.event_search_service import EventSearchRestServicer, EventSearchServicer
from service.servicers.event_service import EventServicer
from service.servicers.event_stream_service import EventStreamServicer
from service.servicers.event_type_rest_service import EventTypeRestServicer
from service.servicers.event_type_service import EventTypeServicer
from service.servicers.registry_service import RegistryServicer
from service.servicers.sharing_service import SharingRestServicer, SharingServicer
from service.servicers.user_service import UserServicer
from service.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    device_event_rest_service_pb2,
    device_event_rest_service_pb2_grpc,
    device_event_service_pb2,
    device_event_service_pb2_grpc,
    event_job_rest_service_pb2,
    event_job_rest_service_pb2_grpc,
    event_job_service_pb2,
    event_job_service_pb2_grpc,
    event_rest_service_pb2,
    event_rest_service_pb2_grpc,
    event_search_rest_service_pb2,
    event_search_rest_service_pb2_grpc,
    event_search_service_pb2,
    event_search_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    event_stream_service_pb2,
    event_stream_service_pb2_grpc,
    event_type_rest_service_pb2,
    event_type_rest_service_pb2_grpc,
    event_type_service_pb2,
    event_type_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
    sharing_rest_service_pb2,
    sharing_rest_service_pb2_grpc,
    sharing_service_pb2,
    sharing_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)

if TYPE_CHECKING:
    from service.server import Services

HTTP_OPTION = "google.api.http"


@dataclass(frozen=True)
class Offered:
    """One gRPC service: its generated modules (one service per .proto file) and how its
    servicer is built over the domain services."""

    messages: ModuleType
    stubs: ModuleType
    servicer: Callable[[Services], object]

    @property
    def descriptor(self) -> ServiceDescriptor:
        (service,) = self.messages.DESCRIPTOR.services_by_name.values()
        return service

    @property
    def full_name(self) -> str:
        return self.descriptor.full_name

    @property
    def transcoded(self) -> bool:
        """Whether any rpc has a REST binding, which the gateway then transcodes."""
        return any(
            option.full_name == HTTP_OPTION
            for method in self.descriptor.methods
            for option, _ in method.GetOptions().ListFields()
        )

    def add_to(self, server: grpc.aio.Server, services: Services) -> None:
        add: Callable[[Any, grpc.aio.Server], None] = getattr(
            self.stubs, f"add_{self.descriptor.name}Servicer_to_server"
        )
        add(self.servicer(services), server)


SERVICES: tuple[Offered, ...] = (
    Offered(event_service_pb2, event_service_pb2_grpc, lambda s: EventServicer(s.events)),
    Offered(
        event_rest_service_pb2,
        event_rest_service_pb2_grpc,
        lambda s: EventRestServicer(s.events, s.feed),
    ),
    Offered(
        event_stream_service_pb2,
        event_stream_service_pb2_grpc,
        lambda s: EventStreamServicer(s.events, s.feed, s.limits),
    ),
    Offered(event_job_service_pb2, event_job_service_pb2_grpc, lambda s: EventJobServicer(s.jobs)),
    Offered(
        event_job_rest_service_pb2,
        event_job_rest_service_pb2_grpc,
        lambda s: EventJobRestServicer(s.jobs),
    ),
    Offered(sharing_service_pb2, sharing_service_pb2_grpc, lambda s: SharingServicer(s.sharing)),
    Offered(
        sharing_rest_service_pb2,
        sharing_rest_service_pb2_grpc,
        lambda s: SharingRestServicer(s.sharing),
    ),
    Offered(
        registry_service_pb2, registry_service_pb2_grpc, lambda s: RegistryServicer(s.registry)
    ),
    Offered(
        device_event_service_pb2,
        device_event_service_pb2_grpc,
        lambda s: DeviceEventServicer(s.reporter),
    ),
    Offered(
        device_event_rest_service_pb2,
        device_event_rest_service_pb2_grpc,
        lambda s: DeviceEventRestServicer(s.reporter),
    ),
    Offered(
        event_type_service_pb2, event_type_service_pb2_grpc, lambda s: EventTypeServicer(s.types)
    ),
    Offered(
        event_type_rest_service_pb2,
        event_type_rest_service_pb2_grpc,
        lambda s: EventTypeRestServicer(s.types),
    ),
    Offered(
        event_search_service_pb2,
        event_search_service_pb2_grpc,
        lambda s: EventSearchServicer(s.finder),
    ),
    Offered(
        event_search_rest_service_pb2,
        event_search_rest_service_pb2_grpc,
        lambda s: EventSearchRestServicer(s.finder),
    ),
    Offered(auth_service_pb2, auth_service_pb2_grpc, lambda s: AuthServicer(s.sessions)),
    Offered(user_service_pb2, user_service_pb2_grpc, lambda s: UserServicer(s.users)),
)

# The services the gateway transcodes, in the order above.
TRANSCODED: tuple[str, ...] = tuple(s.full_name for s in SERVICES if s.transcoded)
