"""AuthService: login and logout, for gRPC and REST alike (REST clients send raw JSON in
`body`, parsed strictly here; Envoy prints the typed answers)."""

from __future__ import annotations

import hmac

import grpc
from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service import proto_json
from service.auth import current_principal
from service.domain.access import format_privileges
from service.domain.users import SessionManager
from service.v1 import auth_service_pb2 as pb
from service.v1 import auth_service_pb2_grpc

# Longer forwarded addresses are cut (a direct gRPC client may send anything).
_MAX_ADDRESS = 64


def _timestamp(micros: int) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def client_address(context: grpc.aio.ServicerContext, gateway_token: str) -> str:
    """The calling client's IP address: the peer's, or, when the call carries the gateway's
    token (`x-eventmgmt-gateway`), the X-Forwarded-For that the gateway set. Being on this
    machine vouches for nothing: any local program can reach the gRPC port and send its own
    X-Forwarded-For, and would then choose which address the login throttle counts."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0].strip("[]") if kind in ("ipv4", "ipv6") else peer
    metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
    vouched = metadata.get("x-eventmgmt-gateway", "")
    if gateway_token and hmac.compare_digest(vouched.encode(), gateway_token.encode()):
        forwarded = metadata.get("x-forwarded-for", "").rsplit(",", 1)[-1].strip()
        return forwarded[:_MAX_ADDRESS] or host[:_MAX_ADDRESS]
    return host[:_MAX_ADDRESS]


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, sessions: SessionManager, gateway_token: str) -> None:
        self._sessions = sessions
        self._gateway_token = gateway_token

    async def Login(
        self, request: pb.LoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        credentials = request.credentials
        if request.HasField("body"):
            credentials, _ = proto_json.parse(request.body.data, pb.LoginCredentials())
        session = await self._sessions.login(
            credentials.username, credentials.password, client_address(context, self._gateway_token)
        )
        user = session.user
        return pb.LoginResponse(
            token=session.token,
            token_type="Bearer",
            expires_at=_timestamp(session.claims.expires_us),
            tenant=user.tenant_id,
            role=user.role.title,
            privileges=format_privileges(user.privileges).split(","),
            domains=[user.domain],
            user_id=user.id,
            username=user.username,
        )

    async def Logout(
        self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogoutResponse:
        if request.HasField("body") and request.body.data.strip():
            proto_json.parse(request.body.data, empty_pb2.Empty())
        revoked = await self._sessions.logout(current_principal())
        return pb.LogoutResponse(revoke_time=_timestamp(revoked))
