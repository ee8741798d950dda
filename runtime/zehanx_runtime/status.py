"""Domain errors → ``google.rpc.Status`` (the one place codes are chosen), and back.

Server side, :func:`to_grpc_status` builds the status the interceptor sends. Client side,
:func:`error_info_of` and :func:`violations_of` read its details back, and
:func:`zehanx_runtime.client.to_domain_error` turns a whole failed call into a domain error with them.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from zehanx_runtime.errors import DomainError, FieldViolation, InvalidArgument


def error_domain(service_name: str) -> str:
    """The ErrorInfo domain of a service, e.g. ``executor.zehanx``."""
    return f"{service_name}.zehanx"


#: The status travels in trailing metadata, which clients cap (8 KiB by default; beyond it the call
#: fails RESOURCE_EXHAUSTED and the real answer is lost). Keep it well below that.
MAX_STATUS_BYTES = 4096
MAX_MESSAGE_CHARS = 1024


def to_grpc_status(err: DomainError, *, domain: str) -> grpc.Status:
    """Build the status (code, message, ErrorInfo and BadRequest details) for a domain error.

    A huge error (a request with a thousand bad items) is cut to fit trailing metadata: the message
    is shortened and the field violations are the first that fit, at least one."""
    message = (
        err.message if len(err.message) <= MAX_MESSAGE_CHARS else err.message[: MAX_MESSAGE_CHARS - 1] + "…"
    )
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=domain, metadata=err.metadata)
    violations = err.violations if isinstance(err, InvalidArgument) else []
    keep = len(violations)
    while True:
        details = [info] + ([bad_request(violations[:keep])] if keep else [])
        packed = []
        for detail in details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        status = status_pb2.Status(code=code_pb2.Code.Value(err.code), message=message, details=packed)
        if keep <= 1 or status.ByteSize() <= MAX_STATUS_BYTES:
            return rpc_status.to_status(status)
        keep = max(1, min(keep // 2, keep - 1))


def bad_request(violations: list[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field[:256], description=v.description[:512], reason=v.reason[:128]
            )
            for v in violations
        ]
    )


def _status_of(call_error: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a failed call carried, or None (none sent, or a malformed one: a bad
    detail is no reason to lose the status code itself)."""
    try:
        return rpc_status.from_call(call_error)  # type: ignore[arg-type]
    except Exception:  # undecodable bytes, or a code that does not match the call's
        return None


def violations_of(call_error: grpc.RpcError) -> list[FieldViolation]:
    """Client side: the field violations of a failed call's BadRequest detail, reasons included."""
    status = _status_of(call_error)
    found: list[FieldViolation] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations]
    return found


def field_violations_of(call_error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of a BadRequest detail, for tests and CLIs."""
    return [(v.field, v.description) for v in violations_of(call_error)]


def error_info_of(call_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Client side: the ErrorInfo detail of a failed call, if any."""
    status = _status_of(call_error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
