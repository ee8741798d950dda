"""Calling another service: channels, metadata, deadline propagation, and its errors.

Python gRPC does not propagate deadlines: every downstream call passes
``timeout=downstream_timeout(context, budget)`` so a caller's deadline bounds the whole chain.

A failed call becomes a domain error in one place, :func:`to_domain_error`, the mirror of the server
side's :func:`zehanx_runtime.status.to_grpc_status`. Each outbound client passes only its own wording
for the codes it words differently (:class:`Wording`); the policy is this module's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from zehanx_runtime import errors, tracing
from zehanx_runtime.interceptors import JOB_ID_KEY, REQUEST_ID_KEY, SERVICE_TOKEN_KEY
from zehanx_runtime.status import error_info_of, violations_of

# Retry only on UNAVAILABLE (the service restarting); non-idempotent creates carry request ids.
# round_robin: a name that resolves to several replicas (a Kubernetes headless Service, ``dns:///``
# target; or ``ipv4:a:p1,b:p2``) gets calls spread over every reachable one, and a replica that appears
# later is used as soon as the resolver sees it (pick_first, gRPC's default, sticks to one address).
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def internal_channel(address: str, *, max_message_bytes: int = 64 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure channel to an internal service (bound to an internal address).

    ``address`` is any gRPC target: ``host:port`` (resolved by DNS), ``dns:///name:port`` (every A
    record of the name is a replica: calls go round-robin over them), ``ipv4:a:p1,b:p2``."""
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )


def call_metadata(
    token: str | None, *, request_id: str | None = None, job_id: str | None = None
) -> Sequence[tuple[str, str]]:
    """Metadata for an internal call; request and job ids default to the current log context, and the
    current trace context goes along (``traceparent``)."""
    bound = structlog.contextvars.get_contextvars()
    request_id = request_id or bound.get("request_id")
    job_id = job_id or bound.get("job_id")
    metadata: list[tuple[str, str]] = []
    if token:
        metadata.append((SERVICE_TOKEN_KEY, token))
    if request_id:
        metadata.append((REQUEST_ID_KEY, str(request_id)))
    if job_id:
        metadata.append((JOB_ID_KEY, str(job_id)))
    tracing.inject(metadata)  # the W3C traceparent of the current span: the callee continues the trace
    return metadata


def downstream_timeout(context: grpc.aio.ServicerContext[Any, Any] | None, budget_s: float) -> float:
    """The smaller of our own budget and what is left of the caller's deadline."""
    if context is None:
        return budget_s
    remaining = context.time_remaining()
    if remaining is None:
        return budget_s
    return max(0.0, min(budget_s, remaining))


#: The domain error for each status code a downstream service may answer. A code without an error of
#: its own (UNKNOWN, INTERNAL, DATA_LOSS, OUT_OF_RANGE) is INTERNAL: the callee failed, not the caller.
_ERRORS: Mapping[grpc.StatusCode, type[errors.DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.ABORTED: errors.Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unimplemented,
}

#: The reasons the shared interceptor gives when it refuses a service token.
TOKEN_REASONS = frozenset({"SERVICE_TOKEN_MISSING", "SERVICE_TOKEN_INVALID"})


@dataclass(frozen=True, slots=True)
class Wording:
    """How one client words one status code of its callee.

    ``message`` may name ``{service}``, ``{address}`` and ``{detail}`` (the callee's own message); they
    are replaced as they stand, any other brace is kept.
    ``reason`` is used when the callee sent no ErrorInfo reason; ``error`` replaces the code's own
    error type (a callee's NOT_FOUND of a file the caller relied on is the caller's FAILED_PRECONDITION)."""

    message: str
    reason: str = ""
    error: type[errors.DomainError] | None = None


def to_domain_error(
    exc: grpc.aio.AioRpcError,
    *,
    service: str,
    address: str,
    token_variable: str,
    wording: Mapping[grpc.StatusCode, Wording] | None = None,
) -> errors.DomainError:
    """A failed call to ``service`` at ``address`` as the caller's domain error.

    The policy, for every client:

    - the callee's ErrorInfo reason and metadata are kept (its reason wins over any default), and the
      metadata also names ``service``, ``address`` and the ``code`` it answered;
    - UNAUTHENTICATED, and PERMISSION_DENIED for the service token, mean the services do not share
      their token: INTERNAL (an operator's configuration, not the caller's request, and retrying will
      not help), naming ``token_variable``; no wording overrides it;
    - UNAVAILABLE without an ErrorInfo means the callee was not reached: the message names the address;
      with one, the callee itself answered that something behind it is unavailable;
    - INVALID_ARGUMENT keeps the callee's field violations;
    - any other code becomes its own error type (:data:`_ERRORS`), else INTERNAL;
    - the reason, when the callee sent none, is the wording's, else ``<SERVICE>_<CODE>``.
    """
    code = exc.code()
    detail = exc.details() or code.name
    info = error_info_of(exc)
    reason = info.reason if info is not None else ""
    metadata = {"service": service, "address": address, "code": code.name}
    if info is not None:
        metadata.update(info.metadata)
    if code is grpc.StatusCode.UNAUTHENTICATED or (
        code is grpc.StatusCode.PERMISSION_DENIED and (not reason or reason in TOKEN_REASONS)
    ):
        return errors.Internal(
            f"the {service} at {address} refused this service's token ({detail}): set {token_variable} "
            f"to the {service}'s service token (ZX_{service.upper()}_SERVICE_TOKEN)",
            reason=reason or "SERVICE_TOKEN_REFUSED",
            metadata=metadata,
        )
    own = (wording or {}).get(code)
    cls = (own.error if own is not None else None) or _ERRORS.get(code, errors.Internal)
    if own is not None:
        message = (
            own.message.replace("{service}", service)
            .replace("{address}", address)
            .replace("{detail}", detail)
        )
    elif code is grpc.StatusCode.UNAVAILABLE and info is None:
        message = f"the {service} at {address} is unreachable: {detail}"
    else:
        message = f"{service}: {detail}"
    reason = reason or (own.reason if own is not None else "") or f"{service.upper()}_{code.name}"
    if issubclass(cls, errors.InvalidArgument):
        return cls(message, violations=violations_of(exc), reason=reason, metadata=metadata)
    return cls(message, reason=reason, metadata=metadata)
