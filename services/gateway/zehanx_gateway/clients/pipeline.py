"""gRPC adapters of the job pipeline's ports (:mod:`zehanx_gateway.orchestrator.ports`): the crawler,
codegen and trainer, called with the service token and the job owner's own provider keys.

Channels retry UNAVAILABLE for unary calls (``zehanx_runtime.client``) and reconnect by themselves after a
service restarts; a stream cut mid-way surfaces as :class:`~zehanx_runtime.errors.Unavailable` and the
pipeline decides whether to start it again. Status codes become domain errors by
:func:`zehanx_runtime.client.to_domain_error` (the callee's reason and field violations kept), with no
wording of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from zehanx.codegen.v1 import codegen_service_pb2 as codegen_pb
from zehanx.codegen.v1 import codegen_service_pb2_grpc as codegen_rpc
from zehanx.common.v1 import file_transfer_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as crawler_pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as crawler_rpc
from zehanx.trainer.v1 import trainer_service_pb2 as trainer_pb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as trainer_rpc
from zehanx_runtime import errors, provider_keys, transfer
from zehanx_runtime.client import call_metadata, internal_channel, to_domain_error

from zehanx_gateway.orchestrator.ports import caller_keys


class _Client:
    service = ""
    #: The gateway's setting that holds the token this service must accept (named when it refuses it).
    token_variable = "ZX_GATEWAY_SERVICE_TOKEN"
    #: The metadata name of the one user key this service uses (sent only to it), if any.
    provider_key = ""

    def __init__(self, address: str, token: str | None, *, max_message_bytes: int) -> None:
        self.address = address
        self._token = token
        self._channel = internal_channel(address, max_message_bytes=max_message_bytes)

    def _metadata(self, job_id: str) -> Any:
        metadata = list(call_metadata(self._token, job_id=job_id or None))
        key = (caller_keys.get() or {}).get(self.provider_key) if self.provider_key else None
        if key:
            metadata.append((self.provider_key, key))
        return metadata

    def _error(self, exc: grpc.aio.AioRpcError) -> errors.DomainError:
        return to_domain_error(
            exc, service=self.service, address=self.address, token_variable=self.token_variable
        )

    async def _stream(self, call: Any) -> AsyncIterator[Any]:
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        finally:
            # Leaving early (cancellation, an error in the consumer) cancels the call: the service
            # sees the cancellation at once (the trainer then kills the sandbox).
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()


class GrpcCrawler(_Client):
    service = "crawler"
    provider_key = provider_keys.FIRECRAWL_KEY

    def __init__(self, address: str, token: str | None, *, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__(address, token, max_message_bytes=max_message_bytes)
        self._stub = crawler_rpc.CrawlerServiceStub(self._channel)

    def build_dataset(
        self, request: crawler_pb.BuildDatasetRequest, *, timeout_s: float
    ) -> AsyncIterator[crawler_pb.BuildDatasetResponse]:
        call = self._stub.BuildDataset(request, timeout=timeout_s, metadata=self._metadata(request.job_id))
        return self._stream(call)

    async def put_source_file(
        self, upload_id: str, path: Path, *, job_id: str, timeout_s: float
    ) -> crawler_pb.PutSourceFileResponse:
        """Stream an uploaded file to the crawler (it never opens the gateway's upload folder)."""
        info = await asyncio.to_thread(transfer.file_info, path)

        async def requests() -> AsyncIterator[crawler_pb.PutSourceFileRequest]:
            parts = transfer.stream_file(
                path, info, crawler_pb.PutSourceFileRequest, file_transfer_pb2.FileHeader
            )
            async for message in parts:
                if message.WhichOneof("part") == "header":
                    message.upload_id = upload_id
                yield message

        try:
            return await self._stub.PutSourceFile(
                requests(), timeout=timeout_s, metadata=self._metadata(job_id)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None


class GrpcCodegen(_Client):
    service = "codegen"
    provider_key = provider_keys.GROQ_KEY

    def __init__(self, address: str, token: str | None, *, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__(address, token, max_message_bytes=max_message_bytes)
        self._stub = codegen_rpc.CodegenServiceStub(self._channel)

    async def _unary(self, method: Any, request: Any, timeout_s: float) -> Any:
        try:
            return await method(request, timeout=timeout_s, metadata=self._metadata(request.job_id))
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def plan_task(
        self, request: codegen_pb.PlanTaskRequest, *, timeout_s: float
    ) -> codegen_pb.PlanTaskResponse:
        return await self._unary(self._stub.PlanTask, request, timeout_s)

    async def generate_program(
        self, request: codegen_pb.GenerateProgramRequest, *, timeout_s: float
    ) -> codegen_pb.GenerateProgramResponse:
        return await self._unary(self._stub.GenerateProgram, request, timeout_s)

    async def repair_program(
        self, request: codegen_pb.RepairProgramRequest, *, timeout_s: float
    ) -> codegen_pb.RepairProgramResponse:
        return await self._unary(self._stub.RepairProgram, request, timeout_s)


class GrpcTrainer(_Client):
    service = "trainer"
    token_variable = "ZX_GATEWAY_TRAINER_TOKEN (unset: ZX_GATEWAY_SERVICE_TOKEN)"
    provider_key = provider_keys.E2B_KEY

    def __init__(self, address: str, token: str | None, *, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__(address, token, max_message_bytes=max_message_bytes)
        self._stub = trainer_rpc.TrainerServiceStub(self._channel)

    def train(
        self, request: trainer_pb.TrainRequest, *, timeout_s: float
    ) -> AsyncIterator[trainer_pb.TrainResponse]:
        call = self._stub.Train(request, timeout=timeout_s, metadata=self._metadata(request.job_id))
        return self._stream(call)

    def read_artifact(
        self, artifact_id: str, *, timeout_s: float
    ) -> AsyncIterator[trainer_pb.ReadArtifactResponse]:
        request = trainer_pb.ReadArtifactRequest(artifact_id=artifact_id)
        call = self._stub.ReadArtifact(request, timeout=timeout_s, metadata=self._metadata(""))
        return self._stream(call)
