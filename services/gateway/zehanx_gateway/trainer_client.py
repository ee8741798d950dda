"""The :class:`~zehanx_gateway.models.Predictor` port over gRPC (``TrainerService.Predict``).

The gateway's Predict does not run anything itself: the trainer runs the model's ``predict.py`` in the
sandbox. This adapter converts the instances out and the predictions in, and maps the trainer's status
codes to the gateway's domain errors (the trainer unreachable is UNAVAILABLE, naming its address; bad
instances stay INVALID_ARGUMENT with the trainer's field violations).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
from zehanx_runtime import errors
from zehanx_runtime.client import call_metadata, internal_channel

from zehanx_gateway.domain import Prediction, PredictResult

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class GrpcTrainerPredictor:
    """Calls ``TrainerService.Predict`` at ``address`` with the service token."""

    def __init__(self, address: str, token: str | None, *, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self._address = address
        self._token = token
        self._channel = internal_channel(address, max_message_bytes=max_message_bytes)
        self._stub = rpc.TrainerServiceStub(self._channel)

    async def predict(
        self, artifact_id: str, instances: Sequence[Any], *, job_id: uuid.UUID | None, timeout_s: float
    ) -> PredictResult:
        request = pb.PredictRequest(
            artifact_id=artifact_id,
            instances=[_value(v) for v in instances],
            job_id=str(job_id) if job_id else "",
        )
        try:
            response = await self._stub.Predict(
                request,
                timeout=timeout_s,
                metadata=call_metadata(self._token, job_id=str(job_id) if job_id else None),
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc) from None
        predictions = [
            Prediction(
                output=json_format.MessageToDict(p.output) if p.HasField("output") else None,
                probabilities=dict(p.probabilities),
            )
            for p in response.predictions
        ]
        duration = response.predict_duration.seconds + response.predict_duration.nanos / 1e9
        return PredictResult(predictions, duration)

    async def close(self) -> None:
        await self._channel.close()

    def _translate(self, exc: grpc.aio.AioRpcError) -> errors.DomainError:
        code = exc.code()
        detail = exc.details() or code.name
        if code is grpc.StatusCode.UNAVAILABLE:
            return errors.Unavailable(
                f"the trainer at {self._address} cannot be reached to run the model ({detail}); "
                "is it running? (zx up starts it)",
                reason="TRAINER_UNAVAILABLE",
                metadata={"address": self._address},
            )
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return errors.InvalidArgument(
                f"the instances do not fit the model: {detail}",
                reason="INSTANCES_DO_NOT_FIT",
                violations=_violations(exc) or [errors.FieldViolation("instances", detail, "instances.fit")],
            )
        if code is grpc.StatusCode.NOT_FOUND:
            return errors.FailedPrecondition(
                f"the trainer no longer has this model's artifact: {detail}", reason="MODEL_ARTIFACT_MISSING"
            )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return errors.DeadlineExceeded(
                f"the prediction took too long: {detail}", reason="PREDICT_TIMEOUT"
            )
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return errors.ResourceExhausted(f"the trainer is busy: {detail}", reason="TRAINER_BUSY")
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            return errors.FailedPrecondition(f"the model cannot predict: {detail}", reason="PREDICT_FAILED")
        if code is grpc.StatusCode.CANCELLED:
            return errors.Cancelled(f"the prediction was cancelled: {detail}", reason="PREDICT_CANCELLED")
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return errors.Internal(
                "the trainer refused the gateway's service token (check ZX_GATEWAY_TRAINER_TOKEN / "
                "ZX_GATEWAY_SERVICE_TOKEN against the trainer's)",
                reason="TRAINER_REFUSED_TOKEN",
            )
        return errors.Internal(
            f"the trainer failed to run the model ({code.name}): {detail}", reason="TRAINER_FAILED"
        )


def _value(instance: Any) -> struct_pb2.Value:
    if isinstance(instance, struct_pb2.Value):
        return instance  # the gateway's Predict forwards the caller's Values unconverted
    value = struct_pb2.Value()
    json_format.ParseDict(instance, value)
    return value


def _violations(exc: grpc.aio.AioRpcError) -> list[errors.FieldViolation]:
    """Field violations of the trainer's google.rpc.BadRequest detail, if it sent one."""
    for key, raw in exc.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(raw, bytes):
            continue
        status = status_pb2.Status.FromString(raw)
        found: list[errors.FieldViolation] = []
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                found += [
                    errors.FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
                ]
        return found
    return []
