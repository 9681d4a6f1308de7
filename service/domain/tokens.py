"""Login tokens: JWTs signed with HMAC-SHA256 under a key id (`kid`). One key signs; every key
of the set verifies, so that a new key can be added everywhere before it starts signing and an
old one dropped once the tokens it signed expired (README, "Signing keys")."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import jwt

from service.domain.errors import Unauthenticated

ALGORITHM = "HS256"
ISSUER = "eventmgmt"
# HMAC keys of at least the hash's size (RFC 7518 section 3.2).
MIN_KEY_BYTES = 32
DEFAULT_TTL_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says: whose it is, its id (for logout) and its times (µs)."""

    user_id: str
    tenant_id: str
    token_id: str
    issued_us: int
    expires_us: int


@dataclass(frozen=True)
class SigningKeys:
    """The verification keys by id and the id of the one that signs."""

    keys: dict[str, bytes]
    active: str

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError(f"the active signing key {self.active!r} is not among the keys")
        short = sorted(kid for kid, key in self.keys.items() if len(key) < MIN_KEY_BYTES)
        if short:
            raise ValueError(f"signing keys shorter than {MIN_KEY_BYTES} bytes: {short}")


def _invalid(what: str) -> Unauthenticated:
    return Unauthenticated(f"the token is not valid: {what}", reason="TOKEN_INVALID")


class TokenCodec:
    """Issues and verifies login tokens."""

    def __init__(self, keys: SigningKeys, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self._keys = keys
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: str, tenant_id: str, now_us: int) -> tuple[str, TokenClaims]:
        claims = TokenClaims(
            user_id=user_id,
            tenant_id=tenant_id,
            token_id=secrets.token_hex(16),
            issued_us=now_us,
            # Whole seconds, as the token says it.
            expires_us=(now_us // 1_000_000 + self.ttl_seconds) * 1_000_000,
        )
        token = jwt.encode(
            {
                "iss": ISSUER,
                "sub": claims.user_id,
                "tid": claims.tenant_id,
                "jti": claims.token_id,
                "iat": now_us // 1_000_000,
                "exp": claims.expires_us // 1_000_000,
                # iat in microseconds: a password change voids the tokens issued before it,
                # also those of the same second.
                "ius": now_us,
            },
            self._keys.keys[self._keys.active],
            algorithm=ALGORITHM,
            headers={"kid": self._keys.active},
        )
        return token, claims

    def verify(self, token: str) -> TokenClaims:
        """The claims of a token signed by one of the keys and not expired; Unauthenticated
        (TOKEN_INVALID or TOKEN_EXPIRED) otherwise."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise _invalid("it is not a token issued by POST /auth/login") from None
        key = self._keys.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid("it was signed with a key this service does not know")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                "the token expired; sign in again (POST /auth/login)", reason="TOKEN_EXPIRED"
            ) from None
        except jwt.InvalidTokenError as error:
            raise _invalid(str(error)) from None
        fields = (claims.get("sub"), claims.get("tid"), claims.get("jti"))
        issued = claims.get("ius")
        if not all(isinstance(f, str) for f in fields) or not isinstance(issued, int):
            raise _invalid("it lacks its claims")
        return TokenClaims(
            user_id=claims["sub"],
            tenant_id=claims["tid"],
            token_id=claims["jti"],
            issued_us=issued,
            expires_us=int(claims["exp"]) * 1_000_000,
        )
