"""Domain errors → ``google.rpc.Status`` (the one place codes are chosen)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from zehanx_runtime.errors import DomainError, FieldViolation, InvalidArgument


def error_domain(service_name: str) -> str:
    """The ErrorInfo domain of a service, e.g. ``executor.zehanx``."""
    return f"{service_name}.zehanx"


def to_grpc_status(err: DomainError, *, domain: str) -> grpc.Status:
    """Build the status (code, message, ErrorInfo and BadRequest details) for a domain error."""
    details = [error_details_pb2.ErrorInfo(reason=err.reason, domain=domain, metadata=err.metadata)]
    if isinstance(err, InvalidArgument) and err.violations:
        details.append(bad_request(err.violations))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    status = status_pb2.Status(code=code_pb2.Code.Value(err.code), message=err.message, details=packed)
    return rpc_status.to_status(status)


def bad_request(violations: list[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason=v.reason
            )
            for v in violations
        ]
    )


def field_violations_of(call_error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of a BadRequest detail, for tests and CLIs."""
    status = rpc_status.from_call(call_error)  # type: ignore[arg-type]
    found: list[tuple[str, str]] = []
    if status is None:
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            found += [(v.field, v.description) for v in br.field_violations]
    return found


def error_info_of(call_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Client side: the ErrorInfo detail of a failed call, if any."""
    status = rpc_status.from_call(call_error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
