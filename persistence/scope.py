"""The SQL that keeps a query inside a principal's scope: its tenant, its domain subtree and,
when asked, the entities other tenants share with it."""

from __future__ import annotations

from typing import Any

from service.domain.access import ROOT_DOMAIN, Principal
from service.domain.live import EventFilter

# A share reaches the entity's events inside the sharer's subtree (s.domain), by the same
# equality of prefixes as the principal's own subtree below.
_SHARED_SUBTREE = (
    "(s.domain = '/' OR events.domain = s.domain "
    "OR substr(events.domain, 1, length(s.domain) + 1) = s.domain || '/')"
)


def scope_clause(
    principal: Principal, param: str, *, whole_tenant: bool = False, include_shared: bool = False
) -> tuple[str, list[Any]]:
    """The WHERE clause that keeps a query inside the principal's tenant and domain subtree,
    and, when asked, adds the events of entities other tenants share with it."""
    clause = f"tenant_id = {param}"
    args: list[Any] = [principal.tenant_id]
    if not whole_tenant and principal.domain != ROOT_DOMAIN:
        # A prefix compared by equality, not LIKE ('_' in a domain name is no wildcard) nor a
        # range: under a natural-language collation (ICU, en_US) a range lets /root/Sub1/x
        # into /root/sub1, while equality stays exact under every deterministic collation.
        subtree = principal.domain + "/"
        clause += f" AND (domain = {param} OR substr(domain, 1, {param}) = {param})"
        args += [principal.domain, len(subtree), subtree]
    if include_shared:
        clause = (
            f"(({clause}) OR EXISTS (SELECT 1 FROM entity_shares s "
            f"WHERE s.receiver_tenant_id = {param} AND s.owner_tenant_id = events.tenant_id "
            f"AND s.entity_id = events.entity_id AND {_SHARED_SUBTREE}))"
        )
        args.append(principal.tenant_id)
    return clause, args


def filter_clauses(event_filter: EventFilter, p: str) -> tuple[str, list[Any]]:
    """SQL for EventFilter.matches, appended to a scoped WHERE clause."""
    sql, args = "", []
    if event_filter.domain != ROOT_DOMAIN:
        subtree = event_filter.domain + "/"
        sql += f" AND (domain = {p} OR substr(domain, 1, {p}) = {p})"
        args += [event_filter.domain, len(subtree), subtree]
    for column, values in (
        ("type_id", event_filter.type_ids),
        ("severity", event_filter.severities),
        ("classification", event_filter.classifications),
    ):
        if values:
            sql += f" AND {column} IN ({', '.join([p] * len(values))})"
            args += sorted(values)
    for column, value in (
        ("entity_type", event_filter.entity_type),
        ("entity_id", event_filter.entity_id),
    ):
        if value:
            sql += f" AND {column} = {p}"
            args.append(value)
    return sql, args
