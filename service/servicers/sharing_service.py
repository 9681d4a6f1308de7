"""SharingService: one rpc per operation for gRPC and REST alike. REST clients send raw JSON
in `body`, parsed strictly here; Envoy prints the typed answers (the proto3 JSON mapping is
the documented JSON)."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from service import proto_json
from service.auth import current_principal
from service.domain.errors import invalid
from service.domain.sharing import EntityShare, SharingManager
from service.v1 import sharing_service_pb2 as pb
from service.v1 import sharing_service_pb2_grpc


def _message(share: EntityShare) -> pb.EntityShare:
    seconds, micros = divmod(share.create_time, 1_000_000)
    owned = share.owner_tenant_id == current_principal().tenant_id
    return pb.EntityShare(
        entity_id=share.entity_id,
        tenant_id=share.tenant_id,
        owner_tenant_id=share.owner_tenant_id,
        create_time=Timestamp(seconds=seconds, nanos=micros * 1000),
        domain=share.domain if owned else "",
    )


def _requested(request: pb.ShareEntityRequest) -> pb.EntityShare:
    share, where = request.share, "share"
    if request.HasField("body"):
        (share, _), where = proto_json.parse(request.body.data, pb.EntityShare()), "body"
    if share.owner_tenant_id or share.HasField("create_time") or share.domain:
        raise invalid(where, "ownerTenantId, createTime and domain are set by the server")
    return share


class SharingServicer(sharing_service_pb2_grpc.SharingServiceServicer):
    def __init__(self, sharing: SharingManager) -> None:
        self._sharing = sharing

    async def ShareEntity(
        self, request: pb.ShareEntityRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShareEntityResponse:
        wanted = _requested(request)
        share = await self._sharing.share(current_principal(), wanted.entity_id, wanted.tenant_id)
        if request.HasField("body"):
            await context.send_initial_metadata([("x-http-code", "201")])
        return pb.ShareEntityResponse(share=_message(share))

    async def ListEntityShares(
        self, request: pb.ListEntitySharesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEntitySharesResponse:
        shares = await self._sharing.list_shares(current_principal())
        return pb.ListEntitySharesResponse(shares=[_message(s) for s in shares])

    async def UnshareEntity(
        self, request: pb.UnshareEntityRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnshareEntityResponse:
        await self._sharing.unshare(current_principal(), request.entity_id, request.tenant_id)
        return pb.UnshareEntityResponse()
