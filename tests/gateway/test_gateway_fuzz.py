"""Fuzzing every public RPC with requests built from the protos' own descriptors.

Strategies walk each request message's descriptor: every field gets values of its type, with the edges
that break code (empty and huge strings, NUL bytes, UUID-shaped and not, integer extremes, NaN and
infinities, enum numbers the proto does not define, deep nesting, out-of-range timestamps). String ids
are drawn often from the caller's real jobs and models (and another user's), so requests get past
validation into the domain code. Undecodable bytes are sent too. Every answer must be a deliberate
status: never UNKNOWN or INTERNAL; INVALID_ARGUMENT for a decodable request names its fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from gateway_support import Served, bearer, publish_model
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import job_pb2
from zehanx_runtime.status import error_info_of, field_violations_of

SERVICE = pb.DESCRIPTOR.services_by_name["GatewayService"]
METHODS = [m.name for m in SERVICE.methods]
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
MAX_DEPTH = 4

#: Ids the strategies draw from: the caller's own jobs and models, another user's, and random ones.
KNOWN_IDS: list[str] = []

_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (low, high, 0, 1, -1, 4096, 1000, 1001, 2**31 - 1) if low <= v <= high]
    return st.one_of(
        st.sampled_from(edges), st.integers(low, high), st.integers(max(low, -5), min(high, 2000))
    )


_strings = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12).map(lambda s: f"{s}\x00{s}"),
    st.uuids().map(str),
    st.sampled_from([" ", "\t\n", "not-a-uuid", "https://example.invalid/data.csv", "../../etc/passwd"]),
    st.integers(1000, 5000).map(lambda n: "x" * n),
)


def _ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(KNOWN_IDS), st.uuids().map(str), _strings)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )


def _special(full_name: str) -> st.SearchStrategy[Callable[[Message], None]] | None:
    """Fillers for well-known types whose fields alone do not make sense (or cannot be set)."""
    if full_name == "google.protobuf.Value":

        def fill_value(value: Any) -> Callable[[Message], None]:
            from google.protobuf import json_format

            return lambda m: json_format.ParseDict(value, m)

        return _json_values().map(fill_value)
    if full_name == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=8), _json_values(), max_size=3).map(
            lambda v: lambda m: m.update(v)
        )
    if full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return st.tuples(_integers(-(2**40), 2**40), _integers(-(2**31), 2**31 - 1)).map(
            lambda sn: lambda m: (setattr(m, "seconds", sn[0]), setattr(m, "nanos", sn[1]))
        )
    return None


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == d.FieldDescriptor.TYPE_STRING:
        return _ids() if field.name.endswith("id") else _strings
    if t == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == d.FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if t == d.FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == d.FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-3, 200))
    low, high = _INT_RANGES[t]
    return _integers(low, high)


def fillers(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Callable[[Message], None]]:
    """A strategy of functions that fill a message of ``descriptor`` with random field values."""
    special = _special(descriptor.full_name)
    if special is not None:
        return special
    if depth >= MAX_DEPTH:
        return st.just(lambda m: None)
    per_field = []
    for field in descriptor.fields:
        per_field.append(st.one_of(st.just(None), _field_setter(field, depth)))
    return st.tuples(*per_field).map(
        lambda setters: lambda m: [s(m) for s in setters if s is not None] and None
    )


def _field_setter(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy[Callable[[Message], None]]:
    name = field.name
    is_message = field.type == d.FieldDescriptor.TYPE_MESSAGE
    if field.is_repeated:
        if is_message and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type == d.FieldDescriptor.TYPE_MESSAGE:
                return st.just(lambda m: None)  # no map of messages in the public requests
            entries = st.dictionaries(_scalar(key_field), _scalar(value_field), max_size=3)
            return entries.map(lambda v: lambda m: getattr(m, name).update(v))
        if is_message:
            items = st.lists(fillers(field.message_type, depth + 1), max_size=3)
            return items.map(lambda fills: lambda m: [f(getattr(m, name).add()) for f in fills] and None)
        values = st.one_of(st.lists(_scalar(field), max_size=4), st.integers(5, 1100).map(lambda n: [0] * n))
        if field.type in (d.FieldDescriptor.TYPE_STRING,):
            values = st.lists(_scalar(field), max_size=4)
        return values.map(lambda v: lambda m: getattr(m, name).extend(v))
    if is_message:
        return fillers(field.message_type, depth + 1).map(lambda fill: lambda m: fill(getattr(m, name)))
    return _scalar(field).map(lambda v: lambda m: setattr(m, name, v))


def request_class(method: str) -> type[Message]:
    descriptor = SERVICE.methods_by_name[method].input_type
    return message_factory.GetMessageClass(descriptor)


@pytest.fixture
async def fuzz_target(served: Served) -> AsyncIterator[tuple[Served, tuple[tuple[str, str], ...]]]:
    """Alice with finished jobs and a model (so watches end), and mallory's job and model."""
    alice = bearer(await served.api_key("alice"))
    mallory = bearer(await served.api_key("mallory"))
    KNOWN_IDS.clear()
    for who in (alice, mallory):
        job = await served.stub.CreateJob(
            pb.CreateJobRequest(job=job_pb2.Job(prompt="fuzz me")), metadata=who
        )
        await served.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=who)
        KNOWN_IDS.append(job.id)
    for user in ("alice", "mallory"):
        KNOWN_IDS.append((await publish_model(served, user, f"{user} weights".encode())).id)
    yield served, alice
    KNOWN_IDS.clear()


async def _call(served: Served, method: str, payload: bytes, auth: Any) -> grpc.aio.AioRpcError | None:
    path = f"/{SERVICE.full_name}/{method}"
    try:
        if SERVICE.methods_by_name[method].server_streaming:
            call = served.channel.unary_stream(path)(payload, metadata=auth, timeout=30)
            async for _ in call:
                pass
        else:
            await served.channel.unary_unary(path)(payload, metadata=auth, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


def _check(method: str, error: grpc.aio.AioRpcError | None, *, decodable: bool) -> None:
    if error is None:
        return
    code = error.code()
    assert code not in FORBIDDEN, f"{method} answered {code.name}: {error.details()}"
    assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung: {error.details()}"
    info = error_info_of(error)
    assert info is not None and info.reason, f"{method} answered {code.name} without an ErrorInfo reason"
    if code == grpc.StatusCode.INVALID_ARGUMENT and decodable:
        assert field_violations_of(error), f"{method} INVALID_ARGUMENT names no field: {error.details()}"


FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
)


@pytest.mark.parametrize("method", METHODS)
@FUZZ
@given(data=st.data())
async def test_random_requests_get_a_deliberate_status(
    fuzz_target: tuple[Served, Any], method: str, data: st.DataObject
) -> None:
    served, auth = fuzz_target
    fill = data.draw(fillers(SERVICE.methods_by_name[method].input_type), label="request")
    request = request_class(method)()
    fill(request)
    error = await _call(served, method, request.SerializeToString(), auth)
    _check(method, error, decodable=True)


@pytest.mark.parametrize("method", METHODS)
@settings(FUZZ, max_examples=15)
@given(payload=st.binary(max_size=80))
async def test_undecodable_bytes_get_a_deliberate_status(
    fuzz_target: tuple[Served, Any], method: str, payload: bytes
) -> None:
    served, auth = fuzz_target
    error = await _call(served, method, payload, auth)
    _check(method, error, decodable=False)


def test_the_fuzzer_covers_every_public_rpc() -> None:
    assert set(METHODS) == {
        "CreateJob",
        "GetJob",
        "ListJobs",
        "CancelJob",
        "WatchJob",
        "ListJobEvents",
        "ListModels",
        "GetModel",
        "DownloadModel",
        "DeleteModel",
        "Predict",
        "PredictStream",
        "ListDatasets",
        "GetDataset",
        "UploadFile",
        "CreateApiKey",
        "ListApiKeys",
        "RevokeApiKey",
        "SetProviderKey",
        "ListProviderKeys",
        "DeleteProviderKey",
        "GetUserSettings",
        "UpdateUserSettings",
    }
    assert all(
        SERVICE.methods_by_name[m].server_streaming == (m in ("WatchJob", "DownloadModel", "PredictStream"))
        for m in METHODS
    )
    # The one request stream: the fuzzer sends it one drawn message and half-closes.
    assert [m for m in METHODS if SERVICE.methods_by_name[m].client_streaming] == ["PredictStream"]
