"""A job owner's own E2B key on its way through the trainer: the gateway sends it to Train as
``x-zx-e2b-api-key``; the real trainer (gRPC, in process) hands it to the executor as call metadata of
that run's Execute calls only, never in the request's environment, files or command. The executor here
records what it receives and refuses the run (no sandbox is needed to see what reaches it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from programs import tiny_program
from trainer_support import request_for, tiny  # noqa: F401  (tiny: a fixture)
from zehanx.common.v1 import task_family_pb2
from zehanx.executor.v1 import executor_service_pb2 as executor_pb
from zehanx.executor.v1 import executor_service_pb2_grpc as executor_rpc
from zehanx.trainer.v1 import trainer_service_pb2_grpc as trainer_rpc
from zehanx_runtime import provider_keys
from zehanx_runtime.server import ServiceBinding, start_server
from zehanx_trainer.app import build
from zehanx_trainer.servicer import SERVICE_NAME
from zehanx_trainer.settings import TrainerSettings

pytestmark = pytest.mark.timeout(120)

TOKEN = "sandbox-key-test-token"
USER_KEY = "e2b_user_" + "3" * 32


class RecordingExecutor(executor_rpc.ExecutorServiceServicer):
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], executor_pb.ExecuteRequest]] = []

    async def Execute(self, request: executor_pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> Any:
        self.calls.append((dict(context.invocation_metadata() or ()), request))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "recording executor: no sandbox here")
        yield executor_pb.ExecuteResponse()  # pragma: no cover - makes this a stream handler


async def _train(trainer_address: str, request: Any, metadata: list[tuple[str, str]]) -> None:
    async with grpc.aio.insecure_channel(trainer_address) as channel:
        stub = trainer_rpc.TrainerServiceStub(channel)
        try:
            async for _ in stub.Train(request, metadata=metadata, timeout=60):
                pass
        except grpc.aio.AioRpcError:
            pass  # the recording executor refuses every run


async def test_the_owners_e2b_key_reaches_the_executor_as_metadata_and_never_the_sandbox(
    tmp_path: Path,
    tiny: Any,  # noqa: F811
) -> None:
    recorder = RecordingExecutor()
    executor_server = await start_server(
        TrainerSettings(port=0, service_token=TOKEN),
        [
            ServiceBinding(
                executor_rpc.add_ExecutorServiceServicer_to_server,
                recorder,
                "zehanx.executor.v1.ExecutorService",
            )
        ],
        service_name="executor",
    )
    settings = TrainerSettings(
        port=0,
        service_token=TOKEN,
        executor_address=f"127.0.0.1:{executor_server.port}",
        dataset_roots=[tiny.ref.train_uri.removeprefix("file://").rsplit("/", 1)[0]],
        artifact_dir=tmp_path / "artifacts",
        gpus=0,
    )
    app = build(settings)
    trainer_server = await start_server(
        settings,
        [ServiceBinding(trainer_rpc.add_TrainerServiceServicer_to_server, app.servicer, SERVICE_NAME)],
        service_name="trainer",
    )
    try:
        request = request_for(
            tiny_program(),
            tiny,
            family=task_family_pb2.TASK_FAMILY_TABULAR_CLASSIFICATION,
            target="label",
            smoke_only=True,
        )
        await _train(
            f"127.0.0.1:{trainer_server.port}",
            request,
            [("x-zx-service-token", TOKEN), (provider_keys.E2B_KEY, USER_KEY)],
        )
        await _train(f"127.0.0.1:{trainer_server.port}", request, [("x-zx-service-token", TOKEN)])
    finally:
        await trainer_server.stop(0.5)
        await executor_server.stop(0.5)
        await app.executor.close()
    assert len(recorder.calls) >= 2
    with_key, without_key = recorder.calls[0], recorder.calls[-1]
    assert with_key[0].get(provider_keys.E2B_KEY) == USER_KEY
    assert provider_keys.E2B_KEY not in without_key[0]  # the next run (no key sent) carries none
    for _, execute in recorder.calls:
        assert USER_KEY not in json.dumps(dict(execute.env))
        assert all(USER_KEY not in arg for arg in execute.argv)
        assert all(USER_KEY.encode() not in f.content for f in execute.files)
