"""Serving through the gateway: cold and warm answers, PredictStream, the per-user limit on a stream,
and DeleteModel ending the model's resident predictor at the trainer.

The trainer side is a gRPC TrainerService on port 0 that answers with the trainer's message shapes and
keeps a set of "resident" artifacts the way the trainer's predictor pool does (the first call of a model
is cold and makes it resident; ReleasePredictor ends it); the real pool is tested in tests/trainer, and
the two run together in bench/bench_serving.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from gateway_support import (
    Served,
    bearer,
    publish_model,
    rpc_error,
)
from google.protobuf import duration_pb2, struct_pb2
from support.stand_in_trainer import serve_trainer
from zehanx.common.v1 import prediction_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2 as tpb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as trpc
from zehanx_runtime.status import error_info_of, field_violations_of

ARTIFACT_ID = "b" * 64


@dataclass
class ResidentTrainer(trpc.TrainerServiceServicer):
    """Predict: the number's double for each number instance (INVALID_ARGUMENT for anything else), cold
    the first time a model is called and warm after, each call held at ``gate`` when it is set up."""

    resident: set[str] = field(default_factory=set)
    calls: list[int] = field(default_factory=list)  # instances per Predict, in arrival order
    # Whether each call answered warm, by its first instance's number (a stream chunk's offset).
    warm_by_first: dict[float, bool] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    running: int = 0
    most_running: int = 0
    gate: asyncio.Event | None = None
    overlapped: asyncio.Event = field(default_factory=asyncio.Event)

    async def Predict(self, request: tpb.PredictRequest, context: Any) -> tpb.PredictResponse:
        self.calls.append(len(request.instances))
        # Cold or warm is decided on arrival, as the pool does: two chunks of one stream run at once and
        # either may resume first, so deciding after the wait made the first chunk warm on some runs.
        warm = request.artifact_id in self.resident
        self.resident.add(request.artifact_id)
        if request.instances:
            self.warm_by_first[request.instances[0].number_value] = warm
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        if self.running >= 2:
            self.overlapped.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                # Held until a second call has run beside one (the next chunk arrived), or 0.5 s: a
                # fixed 10 ms was too short on a loaded machine for the overlap the stream test counts on.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.overlapped.wait(), 0.5)
            if any(v.WhichOneof("kind") != "number_value" for v in request.instances):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an instance is not a number")
            return tpb.PredictResponse(
                predictions=[
                    prediction_pb2.Prediction(output=struct_pb2.Value(number_value=2 * v.number_value))
                    for v in request.instances
                ],
                predict_duration=duration_pb2.Duration(nanos=3_000_000 if warm else 900_000_000),
                warm=warm,
                mode=tpb.PREDICT_MODE_RESIDENT,
            )
        finally:
            self.running -= 1

    async def ReleasePredictor(
        self, request: tpb.ReleasePredictorRequest, context: Any
    ) -> tpb.ReleasePredictorResponse:
        self.released.append(request.artifact_id)
        was = request.artifact_id in self.resident
        self.resident.discard(request.artifact_id)
        return tpb.ReleasePredictorResponse(released=was)


@pytest.fixture
async def trainer() -> AsyncIterator[tuple[ResidentTrainer, str]]:
    servicer = ResidentTrainer()
    async with serve_trainer(servicer) as address:
        yield servicer, address


def numbers(start: int, count: int) -> list[struct_pb2.Value]:
    return [struct_pb2.Value(number_value=float(i)) for i in range(start, start + count)]


def stream_of(model_id: str, sizes: list[int]) -> list[pb.PredictStreamRequest]:
    """The first message names the model (and carries the first chunk); the rest carry chunks only."""
    out, start = [], 0
    for i, size in enumerate(sizes):
        out.append(
            pb.PredictStreamRequest(model_id=model_id if i == 0 else "", instances=numbers(start, size))
        )
        start += size
    return out


async def test_predict_says_cold_then_warm_with_the_trainers_latency(
    served_with_trainer: Served, trainer: tuple[ResidentTrainer, str]
) -> None:
    served = served_with_trainer
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    request = pb.PredictRequest(model_id=model.id, instances=numbers(1, 3))
    cold = await served.stub.Predict(request, metadata=auth)
    warm = await served.stub.Predict(request, metadata=auth)
    assert (cold.warm, warm.warm) == (False, True)
    assert cold.predict_duration.ToNanoseconds() == 900_000_000
    assert warm.predict_duration.ToNanoseconds() == 3_000_000
    assert [p.output.number_value for p in warm.predictions] == [2.0, 4.0, 6.0]
    assert cold.predictions == warm.predictions
    assert trainer[0].calls == [3, 3]  # a batch is one trainer call


async def test_a_stream_answers_each_chunk_in_order_with_its_offset(
    served_with_trainer: Served, trainer: tuple[ResidentTrainer, str]
) -> None:
    served = served_with_trainer
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    sizes = [1000, 1000, 7, 500]
    answers = [a async for a in served.stub.PredictStream(iter(stream_of(model.id, sizes)), metadata=auth)]
    assert [a.offset for a in answers] == [0, 1000, 2000, 2007]
    assert [len(a.predictions) for a in answers] == sizes
    outputs = [p.output.number_value for a in answers for p in a.predictions]
    assert outputs == [2.0 * i for i in range(2507)]
    fake = trainer[0]
    # Each answer says what the trainer said for its chunk: the first of the two chunks that ran at once
    # to arrive was cold (the gateway may deliver either first), and the chunks sent after them warm.
    assert [a.warm for a in answers] == [fake.warm_by_first[float(a.offset)] for a in answers]
    assert [a.warm for a in answers[:2]].count(False) == 1 and all(a.warm for a in answers[2:])
    assert sorted(fake.calls) == sorted(sizes)  # one trainer Predict per chunk, none larger than 1000
    assert fake.most_running == 2  # the default ZX_GATEWAY_PREDICT_STREAM_IN_FLIGHT, never more


async def test_a_stream_must_name_its_model_first_and_keep_to_it(served_with_trainer: Served) -> None:
    served = served_with_trainer
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    with pytest.raises(grpc.aio.AioRpcError) as unnamed:
        _ = [a async for a in served.stub.PredictStream(iter(stream_of("", [2])), metadata=auth)]
    assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(unnamed.value)] == ["model_id"]
    other = stream_of(model.id, [2, 2])
    other[1].model_id = "00000000-0000-4000-8000-000000000000"
    got: list[pb.PredictStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as switched:
        async for answer in served.stub.PredictStream(iter(other), metadata=auth):
            got.append(answer)
    assert switched.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(got) == 1 and got[0].offset == 0  # the chunk before the bad message was answered


async def test_a_chunk_the_model_refuses_ends_the_stream_after_the_answers_before_it(
    served_with_trainer: Served,
) -> None:
    served = served_with_trainer
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    requests = stream_of(model.id, [3, 3, 3])
    requests[1].instances[2].string_value = "not a number"
    got: list[pb.PredictStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for answer in served.stub.PredictStream(iter(requests), metadata=auth):
            got.append(answer)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(refused.value).reason == "INSTANCES_DO_NOT_FIT"
    assert [a.offset for a in got] == [0]


async def test_a_stream_takes_its_places_from_the_users_predict_limit(
    served_with_trainer: Served, trainer: tuple[ResidentTrainer, str]
) -> None:
    served, fake = served_with_trainer, trainer[0]
    assert served.gateway.settings.max_concurrent_predicts_per_user == 2
    fake.gate = asyncio.Event()
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    mine = await publish_model(served, "alice", b"alice weights", trainer_artifact_id=ARTIFACT_ID)
    his = await publish_model(served, "bob", b"bob weights", trainer_artifact_id=ARTIFACT_ID)

    # One Predict running: the stream gets the one place left, so its chunks run one at a time.
    held = asyncio.ensure_future(
        served.stub.Predict(pb.PredictRequest(model_id=mine.id, instances=numbers(0, 1)), metadata=alice)
    )
    for _ in range(500):
        if fake.running == 1:
            break
        await asyncio.sleep(0.01)
    call = served.stub.PredictStream(iter(stream_of(mine.id, [1, 1, 1])), metadata=alice)
    reading = asyncio.ensure_future(_collect(call))
    for _ in range(500):
        if fake.running == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert fake.running == 2  # the Predict and one chunk, not three chunks

    # Alice has no place left: a Predict and another stream are refused; Bob is not affected.
    refused = await rpc_error(
        served.stub.Predict(pb.PredictRequest(model_id=mine.id, instances=numbers(0, 1)), metadata=alice)
    )
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info_of(refused).reason == "TOO_MANY_PREDICTS"
    refused_stream = await rpc_error(
        _collect(served.stub.PredictStream(iter(stream_of(mine.id, [1])), metadata=alice))
    )
    assert refused_stream.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    his_call = asyncio.ensure_future(
        served.stub.Predict(pb.PredictRequest(model_id=his.id, instances=numbers(5, 1)), metadata=bob)
    )
    fake.gate.set()
    assert [p.output.number_value for p in (await his_call).predictions] == [10.0]
    assert len((await held).predictions) == 1
    assert [a.offset for a in await reading] == [0, 1, 2]
    assert fake.most_running <= 3  # alice's two places and bob's one
    # Both of alice's places are free again once the stream ended.
    fake.gate = None
    again = await _collect(served.stub.PredictStream(iter(stream_of(mine.id, [1, 1])), metadata=alice))
    assert len(again) == 2


async def test_deleting_a_model_ends_its_predictor_at_the_trainer(
    served_with_trainer: Served, trainer: tuple[ResidentTrainer, str]
) -> None:
    served, fake = served_with_trainer, trainer[0]
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    await served.stub.Predict(pb.PredictRequest(model_id=model.id, instances=numbers(0, 1)), metadata=auth)
    assert ARTIFACT_ID in fake.resident
    await served.stub.DeleteModel(pb.DeleteModelRequest(model_id=model.id), metadata=auth)
    assert fake.released == [ARTIFACT_ID]
    assert ARTIFACT_ID not in fake.resident


async def test_a_model_is_deleted_even_when_the_trainer_is_down(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    started = asyncio.get_running_loop().time()
    await served.stub.DeleteModel(pb.DeleteModelRequest(model_id=model.id), metadata=auth)
    assert asyncio.get_running_loop().time() - started < 5
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await served.stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=auth)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def _collect(call: Any) -> list[pb.PredictStreamResponse]:
    return [answer async for answer in call]


# -- zx predict ------------------------------------------------------------------------------------------

ZX = str(Path(sys.executable).with_name("zx"))


async def zx_predict(
    served: Served, key: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update({"ZX_GATEWAY_ADDRESS": served.address, "ZX_API_KEY": key, "COLUMNS": "200"})
    return await asyncio.to_thread(
        subprocess.run,
        [ZX, "predict", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_zx_predict_sends_a_file_of_json_lines_and_streams_a_large_one(
    served_with_trainer: Served, trainer: tuple[ResidentTrainer, str], tmp_path: Path
) -> None:
    served, fake = served_with_trainer, trainer[0]
    key = await served.api_key("alice")
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    small = tmp_path / "small.jsonl"
    small.write_text("1\n\n2.5\n3\n")  # a blank line is skipped
    done = await zx_predict(served, key, model.id, "--file", str(small))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["prediction"] for line in done.stdout.splitlines()] == [2, 5, 6]
    assert "3 predictions, cold:" in done.stderr and "ms at the trainer" in done.stderr
    assert fake.calls == [3]  # one Predict

    large = tmp_path / "large.jsonl"
    large.write_text("".join(f"{i}\n" for i in range(2300)))
    streamed = await zx_predict(served, key, model.id, "-f", str(large))
    assert streamed.returncode == 0, streamed.stderr
    assert [json.loads(line)["prediction"] for line in streamed.stdout.splitlines()] == [
        2 * i for i in range(2300)
    ]
    assert "2300 predictions, warm:" in streamed.stderr and "(3 chunks)" in streamed.stderr
    assert sorted(fake.calls[1:]) == [300, 1000, 1000]  # PredictStream, 1000 a chunk


async def test_zx_predict_reads_stdin_and_refuses_a_line_that_is_not_json(
    served_with_trainer: Served, trainer: tuple[ResidentTrainer, str]
) -> None:
    served, fake = served_with_trainer, trainer[0]
    key = await served.api_key("alice")
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    done = await zx_predict(served, key, model.id, "-", stdin="4\n5\n")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["prediction"] for line in done.stdout.splitlines()] == [8, 10]
    refused = await zx_predict(served, key, model.id, "--file", "-", stdin='1\n{"open": \n3\n')
    assert refused.returncode == 2
    assert "stdin line 2 is not JSON" in refused.stderr and "nothing was sent" in refused.stderr
    assert fake.calls == [2]  # the refused input never reached the trainer
