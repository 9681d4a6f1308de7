"""schemathesis hooks for the contract test (tests/test_openapi.py), loaded through
SCHEMATHESIS_HOOKS. Each known failure is named, with why it is set aside and until when."""

from __future__ import annotations

from typing import Any

import schemathesis

# A REST header whose name is a valid HTTP token but not a valid gRPC metadata key (`+aw`,
# `a$b`) is forwarded by Envoy to the gRPC server, which fails the call with INTERNAL:
# `500 {"code":13,"message":"Illegal header key: ..."}`. A gateway bug (issue 10, engineer
# gw), reported to the lead; remove this once the gateway drops or refuses such headers.
KNOWN_GATEWAY_500 = b"Illegal header key"


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    return not (response.status_code == 500 and KNOWN_GATEWAY_500 in response.content)
