"""Predict: the gateway checks ownership, then forwards to TrainerService.Predict and maps its answers.

The trainer side here is a gRPC TrainerService on port 0 that records what it received and answers
with the trainer's message shapes (the real trainer's Predict, which runs predict.py in the sandbox,
is tested in tests/trainer; the end-to-end issue runs the two together). With no trainer listening,
Predict fails with UNAVAILABLE naming the trainer's address.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from gateway_support import (
    TRAINER_TOKEN,
    Served,
    bearer,
    publish_model,
)
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from support.stand_in_trainer import serve_trainer
from zehanx.common.v1 import prediction_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2 as tpb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as trpc
from zehanx_runtime.status import error_info_of, field_violations_of

ARTIFACT_ID = "a" * 64


@dataclass
class RecordingTrainer(trpc.TrainerServiceServicer):
    """Answers Predict like the trainer: one prediction per instance, or the trainer's errors."""

    received: list[tuple[tpb.PredictRequest, dict[str, str]]] = field(default_factory=list)

    async def Predict(self, request: tpb.PredictRequest, context: Any) -> tpb.PredictResponse:
        self.received.append((request, dict(context.invocation_metadata())))
        if request.instances_jsonl:  # the trainer's JSON-lines answer: one line per instance line
            lines = request.instances_jsonl.decode().splitlines()
            return tpb.PredictResponse(
                predictions_jsonl=b"".join(
                    json.dumps({"prediction": "positive" if "great" in line else "negative"}).encode() + b"\n"
                    for line in lines
                ),
                predict_duration=duration_pb2.Duration(nanos=5_000_000),
                warm=True,
            )
        if any(v.WhichOneof("kind") != "string_value" for v in request.instances):
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="instances[1]", description="a review is a string", reason="instances.type"
                    )
                ]
            )
            detail = any_pb2.Any()
            detail.Pack(bad)
            status = status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT, message="instance 1 is not text", details=[detail]
            )
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                status.message,
                trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
            )
        predictions = [
            prediction_pb2.Prediction(
                output=struct_pb2.Value(string_value="positive" if "great" in v.string_value else "negative"),
                probabilities={"positive": 0.8, "negative": 0.2}
                if "great" in v.string_value
                else {"positive": 0.1, "negative": 0.9},
            )
            for v in request.instances
        ]
        return tpb.PredictResponse(
            predictions=predictions, predict_duration=duration_pb2.Duration(nanos=250_000_000)
        )


@pytest.fixture
async def trainer() -> AsyncIterator[tuple[RecordingTrainer, str]]:
    servicer = RecordingTrainer()
    async with serve_trainer(servicer) as address:
        yield servicer, address


def text(value: str) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=value)


async def test_predict_forwards_to_the_trainer_and_returns_its_predictions_in_order(
    served_with_trainer: Served, trainer: tuple[RecordingTrainer, str]
) -> None:
    served = served_with_trainer
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    answer = await served.stub.Predict(
        pb.PredictRequest(model_id=model.id, instances=[text("a great movie"), text("dull")]), metadata=auth
    )
    assert [p.output.string_value for p in answer.predictions] == ["positive", "negative"]
    assert dict(answer.predictions[1].probabilities) == pytest.approx({"positive": 0.1, "negative": 0.9})
    assert answer.predict_duration.ToNanoseconds() == 250_000_000
    [(request, metadata)] = trainer[0].received
    assert request.artifact_id == ARTIFACT_ID
    assert [v.string_value for v in request.instances] == ["a great movie", "dull"]
    assert metadata.get("x-zx-service-token") == TRAINER_TOKEN


async def test_json_lines_go_to_the_trainer_as_they_came_and_one_form_is_required(
    served_with_trainer: Served, trainer: tuple[RecordingTrainer, str]
) -> None:
    served = served_with_trainer
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    lines = b'"a great movie"\n"dull"'  # no final newline: the gateway adds it
    answer = await served.stub.Predict(
        pb.PredictRequest(model_id=model.id, instances_jsonl=lines), metadata=auth
    )
    assert [json.loads(line)["prediction"] for line in answer.predictions_jsonl.splitlines()] == [
        "positive",
        "negative",
    ]
    assert not answer.predictions and answer.warm
    [(request, _)] = trainer[0].received
    assert request.instances_jsonl == lines + b"\n" and not request.instances

    # Both forms, or neither: INVALID_ARGUMENT naming the field to fix; nothing reaches the trainer.
    both = pb.PredictRequest(model_id=model.id, instances=[text("fine")], instances_jsonl=b'"fine"\n')
    neither = pb.PredictRequest(model_id=model.id)
    for request, field_name in ((both, "instances_jsonl"), (neither, "instances")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await served.stub.Predict(request, metadata=auth)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations_of(refused.value)] == [field_name]
    assert len(trainer[0].received) == 1


async def test_instances_the_model_refuses_are_invalid_argument_with_the_trainers_fields(
    served_with_trainer: Served,
) -> None:
    served = served_with_trainer
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await served.stub.Predict(
            pb.PredictRequest(model_id=model.id, instances=[text("fine"), struct_pb2.Value(number_value=3)]),
            metadata=auth,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(refused.value)] == ["instances[1]"]


async def test_predict_without_a_reachable_trainer_is_unavailable_and_says_where(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    with pytest.raises(grpc.aio.AioRpcError) as unreachable:
        await served.stub.Predict(pb.PredictRequest(model_id=model.id, instances=[text("x")]), metadata=auth)
    assert unreachable.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info_of(unreachable.value).reason == "TRAINER_UNAVAILABLE"
    assert served.gateway.settings.trainer_address in (unreachable.value.details() or "")


async def test_a_model_recorded_without_a_trainer_artifact_cannot_run(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await served.stub.Predict(pb.PredictRequest(model_id=model.id, instances=[text("x")]), metadata=auth)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info_of(refused.value).reason == "MODEL_NOT_RUNNABLE"
