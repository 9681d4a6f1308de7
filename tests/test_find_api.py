"""Find (docs/find-api.md#find) end to end: `POST /events/find` through the real Envoy, and
EventSearchService.FindEvents over gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from helpers import STANDARD_EVENT_ID, Service
from service.v1 import event_search_service_pb2 as pb
from service.v1 import event_search_service_pb2_grpc

if TYPE_CHECKING:
    from helpers import Keys

pytestmark = pytest.mark.integration

# 2016-04-14T19:23:33.164Z, the start of the documented example's range, and one hour.
T0 = 1460661813164
HOUR = 3_600_000


@dataclass
class Dataset:
    """Events of one run, told apart from other tests' by their entityId."""

    entity: str
    ids: dict[str, str]  # label -> event id

    def scoped(self, clause: dict[str, Any]) -> dict[str, Any]:
        return {"bool": {"filter": [{"term": {"entityId": self.entity}}, clause]}}


EVENTS: dict[str, dict[str, Any]] = {
    "a": {
        "description": "Rule TestRule triggered for 00000001, temp=15",
        "severity": 1,
        "classification": "ALARM",
        "category": "YOUR.CATEGORY",
        "acknowledgementRequired": True,
        "source": {"thingName": "000001", "thingType": "1", "domain": "root", "rule": "TestRule"},
        "timestamp": T0,
        "domain": "/root",
    },
    "b": {
        "description": "Pump overheating",
        "severity": 2,
        "classification": "WARNING",
        "category": "PUMP",
        "source": {"thingName": "000002", "thingType": "2", "resource": "temp"},
        "timestamp": T0 + HOUR,
        "domain": "/root/sub1",
        "code": "10001",
    },
    "c": {
        "description": "engine error happened",
        "severity": 2,
        "classification": "ALARM",
        "source": "eventSource",
        "timestamp": T0 + 2 * HOUR,
        "domain": "/root/sub1/sub11",
    },
    "d": {
        "description": "Error in the ENGINE",
        "severity": 5,
        "timestamp": T0 + 30 * 24 * HOUR,
        "domain": "/root/sub10",
    },
}


@pytest.fixture(scope="module")
def dataset(service: Service, keys: Keys) -> Dataset:
    entity = f"find-{uuid.uuid4().hex[:8]}"
    ids = {}
    for label, fields in EVENTS.items():
        answer = service.request("POST", "/events", {**fields, "entityId": entity}, key=keys.writer)
        assert answer.status == 201, answer.body
        ids[label] = answer.json()["id"]
    acknowledged = service.request("POST", f"/events/{ids['a']}/acknowledge", key=keys.writer)
    assert acknowledged.status == 200
    return Dataset(entity, ids)


def find(service: Service, key: str, body: Any) -> Any:
    answer = service.request("POST", "/events/find", body, key=key)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    return answer.json()


def labels(data: Dataset, answer: Any) -> list[str]:
    by_id = {v: k for k, v in data.ids.items()}
    return [by_id[h["_id"]] for h in answer["hits"]["hits"]]


def error_of(service: Service, key: str, body: Any) -> tuple[int, str, dict[str, str]]:
    answer = service.request("POST", "/events/find", body, key=key)
    document = answer.json()
    reason = next(d["reason"] for d in document["details"] if d["@type"].endswith("ErrorInfo"))
    bad = [d for d in document["details"] if d["@type"].endswith("BadRequest")]
    fields = {v["field"]: v["description"] for b in bad for v in b["fieldViolations"]}
    return answer.status, reason, fields


def test_the_documented_example_payload_works_as_written(service: Service, keys: Keys) -> None:
    documented = {
        "query": {
            "size": 1000,
            "query": {
                "bool": {
                    "filter": [
                        {"range": {"timestamp": {"gte": 1460661813164, "lte": 1460705013163}}},
                        {"term": {"type": "THING.CREATE"}},
                    ]
                }
            },
        }
    }
    answer = find(service, keys.read, documented)
    assert answer["timed_out"] is False
    assert isinstance(answer["took"], int)
    assert answer["hits"] == {
        "total": {"value": 0, "relation": "eq"},
        "max_score": None,
        "hits": [],
    }


def test_the_wrapped_form_finds_events_in_the_range(
    service: Service, keys: Keys, dataset: Dataset
) -> None:
    body = {
        "query": {
            "size": 1000,
            "query": dataset.scoped(
                {"range": {"timestamp": {"gte": 1460661813164, "lte": 1460705013163}}}
            ),
        }
    }
    answer = find(service, keys.read, body)
    assert sorted(labels(dataset, answer)) == ["a", "b", "c"]
    assert answer["hits"]["total"] == {"value": 3, "relation": "eq"}
    hit = next(h for h in answer["hits"]["hits"] if h["_id"] == dataset.ids["a"])
    source = hit["_source"]
    assert source["timestamp"] == T0
    assert source["message"] == EVENTS["a"]["description"]
    assert source["type"] == STANDARD_EVENT_ID
    assert source["source"] == EVENTS["a"]["source"]
    assert source["acknowledgementRequired"] is True
    assert isinstance(source["acknowledgedAt"], int)
    assert source["acknowledgedBy"] == "test-key"
    assert source["classification"] == "ALARM"
    assert source["category"] == "YOUR.CATEGORY"


CLAUSES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("match_all", {"match_all": {}}, ["a", "b", "c", "d"]),
    ("term", {"term": {"classification": "ALARM"}}, ["a", "c"]),
    ("term value object", {"term": {"severity": {"value": 2}}}, ["b", "c"]),
    ("term on source object key", {"term": {"source.thingName": "000002"}}, ["b"]),
    ("term on source string", {"term": {"source": "eventSource"}}, ["c"]),
    ("term on a boolean", {"term": {"acknowledgementRequired": True}}, ["a"]),
    ("term on message is the whole text", {"term": {"message": "Pump overheating"}}, ["b"]),
    ("term on message.lowercase", {"term": {"message.lowercase": "PUMP OVERHEATING"}}, ["b"]),
    ("term on timestamp in millis", {"term": {"timestamp": T0 + HOUR}}, ["b"]),
    ("terms", {"terms": {"severity": [1, 5]}}, ["a", "d"]),
    ("range gt lt", {"range": {"severity": {"gt": 1, "lt": 5}}}, ["b", "c"]),
    (
        "range on ISO times",
        {"range": {"timestamp": {"gte": "2016-04-14T20:23:33.164Z", "lt": "2016-05-01"}}},
        ["b", "c"],
    ),
    ("range on acknowledgedAt", {"range": {"acknowledgedAt": {"gte": T0}}}, ["a"]),
    ("exists", {"exists": {"field": "category"}}, ["a", "b"]),
    ("exists on a source key", {"exists": {"field": "source.resource"}}, ["b"]),
    ("prefix", {"prefix": {"category": "YOUR."}}, ["a"]),
    ("prefix is case-sensitive", {"prefix": {"category": "your."}}, []),
    ("wildcard", {"wildcard": {"source.thingName": "00000?"}}, ["a", "b"]),
    ("wildcard with star", {"wildcard": {"message": "*over*"}}, ["b"]),
    ("match any word, any case", {"match": {"message": "ENGINE pump"}}, ["b", "c", "d"]),
    (
        "match all words",
        {"match": {"message": {"query": "error engine", "operator": "and"}}},
        ["c", "d"],
    ),
    ("match_phrase", {"match_phrase": {"message": "engine error"}}, ["c"]),
    ("match on a keyword is a term", {"match": {"classification": "WARNING"}}, ["b"]),
    ("ids", {"ids": {"values": ["<a>", "<d>"]}}, ["a", "d"]),
    (
        "bool must and must_not",
        {
            "bool": {
                "must": [{"term": {"classification": "ALARM"}}],
                "must_not": [{"term": {"severity": 1}}],
            }
        },
        ["c"],
    ),
    (
        "must_not keeps events without the field",
        {"bool": {"must_not": [{"term": {"category": "PUMP"}}]}},
        ["a", "c", "d"],
    ),
    (
        "should with minimum_should_match",
        {
            "bool": {
                "should": [
                    {"term": {"severity": 2}},
                    {"term": {"classification": "ALARM"}},
                    {"exists": {"field": "code"}},
                ],
                "minimum_should_match": 2,
            }
        },
        ["b", "c"],
    ),
    (
        "nested bools",
        {
            "bool": {
                "should": [
                    {"bool": {"filter": [{"term": {"severity": 5}}]}},
                    {"bool": {"must": {"match": {"message": "rule"}}}},
                ]
            }
        },
        ["a", "d"],
    ),
]


@pytest.mark.parametrize(
    ("query", "expected"), [c[1:] for c in CLAUSES], ids=[c[0] for c in CLAUSES]
)
def test_each_query_clause_finds_the_expected_events(
    service: Service, keys: Keys, dataset: Dataset, query: dict[str, Any], expected: list[str]
) -> None:
    text = json.dumps(query)
    for label, event_id in dataset.ids.items():
        text = text.replace(f"<{label}>", event_id)
    answer = find(service, keys.read, {"query": dataset.scoped(json.loads(text))})
    assert sorted(labels(dataset, answer)) == expected


def test_sort_paging_and_source_filtering(service: Service, keys: Keys, dataset: Dataset) -> None:
    body = {
        "query": dataset.scoped({"match_all": {}}),
        "sort": [{"message.lowercase": "asc"}],
        "from": 1,
        "size": 2,
        "_source": {"includes": ["message", "source.*"], "excludes": ["source.rule"]},
    }
    answer = find(service, keys.read, body)
    # engine error happened < error in the engine < pump overheating < rule testrule ...
    assert labels(dataset, answer) == ["d", "b"]
    assert answer["hits"]["total"]["value"] == 4
    assert [h["sort"] for h in answer["hits"]["hits"]] == [
        ["error in the engine"],
        ["pump overheating"],
    ]
    assert answer["hits"]["hits"][1]["_source"] == {
        "message": "Pump overheating",
        "source": {"thingName": "000002", "thingType": "2", "resource": "temp"},
    }

    inside = {"query": {"query": dataset.scoped({"match_all": {}}), "sort": ["severity"]}}
    answer = find(service, keys.read, {**inside, "_source": False})
    assert labels(dataset, answer) == ["a", "b", "c", "d"]
    assert all("_source" not in h for h in answer["hits"]["hits"])

    answer = find(
        service,
        keys.read,
        {"query": dataset.scoped({"match_all": {}}), "sort": [{"timestamp": {"order": "desc"}}]},
    )
    assert labels(dataset, answer) == ["d", "c", "b", "a"]
    assert answer["hits"]["hits"][0]["sort"] == [T0 + 30 * 24 * HOUR]


def test_aggregations_are_computed_over_the_matching_events(
    service: Service, keys: Keys, dataset: Dataset
) -> None:
    body = {
        "query": dataset.scoped({"match_all": {}}),
        "size": 0,
        "aggs": {
            "by_class": {
                "terms": {"field": "classification", "size": 1},
                "aggs": {"worst": {"min": {"field": "severity"}}},
            },
            "by_thing": {"terms": {"field": "source.thingName", "order": {"_key": "desc"}}},
            "hourly": {"date_histogram": {"field": "timestamp", "fixed_interval": "1h"}},
            "monthly": {"date_histogram": {"field": "timestamp", "calendar_interval": "month"}},
            "severities": {"histogram": {"field": "severity", "interval": 2, "min_doc_count": 1}},
            "bands": {
                "range": {"field": "severity", "ranges": [{"to": 2}, {"from": 2, "key": "high"}]},
                "aggs": {"n": {"value_count": {"field": "category"}}},
            },
            "avg": {"avg": {"field": "severity"}},
            "sum": {"sum": {"field": "severity"}},
            "max": {"max": {"field": "severity"}},
            "first": {"min": {"field": "timestamp"}},
            "classes": {"cardinality": {"field": "classification"}},
            "class_days": {
                "terms": {"field": "classification"},
                "aggs": {"days": {"date_histogram": {"field": "timestamp", "interval": "day"}}},
            },
            "counted": {"value_count": {"field": "code"}},
        },
    }
    answer = find(service, keys.read, body)
    aggs = answer["aggregations"]
    assert answer["hits"]["hits"] == []
    assert aggs["by_class"] == {
        "doc_count_error_upper_bound": 0,
        "sum_other_doc_count": 1,
        "buckets": [{"key": "ALARM", "doc_count": 2, "worst": {"value": 1.0}}],
    }
    assert [(b["key"], b["doc_count"]) for b in aggs["by_thing"]["buckets"]] == [
        ("000002", 1),
        ("000001", 1),
    ]
    hourly = aggs["hourly"]["buckets"]
    assert hourly[0] == {
        "key_as_string": "2016-04-14T19:00:00.000Z",
        "key": 1460660400000,
        "doc_count": 1,
    }
    assert len(hourly) == 30 * 24 + 1  # empty hours in between, as Elasticsearch gives
    assert sum(b["doc_count"] for b in hourly) == 4
    assert [(b["key_as_string"], b["doc_count"]) for b in aggs["monthly"]["buckets"]] == [
        ("2016-04-01T00:00:00.000Z", 3),
        ("2016-05-01T00:00:00.000Z", 1),
    ]
    assert aggs["severities"]["buckets"] == [
        {"key": 0.0, "doc_count": 1},
        {"key": 2.0, "doc_count": 2},
        {"key": 4.0, "doc_count": 1},
    ]
    assert aggs["bands"]["buckets"] == [
        {"key": "*-2.0", "to": 2.0, "doc_count": 1, "n": {"value": 1}},
        {"key": "high", "from": 2.0, "doc_count": 3, "n": {"value": 1}},
    ]
    assert aggs["avg"] == {"value": 2.5}
    assert aggs["sum"] == {"value": 10.0}
    assert aggs["max"] == {"value": 5.0}
    assert aggs["first"] == {"value": float(T0), "value_as_string": "2016-04-14T19:23:33.164Z"}
    assert aggs["classes"] == {"value": 2}
    assert [
        (b["key"], [(d["key_as_string"], d["doc_count"]) for d in b["days"]["buckets"]])
        for b in aggs["class_days"]["buckets"]
    ] == [
        ("ALARM", [("2016-04-14T00:00:00.000Z", 2)]),
        ("WARNING", [("2016-04-14T00:00:00.000Z", 1)]),
    ]
    assert aggs["counted"] == {"value": 1}


def test_results_and_counts_stay_inside_the_callers_tenant_and_domains(
    service: Service, keys: Keys, dataset: Dataset
) -> None:
    body = {
        "query": dataset.scoped({"match_all": {}}),
        "aggs": {"n": {"value_count": {"field": "id"}}, "t": {"terms": {"field": "domain"}}},
    }
    answer = find(service, keys.sub1_writer, body)
    assert sorted(labels(dataset, answer)) == ["b", "c"]  # not /root, not /root/sub10
    assert answer["aggregations"]["n"] == {"value": 2}
    assert {b["key"] for b in answer["aggregations"]["t"]["buckets"]} == {
        "/root/sub1",
        "/root/sub1/sub11",
    }
    # A query naming another domain cannot widen the scope.
    wider = {"query": dataset.scoped({"term": {"domain": "/root"}})}
    assert find(service, keys.sub1_writer, wider)["hits"]["total"]["value"] == 0

    other = find(service, keys.other_tenant, body)
    assert other["hits"]["total"]["value"] == 0
    assert other["aggregations"] == {
        "n": {"value": 0},
        "t": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": []},
    }


BAD: list[tuple[str, Any, str, str]] = [
    ("global aggregation", {"query": {"match_all": {}}, "aggs": {"g": {"global": {}}}},
     "INVALID_ARGUMENTS", "aggs.g.global"),
    ("global in the wrapped form",
     {"query": {"query": {"match_all": {}}, "aggs": {"g": {"global": {}}}}},
     "INVALID_ARGUMENTS", "aggs.g.global"),
    ("no query", {"size": 10}, "PROPERTY_REQUIRED", "query"),
    ("empty body", b"", "PROPERTY_REQUIRED", "query"),
    ("wrapped form without a query", {"query": {"size": 10}}, "PROPERTY_REQUIRED", "query"),
    ("unsupported clause", {"query": {"fuzzy": {"message": "x"}}}, "INVALID_ARGUMENTS",
     "query.fuzzy"),
    ("nested unsupported clause",
     {"query": {"bool": {"filter": [{"term": {"severity": 1}}, {"script": {}}]}}},
     "INVALID_ARGUMENTS", "query.bool.filter[1].script"),
    ("unknown field", {"query": {"term": {"severty": 1}}}, "INVALID_ARGUMENTS",
     "query.term.severty"),
    ("wrong value type", {"query": {"term": {"severity": "high"}}}, "INVALID_ARGUMENTS",
     "query.term.severity"),
    ("range on a boolean", {"query": {"range": {"acknowledged": {"gte": True}}}},
     "INVALID_ARGUMENTS", "query.range.acknowledged"),
    ("date math", {"query": {"range": {"timestamp": {"gte": "now-1d"}}}}, "INVALID_ARGUMENTS",
     "query.range.timestamp.gte"),
    ("unsupported option", {"query": {"match": {"message": {"query": "x", "fuzziness": 2}}}},
     "INVALID_ARGUMENTS", "query.match.message.fuzziness"),
    ("size over the cap", {"query": {"match_all": {}}, "size": 1001}, "INVALID_ARGUMENTS", "size"),
    ("window over 10000", {"query": {"match_all": {}}, "from": 9500, "size": 1000},
     "INVALID_ARGUMENTS", "from"),
    ("text is not sortable", {"query": {"match_all": {}}, "sort": ["message"]},
     "INVALID_ARGUMENTS", "sort[0].message"),
    ("unsupported aggregation", {"query": {"match_all": {}}, "aggs": {"x": {"top_hits": {}}}},
     "INVALID_ARGUMENTS", "aggs.x.top_hits"),
    ("sub-aggregations two deep",
     {"query": {"match_all": {}}, "aggs": {"x": {"terms": {"field": "type"}, "aggs": {
         "y": {"terms": {"field": "code"}, "aggs": {"z": {"max": {"field": "severity"}}}}}}}},
     "INVALID_ARGUMENTS", "aggs.x.aggs.y.aggs"),
    ("bucket under range",
     {"query": {"match_all": {}}, "aggs": {"r": {
         "range": {"field": "severity", "ranges": [{"to": 2}]},
         "aggs": {"t": {"terms": {"field": "type"}}}}}},
     "INVALID_ARGUMENTS", "aggs.r.aggs"),
    ("bad interval", {"query": {"match_all": {}}, "aggs": {"h": {"date_histogram": {
        "field": "timestamp", "calendar_interval": "3d"}}}}, "INVALID_ARGUMENTS",
     "aggs.h.date_histogram.calendar_interval"),
    ("metric on text", {"query": {"match_all": {}}, "aggs": {"m": {"avg": {"field": "category"}}}},
     "INVALID_ARGUMENTS", "aggs.m.avg.field"),
    ("unknown top-level key", {"query": {"match_all": {}}, "highlight": {}}, "INVALID_ARGUMENTS",
     "highlight"),
    ("malformed JSON", b'{"query": ', "MALFORMED_JSON", "body"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "reason", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_queries_answer_400_naming_the_clause(
    service: Service, keys: Keys, body: Any, reason: str, field: str
) -> None:
    status, got_reason, fields = error_of(service, keys.read, body)
    assert (status, got_reason) == (400, reason)
    assert field in fields, fields


def test_find_needs_a_valid_key(service: Service) -> None:
    body = {"query": {"match_all": {}}}
    assert service.request("POST", "/events/find", body).status == 401
    assert service.request("POST", "/events/find", body, key="emk_nope").status == 401


# --- gRPC -----------------------------------------------------------------------------------


@pytest.fixture
def search(service: Service) -> Iterator[event_search_service_pb2_grpc.EventSearchServiceStub]:
    with grpc.insecure_channel(service.grpc_target) as channel:
        yield event_search_service_pb2_grpc.EventSearchServiceStub(channel)


def test_find_over_grpc_takes_and_answers_json_text(
    search: event_search_service_pb2_grpc.EventSearchServiceStub, keys: Keys, dataset: Dataset
) -> None:
    query = {
        "query": dataset.scoped({"match": {"message": "engine"}}),
        "sort": [{"timestamp": "asc"}],
        "aggs": {"s": {"max": {"field": "severity"}}},
    }
    reply = search.FindEvents(
        pb.FindEventsRequest(query_json=json.dumps(query)), metadata=(("x-api-key", keys.read),)
    )
    answer = json.loads(reply.result_json)
    assert labels(dataset, answer) == ["c", "d"]
    assert answer["aggregations"]["s"] == {"value": 5.0}


def test_find_errors_over_grpc_carry_the_reason_and_the_clause(
    search: event_search_service_pb2_grpc.EventSearchServiceStub, keys: Keys
) -> None:
    cases = [
        ('{"query": {"match_all": {}}, "aggs": {"g": {"global": {}}}}', "INVALID_ARGUMENTS"),
        ("{}", "PROPERTY_REQUIRED"),
        ("", "PROPERTY_REQUIRED"),
        ("not json", "MALFORMED_JSON"),
    ]
    for text, reason in cases:
        with pytest.raises(grpc.RpcError) as caught:
            search.FindEvents(
                pb.FindEventsRequest(query_json=text), metadata=(("x-api-key", keys.read),)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in status.details)
        assert info.reason == reason
    with pytest.raises(grpc.RpcError) as caught:
        search.FindEvents(pb.FindEventsRequest(query_json="{}"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_answer_too_large_for_the_gateway_is_a_400_naming_size(
    service: Service, keys: Keys
) -> None:
    entity = f"big-{uuid.uuid4().hex[:8]}"
    for _ in range(70):
        body = {"entityId": entity, "source": {"blob": "x" * 15_000}}
        assert service.request("POST", "/events", body, key=keys.writer).status == 201
    query = {"query": {"term": {"entityId": entity}}, "size": 70}

    status, reason, fields = error_of(service, keys.read, query)
    assert (status, reason) == (400, "ANSWER_TOO_LARGE")
    assert "_source" in fields["size"]
    smaller = find(service, keys.read, {**query, "_source": {"excludes": ["source"]}})
    assert len(smaller["hits"]["hits"]) == 70


def test_include_shared_adds_the_events_of_entities_shared_with_the_tenant(
    service: Service, keys: Keys, search: event_search_service_pb2_grpc.EventSearchServiceStub
) -> None:
    entity = f"shared-{uuid.uuid4().hex[:8]}"
    for severity in (1, 4):
        body = {"entityId": entity, "severity": severity, "domain": "/root/sub1"}
        assert service.request("POST", "/events", body, key=keys.writer).status == 201
    shared = {"entityId": entity, "tenantId": "globex"}
    assert service.request("POST", "/sharedEntities", shared, key=keys.admin).status == 201
    query = {
        "query": {"term": {"entityId": entity}},
        "aggs": {"worst": {"min": {"field": "severity"}}},
    }

    own_only = find(service, keys.other_tenant, query)
    assert own_only["hits"]["total"]["value"] == 0
    answer = service.request(
        "POST", "/events/find?includeShared=true", query, key=keys.other_tenant
    )
    assert answer.status == 200, answer.body
    assert answer.json()["hits"]["total"]["value"] == 2
    assert answer.json()["aggregations"]["worst"] == {"value": 1.0}

    reply = search.FindEvents(
        pb.FindEventsRequest(query_json=json.dumps(query), include_shared=True),
        metadata=(("x-api-key", keys.other_tenant),),
    )
    assert json.loads(reply.result_json)["hits"]["total"]["value"] == 2
