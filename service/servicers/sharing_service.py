"""SharingService (typed gRPC) and its REST twin SharingRestService (docs/rest-v3.md#sharing).
REST clients send raw JSON, parsed strictly here, and get the proto3 JSON of SharingService's
answers."""

from __future__ import annotations

import grpc
from google.api import httpbody_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service import proto_json
from service.auth import current_principal
from service.domain.errors import invalid
from service.domain.sharing import EntityShare, SharingManager
from service.servicers.rest import answer, proto_document
from service.v1 import sharing_rest_service_pb2 as rest_pb
from service.v1 import sharing_rest_service_pb2_grpc, sharing_service_pb2_grpc
from service.v1 import sharing_service_pb2 as pb


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


def _checked(share: pb.EntityShare, where: str) -> pb.EntityShare:
    if share.owner_tenant_id or share.HasField("create_time") or share.domain:
        raise invalid(where, "ownerTenantId, createTime and domain are set by the server")
    return share


def _from_json(raw: bytes) -> pb.EntityShare:
    share, _ = proto_json.parse(raw, pb.EntityShare())
    return _checked(share, "body")


class SharingServicer(sharing_service_pb2_grpc.SharingServiceServicer):
    def __init__(self, sharing: SharingManager) -> None:
        self._sharing = sharing

    async def ShareEntity(
        self, request: pb.ShareEntityRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShareEntityResponse:
        # `body` is deprecated (REST clients use SharingRestService) and still honoured.
        rest = request.HasField("body")
        wanted = _from_json(request.body.data) if rest else _checked(request.share, "share")
        share = await self._sharing.share(current_principal(), wanted.entity_id, wanted.tenant_id)
        if rest:
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


class SharingRestServicer(sharing_rest_service_pb2_grpc.SharingRestServiceServicer):
    def __init__(self, sharing: SharingManager) -> None:
        self._sharing = sharing

    async def RestShareEntity(
        self, request: rest_pb.RestShareEntityRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        wanted = _from_json(request.body.data)
        share = await self._sharing.share(current_principal(), wanted.entity_id, wanted.tenant_id)
        document = proto_document(pb.ShareEntityResponse(share=_message(share)))
        return await answer(context, document, status=201)

    async def RestListEntityShares(
        self, request: rest_pb.RestListEntitySharesRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        shares = await self._sharing.list_shares(current_principal())
        response = pb.ListEntitySharesResponse(shares=[_message(s) for s in shares])
        return await answer(context, proto_document(response))

    async def RestUnshareEntity(
        self, request: rest_pb.RestUnshareEntityRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        await self._sharing.unshare(current_principal(), request.entity_id, request.tenant_id)
        return await answer(context, proto_document(pb.UnshareEntityResponse()))
