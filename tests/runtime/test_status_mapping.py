"""Domain errors become statuses with ErrorInfo (and BadRequest for invalid input) in one place."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from zehanx_runtime import errors
from zehanx_runtime.status import to_grpc_status


def _decode(status: grpc.Status) -> status_pb2.Status:
    ((key, raw),) = [(k, v) for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(raw)


def test_invalid_argument_carries_error_info_and_field_violations() -> None:
    err = errors.InvalidArgument(
        "bad prompt",
        violations=[errors.FieldViolation("prompt", "must not be empty", "string.min_len")],
        metadata={"limit": 4000},
    )
    status = to_grpc_status(err, domain="gateway.zehanx")
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    decoded = _decode(status)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert decoded.details[0].Unpack(info) and decoded.details[1].Unpack(bad)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_ARGUMENT",
        "gateway.zehanx",
        {"limit": "4000"},
    )
    assert [(v.field, v.description, v.reason) for v in bad.field_violations] == [
        ("prompt", "must not be empty", "string.min_len")
    ]


def test_every_domain_error_maps_to_its_own_code() -> None:
    for cls in errors.DomainError.__subclasses__():
        status = to_grpc_status(cls("x"), domain="t.zehanx")
        assert status.code.name == cls.code, cls
        assert status.code is not grpc.StatusCode.UNKNOWN


def test_a_huge_error_is_cut_to_fit_trailing_metadata() -> None:
    err = errors.InvalidArgument(
        "x" * 50_000,
        violations=[
            errors.FieldViolation(f"states[{i}]", "must not be unspecified " * 5) for i in range(1100)
        ],
    )
    decoded = _decode(to_grpc_status(err, domain="gateway.zehanx"))
    bad = error_details_pb2.BadRequest()
    assert decoded.details[1].Unpack(bad)
    assert decoded.ByteSize() <= 4096
    assert 1 <= len(bad.field_violations) < 1100
    assert bad.field_violations[0].field == "states[0]"
    assert len(decoded.message) <= 1024
