"""UserService: the users of the Admin caller's tenant (gRPC only)."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from service.auth import current_principal
from service.domain.access import format_privileges
from service.domain.users import User, UserAdmin, check_user_page_size
from service.servicers.registry_service import decode_page_token, next_page_token
from service.v1 import user_service_pb2 as pb
from service.v1 import user_service_pb2_grpc


def _timestamp(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def user_to_proto(user: User) -> pb.User:
    message = pb.User(
        id=user.id,
        username=user.username,
        tenant_id=user.tenant_id,
        role=user.role.title,
        privileges=format_privileges(user.privileges).split(","),
        domain=user.domain,
        create_time=_timestamp(user.create_time),
        update_time=_timestamp(user.update_time),
    )
    if user.revoke_time is not None:
        message.revoke_time.CopyFrom(_timestamp(user.revoke_time))
    return message


class UserServicer(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self, users: UserAdmin) -> None:
        self._users = users

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateUserResponse:
        wanted = request.user
        user = await self._users.create(
            current_principal(),
            wanted.username,
            request.password,
            wanted.role,
            list(wanted.privileges),
            wanted.domain,
        )
        return pb.CreateUserResponse(user=user_to_proto(user))

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsersResponse:
        size = check_user_page_size(request.page_size)
        users = await self._users.list(
            current_principal(), decode_page_token(request.page_token), size
        )
        return pb.ListUsersResponse(
            users=[user_to_proto(u) for u in users],
            next_page_token=next_page_token([u.username for u in users], size),
        )

    async def GetUser(
        self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUserResponse:
        user = await self._users.get(current_principal(), request.user_id)
        return pb.GetUserResponse(user=user_to_proto(user))

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateUserResponse:
        user = await self._users.update(
            current_principal(),
            request.user_id,
            list(request.update_mask.paths),
            password=request.password,
            role_text=request.user.role,
            privileges=list(request.user.privileges),
            domain=request.user.domain,
        )
        return pb.UpdateUserResponse(user=user_to_proto(user))

    async def RevokeUser(
        self, request: pb.RevokeUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeUserResponse:
        user = await self._users.revoke(current_principal(), request.user_id)
        return pb.RevokeUserResponse(user=user_to_proto(user))
