"""Typed domain errors.

Domain code raises these; :mod:`zehanx_runtime.interceptors` maps them to gRPC status codes in one
place, with a ``google.rpc.ErrorInfo`` detail (reason, domain, metadata) and, for invalid input, a
``google.rpc.BadRequest`` with field violations. Nothing here imports grpc.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: its path (``sources[0].url``) and what is wrong with it."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """Base of every error a service deliberately returns to its caller."""

    #: Name of the canonical gRPC status code (``grpc.StatusCode[code]``).
    code: str = "UNKNOWN"
    #: Default UPPER_SNAKE reason for ErrorInfo.
    default_reason: str = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[FieldViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)


class NotFound(DomainError):
    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = "ABORTED"
    default_reason = "ABORTED"


class ResourceExhausted(DomainError):
    code = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class Unavailable(DomainError):
    code = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    code = "DEADLINE_EXCEEDED"
    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(DomainError):
    code = "CANCELLED"
    default_reason = "CANCELLED"


class Unimplemented(DomainError):
    code = "UNIMPLEMENTED"
    default_reason = "UNIMPLEMENTED"


class Internal(DomainError):
    code = "INTERNAL"
    default_reason = "INTERNAL"
