"""A stand-in TrainerService (the caller's own servicer) on a real gRPC server on port 0.

The gateway and edge tests answer Predict without training a model; the servicer they pass is theirs,
the server around it is this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from zehanx.trainer.v1 import trainer_service_pb2_grpc as trpc


@asynccontextmanager
async def serve_trainer(servicer: trpc.TrainerServiceServicer) -> AsyncIterator[str]:
    """Serve ``servicer`` on 127.0.0.1 (a free port) and yield its address; stopped on exit."""
    server = grpc.aio.server()
    trpc.add_TrainerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
