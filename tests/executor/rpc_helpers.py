"""The executor served over gRPC (port 0) as ``python -m zehanx_executor`` serves it: ``build_executor``
on the local sandbox, the shared runtime's server (interceptor, protovalidate, token), the generated stub.
Used by the Execute and Session RPC tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from sandbox_helpers import SLOTS, UID_BASE
from zehanx.executor.v1 import executor_service_pb2_grpc as rpc
from zehanx_executor.app import build_executor
from zehanx_executor.service import Executor
from zehanx_executor.servicer import SERVICE_NAME, ExecutorServicer
from zehanx_executor.settings import ExecutorSettings
from zehanx_runtime.server import ServiceBinding, start_server


@dataclass
class Server:
    executor: Executor
    channel: grpc.aio.Channel
    stub: rpc.ExecutorServiceStub


def local_settings(token: str, work_dir: str | Path, **overrides: object) -> ExecutorSettings:
    """The local backend on this session's sandbox uids and slots, on port 0."""
    return ExecutorSettings(
        host="127.0.0.1",
        port=0,
        service_token=token,
        backend="local",
        work_dir=Path(work_dir),
        uid_base=UID_BASE,
        max_concurrent=SLOTS,
        log_json=True,
        **overrides,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def serve_executor(settings: ExecutorSettings) -> AsyncIterator[Server]:
    executor = await build_executor(settings)
    running = await start_server(
        settings,
        [ServiceBinding(rpc.add_ExecutorServiceServicer_to_server, ExecutorServicer(executor), SERVICE_NAME)],
        service_name="executor",
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Server(executor, channel, rpc.ExecutorServiceStub(channel))
    finally:
        await channel.close()
        await running.stop(1.0)
        await executor.close()
