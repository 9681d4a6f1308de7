"""Find: an Elasticsearch search request run inside the caller's scope. The request's
fields are in find_fields, its parsed form in find_query, the parser in find_parser and the
answer document in find_answer; this module knows neither gRPC nor SQL."""

from __future__ import annotations

import time
from typing import Any, Protocol

from service.domain.access import Principal
from service.domain.find_answer import FindResult, answer_document
from service.domain.find_parser import parse_find_request
from service.domain.find_query import FindRequest


class FindRepository(Protocol):
    async def find(self, principal: Principal, request: FindRequest) -> FindResult:
        """Runs the request within the principal's tenant and domain subtree (and entities
        shared with the tenant when the request asks), whatever the query says."""
        ...


class EventFinder:
    """Runs find requests for a principal; the Read role suffices."""

    def __init__(self, repository: FindRepository) -> None:
        self._repository = repository

    async def find(
        self, principal: Principal, document: Any, *, include_shared: bool = False
    ) -> dict[str, Any]:
        started = time.monotonic()
        request = parse_find_request(document, include_shared)
        result = await self._repository.find(principal, request)
        took = int((time.monotonic() - started) * 1000)
        return answer_document(request, result, took)
