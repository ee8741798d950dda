"""Predict through the gRPC API: a trainer built in-process on port 0 (so the test can look at its
predictor), the real executor process, and the digits model the session trained."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from trainer_support import TOKEN, Dataset, Run, Suite, serve_trainer_app
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
from zehanx_trainer.app import TrainerApp
from zehanx_trainer.settings import TrainerSettings

METADATA = (("x-zx-service-token", TOKEN),)


@pytest.fixture
async def trainer(suite: Suite) -> AsyncIterator[tuple[TrainerApp, rpc.TrainerServiceStub]]:
    settings = TrainerSettings(
        port=0,
        service_token=TOKEN,
        executor_address=suite.executor.address,
        artifact_dir=suite.artifact_dir,
        dataset_roots=[suite.dataset_root],
        gpus=0,
        memory_bytes=2 * 1024**3,
        disk_bytes=256 * 1024**2,
    )
    async with serve_trainer_app(settings) as served:
        yield served


def _instances(rows: list[dict]) -> list[struct_pb2.Value]:
    out = []
    for row in rows:
        value = struct_pb2.Value()
        json_format.ParseDict({"image": row["image"]}, value)
        out.append(value)
    return out


async def test_predict_answers_from_the_stored_model_and_reuses_the_staged_model(
    trainer: tuple[TrainerApp, rpc.TrainerServiceStub], digits_run: Run, digits: Dataset
) -> None:
    app, stub = trainer
    artifact_id = digits_run.result.artifact_id
    rows = digits.rows["test"][:40]
    first = await stub.Predict(
        pb.PredictRequest(artifact_id=artifact_id, instances=_instances(rows)), metadata=METADATA, timeout=180
    )
    assert len(first.predictions) == len(rows)
    labels = [p.output.string_value for p in first.predictions]
    assert sum(label == str(r["digit"]) for label, r in zip(labels, rows, strict=True)) >= 38
    assert all(abs(sum(p.probabilities.values()) - 1.0) < 1e-4 for p in first.predictions)
    assert first.predict_duration.seconds > 0 or first.predict_duration.nanos > 0
    assert (app.predictor.loads, app.predictor.cache_hits) == (1, 0)
    # The reference program offers load/predict: the first call started its resident predictor.
    assert (first.mode, first.warm) == (pb.PREDICT_MODE_RESIDENT, False)

    # A bare value works too when the model reads one column.
    bare = struct_pb2.Value()
    json_format.ParseDict(rows[0]["image"], bare)
    second = await stub.Predict(
        pb.PredictRequest(artifact_id=artifact_id, instances=[bare]), metadata=METADATA, timeout=180
    )
    assert second.predictions[0].output.string_value == labels[0]
    assert second.warm
    # One row alone vs in a batch of 40: the CNN's float sums may differ in the last digits, no more.
    assert second.predictions[0].probabilities == pytest.approx(
        dict(first.predictions[0].probabilities), abs=1e-6
    )
    # The second call reused the verified, staged model: the store was not read again.
    assert (app.predictor.loads, app.predictor.cache_hits) == (1, 1)


async def test_predict_errors_are_clear(
    trainer: tuple[TrainerApp, rpc.TrainerServiceStub], digits_run: Run
) -> None:
    _, stub = trainer
    value = struct_pb2.Value(string_value="not an image")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(
            pb.PredictRequest(artifact_id="0" * 64, instances=[value]), metadata=METADATA, timeout=60
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(
            pb.PredictRequest(artifact_id="../etc", instances=[value]), metadata=METADATA, timeout=60
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(
            pb.PredictRequest(artifact_id=digits_run.result.artifact_id, instances=[value]),
            metadata=METADATA,
            timeout=180,
        )
    # The program's own error travels back, as INVALID_ARGUMENT: these inputs do not fit the model.
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "predict.py failed" in (info.value.details() or "")
