"""Calling another service: channels, metadata and deadline propagation.

Python gRPC does not propagate deadlines: every downstream call passes
``timeout=downstream_timeout(context, budget)`` so a caller's deadline bounds the whole chain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
import structlog

from zehanx_runtime.interceptors import JOB_ID_KEY, REQUEST_ID_KEY, SERVICE_TOKEN_KEY

# Retry only on UNAVAILABLE (the service restarting); non-idempotent creates carry request ids.
_SERVICE_CONFIG = json.dumps(
    {
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
        ]
    }
)


def internal_channel(address: str, *, max_message_bytes: int = 64 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure channel to an internal service (bound to an internal address)."""
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
    """Metadata for an internal call; request and job ids default to the current log context."""
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
    return metadata


def downstream_timeout(context: grpc.aio.ServicerContext | None, budget_s: float) -> float:
    """The smaller of our own budget and what is left of the caller's deadline."""
    if context is None:
        return budget_s
    remaining = context.time_remaining()
    if remaining is None:
        return budget_s
    return max(0.0, min(budget_s, remaining))
