"""The :class:`~zehanx_gateway.models.Predictor` port over gRPC (``TrainerService.Predict`` and
``ReleasePredictor``).

The gateway's Predict does not run anything itself: the trainer runs the model's ``predict.py`` in the
sandbox. This adapter converts the instances out and the predictions in; the trainer's status codes
become the gateway's domain errors by :func:`zehanx_runtime.client.to_domain_error` (the trainer
unreachable is UNAVAILABLE, naming its address; bad instances stay INVALID_ARGUMENT with the trainer's
field violations), worded here for a Predict.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, overload

import grpc
from google.protobuf import json_format, struct_pb2
from zehanx.common.v1 import prediction_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
from zehanx_runtime import errors
from zehanx_runtime.client import Wording, call_metadata, internal_channel, to_domain_error
from zehanx_runtime.durations import to_seconds

from zehanx_gateway.domain import InstancesJsonl, Prediction, PredictResult

_CODE = grpc.StatusCode
#: How a Predict's failures read to the gateway's caller; the rest is ``to_domain_error``'s policy.
_WORDING = {
    _CODE.UNAVAILABLE: Wording(
        "the trainer at {address} cannot run the model now ({detail}); is it running? (zx up starts it)",
        reason="TRAINER_UNAVAILABLE",
    ),
    _CODE.INVALID_ARGUMENT: Wording("the instances do not fit the model: {detail}", "INSTANCES_DO_NOT_FIT"),
    _CODE.NOT_FOUND: Wording(
        "the trainer no longer has this model's artifact: {detail}",
        "MODEL_ARTIFACT_MISSING",
        errors.FailedPrecondition,
    ),
    _CODE.DEADLINE_EXCEEDED: Wording("the prediction took too long: {detail}", "PREDICT_TIMEOUT"),
    _CODE.RESOURCE_EXHAUSTED: Wording("the trainer is busy: {detail}", "TRAINER_BUSY"),
    _CODE.FAILED_PRECONDITION: Wording("the model cannot predict: {detail}", "PREDICT_FAILED"),
    _CODE.CANCELLED: Wording("the prediction was cancelled: {detail}", "PREDICT_CANCELLED"),
    _CODE.ABORTED: Wording(
        "the model's predictor stopped during the call (the next call starts a new one): {detail}",
        "PREDICTOR_CRASHED",
    ),
    _CODE.INTERNAL: Wording("the trainer failed to run the model: {detail}", "TRAINER_FAILED"),
    _CODE.UNKNOWN: Wording("the trainer failed to run the model: {detail}", "TRAINER_FAILED"),
}


class GrpcTrainerPredictor:
    """Calls ``TrainerService.Predict`` at ``address`` with the service token."""

    def __init__(self, address: str, token: str | None, *, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self._address = address
        self._token = token
        self._channel = internal_channel(address, max_message_bytes=max_message_bytes)
        self._stub = rpc.TrainerServiceStub(self._channel)

    async def predict(
        self,
        artifact_id: str,
        instances: Sequence[Any] | InstancesJsonl,
        *,
        job_id: uuid.UUID | None,
        timeout_s: float,
    ) -> PredictResult:
        request = pb.PredictRequest(artifact_id=artifact_id, job_id=str(job_id) if job_id else "")
        if isinstance(instances, InstancesJsonl):
            request.instances_jsonl = instances.data
        else:
            request.instances.extend(_value(v) for v in instances)
        try:
            response = await self._stub.Predict(
                request,
                timeout=timeout_s,
                metadata=call_metadata(self._token, job_id=str(job_id) if job_id else None),
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._address) from None
        return PredictResult(
            WirePredictions(response.predictions),
            to_seconds(response.predict_duration),
            warm=response.warm,
            restarted=response.restarted,
            predictions_jsonl=response.predictions_jsonl,
        )

    async def release(self, artifact_id: str, *, timeout_s: float) -> bool:
        """End the model's resident predictor at the trainer (``ReleasePredictor``); whether one ran."""
        try:
            response = await self._stub.ReleasePredictor(
                pb.ReleasePredictorRequest(artifact_id=artifact_id),
                timeout=timeout_s,
                metadata=call_metadata(self._token),
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._address) from None
        return response.released

    async def close(self) -> None:
        await self._channel.close()


class WirePredictions(Sequence[Prediction]):
    """The trainer's Prediction messages as domain Predictions, converted only when read one by one.

    The servicer sends ``messages`` on as they came (the gateway's and the trainer's Prediction are the
    same message): converting 1000 predictions to dicts and back took about 60 ms, ten times what
    decoding them costs, and as long as a small model's whole batch."""

    __slots__ = ("messages",)

    def __init__(self, messages: Sequence[prediction_pb2.Prediction]) -> None:
        self.messages = messages

    def __len__(self) -> int:
        return len(self.messages)

    @overload
    def __getitem__(self, index: int) -> Prediction: ...

    @overload
    def __getitem__(self, index: slice) -> list[Prediction]: ...

    def __getitem__(self, index: int | slice) -> Prediction | list[Prediction]:
        if isinstance(index, slice):
            return [_prediction(m) for m in self.messages[index]]
        return _prediction(self.messages[index])


def _prediction(message: prediction_pb2.Prediction) -> Prediction:
    return Prediction(
        output=json_format.MessageToDict(message.output) if message.HasField("output") else None,
        probabilities=dict(message.probabilities),
    )


def _value(instance: Any) -> struct_pb2.Value:
    if isinstance(instance, struct_pb2.Value):
        return instance  # the gateway's Predict forwards the caller's Values unconverted
    value = struct_pb2.Value()
    json_format.ParseDict(instance, value)
    return value


def _error(exc: grpc.aio.AioRpcError, address: str) -> errors.DomainError:
    err = to_domain_error(
        exc,
        service="trainer",
        address=address,
        token_variable="ZX_GATEWAY_TRAINER_TOKEN (unset: ZX_GATEWAY_SERVICE_TOKEN)",
        wording=_WORDING,
    )
    if isinstance(err, errors.InvalidArgument) and not err.violations:  # a caller's form shows fields
        err.violations = [errors.FieldViolation("instances", exc.details() or "", "instances.fit")]
    return err
