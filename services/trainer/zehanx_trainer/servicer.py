"""TrainerService over gRPC: convert the request in (:mod:`zehanx_trainer.convert`), run the domain,
convert the events out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from zehanx.common.v1 import file_transfer_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
from zehanx_runtime import provider_keys, transfer

from zehanx_trainer import archive
from zehanx_trainer.artifacts import ArtifactStore
from zehanx_trainer.clients import executor as executor_client
from zehanx_trainer.convert import predict_instances, predict_response, to_response, to_spec
from zehanx_trainer.prediction import Predictor
from zehanx_trainer.training import Trainer

SERVICE_NAME = "zehanx.trainer.v1.TrainerService"


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class TrainerServicer(rpc.TrainerServiceServicer):
    def __init__(
        self, trainer: Trainer, predictor: Predictor, store: ArtifactStore, *, spool_dir: Path | None = None
    ) -> None:
        self.trainer = trainer
        self.predictor = predictor
        self.store = store
        self.spool_dir = spool_dir

    async def Train(
        self, request: pb.TrainRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TrainResponse]:
        # The job owner's own E2B key (sent by the gateway) goes on to the executor with this run's
        # calls (this call's task only); it never enters the request, the program or the sandbox.
        executor_client.sandbox_key.set(
            provider_keys.caller_key(context.invocation_metadata(), provider_keys.E2B_KEY)
            if context
            else None
        )
        async for item in self.trainer.train(to_spec(request), deadline=_deadline(context)):
            yield to_response(item)

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        outcome = await self.predictor.predict(
            request.artifact_id,
            predict_instances(request),
            job_id=request.job_id,
            deadline=_deadline(context),
        )
        return predict_response(outcome)

    async def ReleasePredictor(
        self, request: pb.ReleasePredictorRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleasePredictorResponse:
        return pb.ReleasePredictorResponse(released=await self.predictor.release(request.artifact_id))

    async def ReadArtifact(
        self, request: pb.ReadArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadArtifactResponse]:
        path, info = await archive.build_archive(self.store, request.artifact_id, spool_dir=self.spool_dir)
        try:
            async for message in transfer.stream_file(
                path, info, pb.ReadArtifactResponse, file_transfer_pb2.FileHeader
            ):
                yield message
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
