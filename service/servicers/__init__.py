"""The gRPC servicers: thin translators between messages and the domain."""

import base64
import json

from service.domain.errors import invalid


def encode_offset_token(offset: int) -> str:
    """An opaque page token that resumes a list at `offset`."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_offset_token(token: str, field_name: str) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise invalid(field_name, "is not a token returned by a previous page") from None
    if not isinstance(offset, int) or offset < 0:
        raise invalid(field_name, "is not a token returned by a previous page")
    return offset


def kept_warning(kept: list[str]) -> str:
    """An HTTP Warning (299) naming the fields that were sent but are not updatable."""
    return f'299 - "not updatable, stored value kept: {", ".join(kept)}"'
