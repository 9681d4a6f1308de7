"""The find parser on its own: any JSON either parses or fails with a named clause, never
with an unexpected exception (which the server would turn into a 500)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.errors import InvalidInput
from service.domain.find_parser import parse_find_request

NAMES = [
    "query", "bool", "must", "filter", "should", "must_not", "minimum_should_match", "term",
    "terms", "range", "gt", "gte", "lt", "lte", "exists", "field", "prefix", "wildcard", "match",
    "match_phrase", "ids", "values", "match_all", "size", "from", "sort", "_source", "aggs",
    "aggregations", "global", "date_histogram", "histogram", "interval", "calendar_interval",
    "fixed_interval", "ranges", "order", "_count", "_key", "min", "max", "avg", "cardinality",
    "timestamp", "type", "message", "severity", "source.thingName", "custom.n", "value",
    "operator", "includes", "excludes", "min_doc_count", "asc", "desc", "missing", "month",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NAMES),
    st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, database=None)
@given(document=st.dictionaries(st.sampled_from(NAMES), documents, max_size=3))
def test_any_document_parses_or_names_the_broken_rule(document: Any) -> None:
    try:
        parse_find_request(document)
    except InvalidInput as error:
        assert error.reason in ("INVALID_ARGUMENTS", "PROPERTY_REQUIRED")
        assert all(v.field and v.rule for v in error.violations)


def test_values_no_database_can_bind_are_refused_by_name() -> None:
    for document, field in [
        ({"query": {"term": {"severity": 2**64}}}, "query.term.severity"),
        ({"query": {"term": {"category": "a\x00b"}}}, "query.term.category"),
        ({"query": {"range": {"timestamp": {"gte": 10**16}}}}, "query.range.timestamp.gte"),
    ]:
        try:
            parse_find_request(document)
        except InvalidInput as error:
            assert [v.field for v in error.violations] == [field]
        else:
            raise AssertionError(f"accepted {document}")
