"""Fuzzes every gRPC rpc on both backends with field-level mutations of its request message:
each field present or not, with values across its whole wire range (enum numbers without a
name, NaN, Timestamps out of range, NUL and any other character, extreme integers, random
Structs and bodies), and some messages corrupted on the wire. No call may end INTERNAL,
UNKNOWN or UNAVAILABLE, the service must keep answering, and a refused call must leave the
tenant's stored state as it was.

The rpcs and their request messages come from the generated descriptors (every service of
package eventmgmt.v1), so a new rpc is fuzzed without a change here; a test checks that
they are exactly what the server offers. Budget and seed: see tests/fuzzing.py."""

from __future__ import annotations

import importlib
import math
import pkgutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from fuzzing import (
    JSON_VALUES,
    TEXT,
    Budget,
    TenantState,
    changed,
    open_state,
    seeded,
    with_hostile,
)
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from helpers import auth
from service import v1
from service.domain.errors import FieldViolation, InvalidInput
from service.request_checks import ANSWERED_ONE_BY_ONE, _walk, check_request

if TYPE_CHECKING:
    from helpers import Service

PACKAGE = "eventmgmt.v1"
# A server stream that has nothing to send yet keeps waiting; the fuzzer stops listening.
STREAM_WAIT = 0.5
# Answers that mean the server failed, not the request.
SERVER_FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


def _methods() -> list[MethodDescriptor]:
    for module in pkgutil.iter_modules(v1.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"service.v1.{module.name}")
    pool = descriptor_pool.Default()
    methods = []
    for module in pkgutil.iter_modules(v1.__path__):
        if not module.name.endswith("_pb2"):
            continue
        file = pool.FindFileByName(f"eventmgmt/v1/{module.name[:-4]}.proto")
        for service in file.services_by_name.values():
            methods.extend(service.methods)
    return sorted(methods, key=lambda m: m.full_name)


METHODS = _methods()
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Protobuf strings are UTF-8: a client cannot even build one with a lone surrogate.
_STRINGS = st.one_of(
    TEXT.filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)),
    st.sampled_from(["/root/sub1", "StandardEvent", "Device", '{"severity": 3}', "timestamp"]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
)


@dataclass
class Targets:
    tenant: str
    key: str
    strings: list[str]


def _scalar(field: FieldDescriptor, targets: Targets) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(_STRINGS, st.sampled_from(targets.strings))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64),
            st.builds(with_hostile, JSON_VALUES, st.randoms(use_true_random=False)),
        )
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.one_of(
            st.sampled_from([v.number for v in field.enum_type.values]),
            st.integers(-(2**31), 2**31 - 1),
        )
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.one_of(
            st.floats(width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        )
    low, high = _INT_RANGES[kind]
    return st.one_of(st.integers(low, high), st.integers(-5, 5).filter(lambda n: low <= n <= high))


def messages(
    descriptor: Descriptor, targets: Targets, depth: int = 0
) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":
        documents = st.dictionaries(
            _STRINGS,
            st.recursive(
                st.one_of(st.none(), st.booleans(), st.floats(), _STRINGS),
                lambda inner: st.one_of(
                    st.lists(inner, max_size=3), st.dictionaries(_STRINGS, inner, max_size=3)
                ),
                max_leaves=8,
            ),
            max_size=4,
        )

        def struct(document: dict[str, Any]) -> Message:
            made = cls()
            made.update(document)  # type: ignore[attr-defined]
            return made

        return documents.map(struct)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            if depth > 2:
                continue
            values = (
                messages(value_field.message_type, targets, depth + 1)
                if value_field.message_type is not None
                else _scalar(value_field, targets)
            )
            fields[field.name] = st.dictionaries(
                _scalar(key_field, targets), values, max_size=3
            ).map(lambda d: ("map", d))
            continue
        if entry is not None:
            if depth > 2:
                continue
            one = messages(entry, targets, depth + 1)
        else:
            one = _scalar(field, targets)
        if field.is_repeated:
            fields[field.name] = st.lists(one, max_size=3).map(lambda v: ("list", v))
        else:
            fields[field.name] = one.map(lambda v: ("one", v))

    def build(chosen: dict[str, tuple[str, Any]]) -> Message:
        made = cls()
        for name, (how, value) in chosen.items():
            target = getattr(made, name) if how != "one" or isinstance(value, Message) else None
            if how == "map":
                for key, item in value.items():
                    if isinstance(item, Message):
                        target[key].CopyFrom(item)
                    else:
                        target[key] = item
            elif how == "list":
                for item in value:
                    if isinstance(item, Message):
                        target.add().CopyFrom(item)
                    else:
                        target.append(item)
            elif target is not None:
                target.CopyFrom(value)
            else:
                setattr(made, name, value)
        return made

    return st.fixed_dictionaries({}, optional=fields).map(build)


def _corrupt(raw: bytes, rng: Any) -> bytes:
    how = rng.randrange(4)
    if how == 0 and raw:
        return raw[: rng.randrange(len(raw))]
    if how == 1 and raw:
        index = rng.randrange(len(raw))
        return raw[:index] + bytes([rng.randrange(256)]) + raw[index + 1 :]
    if how == 2:
        return raw + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))


@st.composite
def calls(draw: st.DrawFn, targets: Targets) -> tuple[MethodDescriptor, list[bytes], str]:
    method = draw(st.sampled_from(METHODS))
    count = draw(st.integers(1, 3)) if method.client_streaming else 1
    raws = []
    for _ in range(count):
        raw = draw(messages(method.input_type, targets)).SerializeToString()
        if draw(st.integers(0, 9)) == 0:
            raw = _corrupt(raw, draw(st.randoms(use_true_random=False)))
        raws.append(raw)
    key = draw(st.sampled_from([targets.key] * 8 + ["", "bogus"]))
    return method, raws, key


def invoke(
    channel: grpc.Channel, method: MethodDescriptor, raws: list[bytes], key: str
) -> tuple[grpc.StatusCode, int]:
    """Calls the rpc with raw request bytes; returns its status code (OK when it ends well
    or a server stream is still open after STREAM_WAIT) and how many answers came first."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = auth(key) if key else ()
    answered = 0
    try:
        if not method.client_streaming and not method.server_streaming:
            channel.unary_unary(path)(raws[0], metadata=metadata, timeout=30)
        elif not method.client_streaming:
            for _ in channel.unary_stream(path)(raws[0], metadata=metadata, timeout=STREAM_WAIT):
                answered += 1
        elif not method.server_streaming:
            channel.stream_unary(path)(iter(raws), metadata=metadata, timeout=30)
        else:
            for _ in channel.stream_stream(path)(iter(raws), metadata=metadata, timeout=30):
                answered += 1
    except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
            return grpc.StatusCode.OK, answered
        return code, answered
    return grpc.StatusCode.OK, answered


@pytest.fixture(scope="module")
def targets(service: Service) -> Targets:
    tenant = f"fuzz-grpc-{uuid.uuid4().hex[:8]}"
    key = service.create_key(tenant, "Admin")
    created = service.request("POST", "/events", {"entityId": "fuzz-asset"}, key=key)
    assert created.status == 201, created.body
    return Targets(tenant, key, [created.json()["id"], "fuzz-asset", tenant])


@pytest.fixture(scope="module")
def state(service: Service, targets: Targets) -> Iterator[TenantState]:
    opened = open_state(service.database_url, targets.tenant)
    yield opened
    opened.close()


@pytest.mark.integration
def test_fuzz_every_grpc_rpc(
    service: Service, channel: grpc.Channel, targets: Targets, state: TenantState
) -> None:
    budget = Budget(f"gRPC fuzz ({service.database_url.split(':')[0]})")
    before = [state.digest()]

    def make_test() -> Callable[[], None]:
        @given(call=calls(targets))
        def fuzz(call: tuple[MethodDescriptor, list[bytes], str]) -> None:
            if budget.spent:
                return
            method, raws, key = call
            code, answered = invoke(channel, method, raws, key)
            budget.record(code.name)
            what = f"{method.full_name} with {[r[:200] for r in raws]}"
            assert code not in SERVER_FAILURES, seeded(f"{code.name} from {what}")
            assert code != grpc.StatusCode.UNAVAILABLE, seeded(f"no answer to {what}")
            after = state.digest()
            # A stream's batches are requests of their own: those answered before the stream
            # failed were accepted, and may have stored what they answer.
            refused = code != grpc.StatusCode.OK and not (method.client_streaming and answered)
            if refused and after != before[0]:
                tables = changed(before[0], after)
                raise AssertionError(seeded(f"refused {what} ({code.name}) changed {tables}"))
            before[0] = after

        return fuzz

    budget.run(make_test)
    still = service.request("GET", "/events", key=targets.key)
    assert still.status == 200, seeded(f"the service stopped answering: {still.status}")
    assert budget.sent > 0


@pytest.mark.integration
def test_the_fuzzed_rpcs_are_the_served_ones(channel: grpc.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    served = {s.name for a in answers for s in a.list_services_response.service}
    ours = {s for s in served if s.startswith(PACKAGE + ".")}
    assert ours == {m.containing_service.full_name for m in METHODS}


@given(data=st.data())
def test_request_checks_agree_with_their_walk(data: st.DataObject) -> None:
    """The fast yes-or-no of service.request_checks and its naming walk agree on every
    request message, with and without the wire prefilters."""
    method = data.draw(st.sampled_from(METHODS))
    message = data.draw(messages(method.input_type, Targets("t", "k", ["x"])))
    expected: list[FieldViolation] = []
    _walk(message, "", expected, ANSWERED_ONE_BY_ONE.get(method.input_type.full_name, ""))
    for raw in (None, message.SerializeToString()):
        try:
            check_request(message, raw)
            found: tuple[FieldViolation, ...] = ()
        except InvalidInput as error:
            found = error.violations
        assert list(found) == expected
