"""RegistryService: devices and tenant apps of the Admin key's tenant."""

from __future__ import annotations

import base64

import grpc

from service.auth import current_principal
from service.convert import app_to_proto, device_to_proto
from service.domain.errors import invalid
from service.domain.registry import RegistryManager, check_registry_page_size
from service.v1 import registry_service_pb2 as pb
from service.v1 import registry_service_pb2_grpc


# Pages of registry lists (and of ListUsers) continue after the last key of the previous page.
def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_page_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode() if token else ""
    except (ValueError, UnicodeDecodeError):
        raise invalid("page_token", "is not a token returned by this list call") from None


def next_page_token(ids: list[str], size: int) -> str:
    # A full page may have a successor; the next call starts after its last id.
    return encode_page_token(ids[-1]) if len(ids) == size else ""


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: RegistryManager) -> None:
        self._registry = registry

    async def CreateDevice(
        self, request: pb.CreateDeviceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDeviceResponse:
        device = await self._registry.create_device(
            current_principal(),
            request.device.id,
            request.device.domain,
            request.device.entity_type,
        )
        return pb.CreateDeviceResponse(device=device_to_proto(device))

    async def ListDevices(
        self, request: pb.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDevicesResponse:
        size = check_registry_page_size(request.page_size)
        devices = await self._registry.list_devices(
            current_principal(), decode_page_token(request.page_token), size
        )
        return pb.ListDevicesResponse(
            devices=[device_to_proto(d) for d in devices],
            next_page_token=next_page_token([d.id for d in devices], size),
        )

    async def DisableDevice(
        self, request: pb.DisableDeviceRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableDeviceResponse:
        device = await self._registry.disable_device(current_principal(), request.device_id)
        return pb.DisableDeviceResponse(device=device_to_proto(device))

    async def CreateApp(
        self, request: pb.CreateAppRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateAppResponse:
        app = await self._registry.create_app(current_principal(), request.app.id, request.app.name)
        return pb.CreateAppResponse(app=app_to_proto(app))

    async def ListApps(
        self, request: pb.ListAppsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAppsResponse:
        size = check_registry_page_size(request.page_size)
        apps = await self._registry.list_apps(
            current_principal(), decode_page_token(request.page_token), size
        )
        return pb.ListAppsResponse(
            apps=[app_to_proto(a) for a in apps],
            next_page_token=next_page_token([a.id for a in apps], size),
        )

    async def DisableApp(
        self, request: pb.DisableAppRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableAppResponse:
        app = await self._registry.disable_app(current_principal(), request.app_id)
        return pb.DisableAppResponse(app=app_to_proto(app))
