"""The gRPC services this server offers, declared once. The server serves every rpc from one
method table derived from here (with health and reflection beside them) and names them all to
reflection; the gateway transcodes those that carry google.api.http bindings (the REST twins,
docs/api-conventions.md#rest-twins). A new service is one row below."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

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
    device_event_rest_service_pb2,
    device_event_service_pb2,
    event_job_rest_service_pb2,
    event_job_service_pb2,
    event_rest_service_pb2,
    event_search_rest_service_pb2,
    event_search_service_pb2,
    event_service_pb2,
    event_stream_service_pb2,
    event_type_rest_service_pb2,
    event_type_service_pb2,
    registry_service_pb2,
    sharing_rest_service_pb2,
    sharing_service_pb2,
    user_service_pb2,
)

if TYPE_CHECKING:
    from service.server import Services

HTTP_OPTION = "google.api.http"


@dataclass(frozen=True)
class Offered:
    """One gRPC service: its generated messages (one service per .proto file) and how its
    servicer is built over the domain services."""

    messages: ModuleType
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


def method_handler(method: MethodDescriptor, servicer: object) -> grpc.RpcMethodHandler:
    """The handler of one rpc: the servicer's method of its name, with the request and
    response messages and the streaming kind that the descriptor declares."""
    behavior = getattr(servicer, method.name)
    parse = message_factory.GetMessageClass(method.input_type).FromString
    serialize = _serializer(message_factory.GetMessageClass(method.output_type).SerializeToString)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(method.client_streaming, method.server_streaming)]
    return make(behavior, request_deserializer=parse, response_serializer=serialize)


def _serializer(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response message's wire bytes; a servicer may answer with bytes it serialized once
    for many calls (a live event, sent to every subscriber it matches)."""
    return lambda message: message if message.__class__ is bytes else serialize(message)


class MethodTable(grpc.GenericRpcHandler):
    """Every rpc of the server, by its path (`/package.Service/Method`): one dictionary look-up
    per call. grpc.aio keeps a pending request per registered method (what the generated
    `add_*_to_server` functions do) and goes over all of them for every call; with only this
    generic handler it keeps one. `wrap(path, handler)` builds what runs around each rpc
    (auth, the request log) once, instead of per call as grpc.aio's interceptors would."""

    def __init__(
        self,
        served: Iterable[tuple[ServiceDescriptor, object]],
        wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] = lambda _, h: h,
    ) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {
            path: wrap(path, method_handler(method, servicer))
            for service, servicer in served
            for method in service.methods
            for path in (f"/{service.full_name}/{method.name}",)
        }

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(handler_call_details.method)


SERVICES: tuple[Offered, ...] = (
    Offered(event_service_pb2, lambda s: EventServicer(s.events)),
    Offered(event_rest_service_pb2, lambda s: EventRestServicer(s.events, s.feed)),
    Offered(event_stream_service_pb2, lambda s: EventStreamServicer(s.events, s.feed, s.limits)),
    Offered(event_job_service_pb2, lambda s: EventJobServicer(s.jobs)),
    Offered(event_job_rest_service_pb2, lambda s: EventJobRestServicer(s.jobs)),
    Offered(sharing_service_pb2, lambda s: SharingServicer(s.sharing)),
    Offered(sharing_rest_service_pb2, lambda s: SharingRestServicer(s.sharing)),
    Offered(registry_service_pb2, lambda s: RegistryServicer(s.registry)),
    Offered(device_event_service_pb2, lambda s: DeviceEventServicer(s.reporter)),
    Offered(device_event_rest_service_pb2, lambda s: DeviceEventRestServicer(s.reporter)),
    Offered(event_type_service_pb2, lambda s: EventTypeServicer(s.types)),
    Offered(event_type_rest_service_pb2, lambda s: EventTypeRestServicer(s.types)),
    Offered(event_search_service_pb2, lambda s: EventSearchServicer(s.finder)),
    Offered(event_search_rest_service_pb2, lambda s: EventSearchRestServicer(s.finder)),
    Offered(auth_service_pb2, lambda s: AuthServicer(s.sessions, s.gateway_token)),
    Offered(user_service_pb2, lambda s: UserServicer(s.users)),
)

# The services the gateway transcodes, in the order above.
TRANSCODED: tuple[str, ...] = tuple(s.full_name for s in SERVICES if s.transcoded)
