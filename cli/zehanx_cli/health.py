"""Asking a running service how it is: the standard ``grpc.health.v1`` check on the whole server."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Health values zx reports besides the protocol's own (SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN).
UNREACHABLE = "UNREACHABLE"
EXITED = "EXITED"
SERVING = "SERVING"


def check(address: str, *, timeout: float = 1.0, credentials: grpc.ChannelCredentials | None = None) -> str:
    """``SERVING`` / ``NOT_SERVING`` / ... for the server at ``address``; ``UNREACHABLE`` when nothing answers.

    ``credentials``: dial it over TLS (the gateway serving ZX_GATEWAY_TLS_CERT_FILE).
    """
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, None):
                return UNREACHABLE
            return code.name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
