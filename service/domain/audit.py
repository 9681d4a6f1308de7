"""Internal events that record access changes in the tenant's own log
(docs/platform-events.md#internal-events): logins, users and API keys created, changed or
revoked. System codes 1301-1399; they never hold a secret (no password, hash, token or key,
only ids and names)."""

from __future__ import annotations

from typing import Any

from service.domain.custom_fields import STANDARD_EVENT
from service.domain.events import Event, new_event_id, now_us

CODE_LOGIN_SUCCEEDED = "1301"
CODE_LOGIN_FAILED = "1302"
CODE_LOGOUT = "1303"
CODE_USER_CREATED = "1311"
CODE_USER_CHANGED = "1312"
CODE_USER_PRIVILEGES_CHANGED = "1313"
CODE_USER_REVOKED = "1314"
CODE_KEY_CREATED = "1321"
CODE_KEY_REVOKED = "1322"
# Severity 5 (TRIVIAL) for routine changes, 4 (LOW) for what an operator may want to see.
_SEVERITY = {CODE_LOGIN_FAILED: 4, CODE_USER_REVOKED: 4, CODE_KEY_REVOKED: 4}


def access_event(
    tenant_id: str,
    domain: str,
    code: str,
    entity_type: str,
    entity_id: str,
    description: str,
    source: dict[str, Any],
) -> Event:
    """The internal event of one access change, in `tenant_id`'s log at `domain`."""
    now = now_us()
    return Event(
        id=new_event_id(),
        tenant_id=tenant_id,
        type_id=STANDARD_EVENT,
        entity_type=entity_type,
        entity_id=entity_id,
        domain=domain,
        timestamp=now,
        create_time=now,
        update_time=now,
        severity=_SEVERITY.get(code, 5),
        code=code,
        description=description,
        source=source,
        classification="INTERNAL",
        category="ACCESS",
        internal=True,
    )
