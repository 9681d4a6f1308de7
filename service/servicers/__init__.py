"""The gRPC servicers: thin translators between messages and the domain."""


def kept_warning(kept: list[str]) -> str:
    """An HTTP Warning (299) naming the fields that were sent but are not updatable."""
    return f'299 - "not updatable, stored value kept: {", ".join(kept)}"'
