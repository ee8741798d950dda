"""Resident predictors through the trainer's gRPC API: a trainer built in-process on port 0 (so the
test can look at its pool), the suite's real executor process (local sandbox, sessions), and models
from one real training run of the tiny threshold program.

One Train run makes the model; its files are published again as other artifacts (another user's
copy, and copies whose predict.py can be made to raise or to kill its own process on a marked row),
as a model uploaded twice would be: every artifact is a real trained model in the real store.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from programs import tiny_program
from trainer_support import TOKEN, Dataset, Run, Suite, request_for, serve_trainer_app
from zehanx.common.v1 import task_family_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
from zehanx_runtime.errors import FailedPrecondition
from zehanx_trainer.artifacts import ArtifactStore, LocalBlobBackend
from zehanx_trainer.executor_port import ExecEvent, ExecRequest, SessionSpec
from zehanx_trainer.prediction import Predictor, PredictorConfig
from zehanx_trainer.serving import EVICTIONS, PredictorPool, ServingConfig, resident_capable
from zehanx_trainer.settings import TrainerSettings

METADATA = (("x-zx-service-token", TOKEN),)
MiB = 1024 * 1024
#: predict.py of the "fragile" copies: a row {"raise": true} raises, {"die": true} kills the process.
FRAGILE = (
    'if row.get("raise"):\n'
    '            raise ValueError("this row asked predict() to fail")\n'
    '        if row.get("die"):\n'
    "            os._exit(7)"
)


@dataclass
class Models:
    honest: str
    copy: str
    third: str
    fragile: str


@pytest.fixture(scope="module")
def models(suite: Suite, tiny: Dataset) -> Models:
    """One real training run; its artifact republished as the other models the tests need."""
    request = request_for(
        tiny_program("honest"),
        tiny,
        family=task_family_pb2.TASK_FAMILY_TABULAR_CLASSIFICATION,
        target="label",
    )
    run = Run(request, suite.train(request))
    honest = run.result.artifact_id

    async def republish() -> Models:
        store = ArtifactStore(LocalBlobBackend(suite.artifact_dir))
        manifest = await store.manifest(honest)
        files = await store.read_all(manifest)
        copy = await store.publish(files, manifest.metadata)
        await asyncio.sleep(0.002)  # the manifest's created_time (ms) makes each publication its own artifact
        third = await store.publish(files, manifest.metadata)
        fragile_files = dict(files)
        fragile_files["predict.py"] = files["predict.py"].replace(b"# @@IN_PREDICT@@", FRAGILE.encode())
        assert fragile_files["predict.py"] != files["predict.py"]
        fragile = await store.publish(fragile_files, manifest.metadata)
        return Models(honest, copy.artifact_id, third.artifact_id, fragile.artifact_id)

    return asyncio.run(republish())


def settings_for(suite: Suite, **overrides: Any) -> TrainerSettings:
    values: dict[str, Any] = {
        "port": 0,
        "metrics_port": 0,
        "service_token": TOKEN,
        "executor_address": suite.executor.address,
        "artifact_dir": suite.artifact_dir,
        "dataset_roots": [suite.dataset_root],
        "gpus": 0,
        "memory_bytes": 512 * MiB,
        "disk_bytes": 64 * MiB,
        "predictor_memory_bytes": 512 * MiB,
        "predictors_memory_bytes": 4096 * MiB,
        "predict_timeout_s": 60,
    }
    values.update(overrides)
    return TrainerSettings(**values)


def rows(*xs: float, **marks: bool) -> list[struct_pb2.Value]:
    out = []
    for x in xs:
        value = struct_pb2.Value()
        json_format.ParseDict({"x": x, **marks}, value)
        out.append(value)
    return out


async def predict(stub: rpc.TrainerServiceStub, artifact_id: str, instances: list[struct_pb2.Value]) -> Any:
    return await stub.Predict(
        pb.PredictRequest(artifact_id=artifact_id, instances=instances), metadata=METADATA, timeout=120
    )


def runner_pid(instance: str) -> int | None:
    """The host pid of the predictor process the trainer named ``instance`` (its argv), if alive."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"zx_predictor.py" in argv and instance.encode() in argv:
            return int(entry)
    return None


async def gone(instance: str, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if runner_pid(instance) is None:
            return True
        await asyncio.sleep(0.1)
    return False


def answers(response: Any) -> list[tuple[str, dict[str, float]]]:
    return [(json_format.MessageToDict(p.output), dict(p.probabilities)) for p in response.predictions]


# -- warm equals cold ----------------------------------------------------------------------------------


async def test_the_first_call_starts_the_predictor_and_later_calls_are_warm_with_the_cold_answers(
    suite: Suite, models: Models
) -> None:
    xs = (-7.5, -0.5, 0.25, 3.0, 12.5)
    async with serve_trainer_app(settings_for(suite)) as (app, stub):
        first = await predict(stub, models.honest, rows(*xs))
        assert (first.mode, first.warm, first.restarted) == (pb.PREDICT_MODE_RESIDENT, False, False)
        resident = app.predictor.pool.resident(models.honest)
        assert resident is not None
        second = await predict(stub, models.honest, rows(*xs))
        assert (second.mode, second.warm, second.one_shot_reason) == (pb.PREDICT_MODE_RESIDENT, True, "")
        # Same process: the second call did not start another one.
        assert app.predictor.pool.resident(models.honest) == resident
        assert app.predictor.pool.starts == 1
        assert runner_pid(resident[1]) is not None

        # The same model run once from predict.py's file entry point (what the held-out evaluation does).
        one_shot = Predictor(
            app.executor, app.store, PredictorConfig(memory_bytes=512 * MiB, disk_bytes=64 * MiB)
        )
        cold = await one_shot.predict(models.honest, [{"x": x} for x in xs])
        assert cold.mode == "one_shot" and not cold.warm
        assert answers(second) == answers(first) == [(value, probs) for value, probs in cold.predictions]
        assert [a[0] for a in answers(second)] == ["neg", "neg", "pos", "pos", "pos"]

        # Calls at once to one model queue for its one process, each gets its own answer.
        together = await asyncio.gather(*(predict(stub, models.honest, rows(x)) for x in (-3.0, 3.0) * 3))
        assert [r.predictions[0].output.string_value for r in together] == ["neg", "pos"] * 3
        assert all(r.warm for r in together) and app.predictor.pool.starts == 1


# -- failures ------------------------------------------------------------------------------------------


async def test_an_exception_answers_that_call_and_a_crash_is_reported_then_restarted(
    suite: Suite, models: Models
) -> None:
    async with serve_trainer_app(settings_for(suite)) as (app, stub):
        pool = app.predictor.pool
        assert (await predict(stub, models.fragile, rows(1.0))).predictions[0].output.string_value == "pos"
        before = pool.resident(models.fragile)
        assert before is not None

        # predict() raised: that call's error, with the program's exception and line; the process stays.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await predict(stub, models.fragile, rows(1.0, **{"raise": True}))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ValueError: this row asked predict() to fail (predict.py:" in (info.value.details() or "")
        assert pool.resident(models.fragile) == before
        assert (await predict(stub, models.fragile, rows(2.0))).warm

        # The process died mid-call: a clear error for that call (not gRPC text), the process is gone.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await predict(stub, models.fragile, rows(1.0, die=True))
        assert info.value.code() == grpc.StatusCode.ABORTED
        details = info.value.details() or ""
        assert "the model's predictor died during this call (exit status 7)" in details, details
        assert "the next call starts a new one" in details
        assert await gone(before[1])

        # The next call works, from a new process, and says it restarted.
        after = await predict(stub, models.fragile, rows(-1.0, 4.0))
        assert [p.output.string_value for p in after.predictions] == ["neg", "pos"]
        assert (after.mode, after.warm, after.restarted) == (pb.PREDICT_MODE_RESIDENT, False, True)
        now = pool.resident(models.fragile)
        assert now is not None and now[1] != before[1]
        assert not (await predict(stub, models.fragile, rows(3.0))).restarted


# -- the pool's bounds ---------------------------------------------------------------------------------


async def test_two_models_never_share_a_process_and_release_ends_it(suite: Suite, models: Models) -> None:
    async with serve_trainer_app(settings_for(suite)) as (app, stub):
        pool = app.predictor.pool
        await asyncio.gather(predict(stub, models.honest, rows(1.0)), predict(stub, models.copy, rows(1.0)))
        a, b = pool.resident(models.honest), pool.resident(models.copy)
        assert a is not None and b is not None
        assert a[0] != b[0]  # two executor sessions
        pid_a, pid_b = runner_pid(a[1]), runner_pid(b[1])
        assert pid_a is not None and pid_b is not None and pid_a != pid_b

        released = await stub.ReleasePredictor(
            pb.ReleasePredictorRequest(artifact_id=models.copy), metadata=METADATA, timeout=30
        )
        assert released.released
        assert await gone(b[1])
        assert runner_pid(a[1]) == pid_a  # the other model's process is untouched
        again = await stub.ReleasePredictor(
            pb.ReleasePredictorRequest(artifact_id=models.copy), metadata=METADATA, timeout=30
        )
        assert not again.released
        # Released is not crashed: the next call is a plain cold start.
        fresh = await predict(stub, models.copy, rows(1.0))
        assert (fresh.warm, fresh.restarted) == (False, False)


@pytest.mark.parametrize(
    ("bound", "overrides"),
    [
        ("count", {"predictors_max": 2}),
        ("memory", {"predictors_max": 8, "predictors_memory_bytes": 1024 * MiB}),
    ],
)
async def test_the_pool_bound_ends_the_least_recently_used_predictor(
    suite: Suite, models: Models, bound: str, overrides: dict[str, Any]
) -> None:
    async with serve_trainer_app(settings_for(suite, **overrides)) as (app, stub):
        pool = app.predictor.pool
        await predict(stub, models.honest, rows(1.0))
        await predict(stub, models.copy, rows(1.0))
        await predict(stub, models.honest, rows(2.0))  # copy is now the least recently used
        evicted = pool.resident(models.copy)
        kept = pool.resident(models.honest)
        assert evicted is not None and kept is not None
        before = EVICTIONS.labels(bound)._value.get()
        third = await predict(stub, models.third, rows(1.0))
        assert not third.warm
        assert pool.residents() == [models.honest, models.third]
        assert EVICTIONS.labels(bound)._value.get() == before + 1
        assert await gone(evicted[1])
        assert pool.resident(models.honest) == kept
        assert pool.reserved_bytes == 2 * 512 * MiB


async def test_when_the_executor_has_no_room_the_least_recently_used_predictor_makes_room(
    suite: Suite, models: Models
) -> None:
    # The suite's executor holds 8 GiB of session memory limits: two 3 GiB predictors fit, a third does
    # not (the trainer's own bounds would allow it), so the executor answers SESSION_CAPACITY.
    gib = 1024 * MiB
    async with serve_trainer_app(
        settings_for(suite, predictor_memory_bytes=3 * gib, predictors_memory_bytes=64 * gib)
    ) as (app, stub):
        pool = app.predictor.pool
        await predict(stub, models.honest, rows(1.0))
        await predict(stub, models.copy, rows(1.0))
        oldest = pool.resident(models.honest)
        assert oldest is not None
        before = EVICTIONS.labels("executor_capacity")._value.get()
        third = await predict(stub, models.third, rows(1.0))
        assert [p.output.string_value for p in third.predictions] == ["pos"]
        assert EVICTIONS.labels("executor_capacity")._value.get() == before + 1
        assert pool.residents() == [models.copy, models.third]
        assert await gone(oldest[1])


async def test_an_idle_predictor_is_ended(suite: Suite, models: Models) -> None:
    async with serve_trainer_app(settings_for(suite, predictor_idle_s=0.5)) as (app, stub):
        await predict(stub, models.honest, rows(1.0))
        resident = app.predictor.pool.resident(models.honest)
        assert resident is not None
        assert await gone(resident[1], within_s=10)
        assert app.predictor.pool.resident(models.honest) is None
        assert not (await predict(stub, models.honest, rows(1.0))).warm


# -- an executor without sessions -----------------------------------------------------------------------


class NoSessions:
    """The real executor for Execute; its Session answers as E2B and Ray backends do."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sessions_asked = 0

    def execute(self, request: ExecRequest, *, timeout_s: float) -> AsyncIterator[ExecEvent]:
        return self.real.execute(request, timeout_s=timeout_s)

    async def open_session(self, spec: SessionSpec, *, timeout_s: float) -> Any:
        self.sessions_asked += 1
        raise FailedPrecondition("the e2b backend cannot keep a process alive", reason="SESSIONS_UNSUPPORTED")


async def test_without_sessions_predict_runs_one_shot_and_says_so(suite: Suite, models: Models) -> None:
    async with serve_trainer_app(settings_for(suite)) as (app, _):
        fake = NoSessions(app.executor)
        predictor = Predictor(
            fake,
            app.store,
            PredictorConfig(memory_bytes=512 * MiB, disk_bytes=64 * MiB),
            pool=PredictorPool(fake, ServingConfig(predictor_memory_bytes=512 * MiB)),
        )
        try:
            outcomes = [await predictor.predict(models.honest, [{"x": 2.0}]) for _ in range(2)]
        finally:
            await predictor.close()
        for outcome in outcomes:
            assert (outcome.mode, outcome.warm) == ("one_shot", False)
            assert "has no sessions" in outcome.one_shot_reason
            assert outcome.predictions == [("pos", {})]
        assert fake.sessions_asked == 1  # asked once, then remembered


def test_a_predict_py_without_load_and_predict_is_served_one_shot() -> None:
    assert resident_capable(b"def load(d):\n    pass\n\n\ndef predict(s, rows):\n    return []\n") == ""
    assert "defines no load() and predict()" in resident_capable(b"import sys\nprint(sys.argv)\n")
    assert resident_capable(b"def load(:\n") == "predict.py does not parse"


# -- instances as JSON lines ---------------------------------------------------------------------------


async def test_instances_as_json_lines_are_answered_as_json_lines_with_the_same_predictions(
    suite: Suite, models: Models
) -> None:
    xs = (-7.5, -0.5, 0.25, 3.0, 12.5)
    async with serve_trainer_app(settings_for(suite)) as (_app, stub):
        values = await predict(stub, models.honest, rows(*xs))
        lines = "".join(json.dumps({"x": x}) + "\n" for x in xs).encode()
        reply = await stub.Predict(
            pb.PredictRequest(artifact_id=models.honest, instances_jsonl=lines),
            metadata=METADATA,
            timeout=120,
        )
        assert not reply.predictions and reply.warm
        got = [json.loads(line) for line in reply.predictions_jsonl.decode().splitlines()]
        assert [(g["prediction"], g.get("probabilities", {})) for g in got] == answers(values)
        # A bare value is the model's one input column, as with Values.
        bare = await stub.Predict(
            pb.PredictRequest(artifact_id=models.honest, instances_jsonl=b"-3\n3"),
            metadata=METADATA,
            timeout=120,
        )
        assert [json.loads(line)["prediction"] for line in bare.predictions_jsonl.splitlines()] == [
            "neg",
            "pos",
        ]

        for bad, says in (
            (b'{"x": 1}\n{"x": \n', "line 2 is not one JSON value"),
            (b'{"x": 1}\n{"x": NaN}\n', "line 2 is not one JSON value"),
            (b'{"x": 1}, {"x": 2}\n', "line 1 is not one JSON value"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(
                    pb.PredictRequest(artifact_id=models.honest, instances_jsonl=bad), metadata=METADATA
                )
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert says in (caught.value.details() or ""), caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Predict(
                pb.PredictRequest(
                    artifact_id=models.honest, instances=rows(1.0), instances_jsonl=b'{"x": 1}'
                ),
                metadata=METADATA,
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not both" in (caught.value.details() or "")
        # Neither form (the servicer checks both rules: no message-level CEL walks the Values).
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Predict(pb.PredictRequest(artifact_id=models.honest), metadata=METADATA)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "give 1 to 1000 instances" in (caught.value.details() or "")
