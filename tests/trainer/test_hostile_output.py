"""The trainer under hostile sandbox output (security review M4, L2 and M7's event volume).

A sandboxed program controls ``model.safetensors``, ``model_config.json``, ``predictions.jsonl`` and its
``@@zx:`` records. Each payload here is one the review measured: on the code before the fix it stalled
the event loop for tens of seconds, escaped as an uncaught exception (INTERNAL), or stored every log
record. Now each is a clear program failure, checked off the event loop, or counted and dropped.

Most tests drive the real :class:`Trainer` with a scripted executor (the executor port is a Protocol;
what a sandbox would print is replayed); one runs a real program in the real sandbox.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from programs import tiny_program
from trainer_support import Dataset, Run, Suite, request_for
from zehanx.common.v1 import log_pb2, task_family_pb2
from zehanx_runtime.errors import FailedPrecondition
from zehanx_trainer import training
from zehanx_trainer.artifacts import ArtifactStore, LocalBlobBackend
from zehanx_trainer.convert import to_spec
from zehanx_trainer.domain import LogLine, ProgramFailed, RunSucceeded, TrainerConfig, TrainEvent
from zehanx_trainer.evaluation import TaskKind, parse_predictions
from zehanx_trainer.executor_port import (
    ExecEvent,
    ExecMetric,
    ExecProducedFile,
    ExecRequest,
    ExecResult,
    ExecUsage,
    ExitReason,
)
from zehanx_trainer.prediction import Predictor, PredictorConfig
from zehanx_trainer.training import Trainer
from zehanx_trainer.weights import MAX_HEADER_BYTES, WeightsError, inspect_safetensors

TABULAR = task_family_pb2.TASK_FAMILY_TABULAR_CLASSIFICATION


def _safetensors(header: dict | bytes, body: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


VALID_WEIGHTS = _safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)


# -- M4: safetensors headers ----------------------------------------------------------------------------


def test_m4_a_thousand_4000_digit_dimensions_are_refused_at_the_first_number() -> None:
    # The review's 4 MB header: k=1000 dims of 4000 digits took 75 s of the event loop (math.prod).
    big = "9" * 4000
    header = ('{"w":{"dtype":"F32","shape":[' + ",".join([big] * 1000) + '],"data_offsets":[0,4]}}').encode()
    assert len(header) < MAX_HEADER_BYTES  # under the length cap: the digit bound is what refuses it
    started = time.monotonic()
    with pytest.raises(WeightsError, match="integer of 4000 digits"):
        inspect_safetensors(_safetensors(header, b"\0" * 4))
    assert time.monotonic() - started < 10  # milliseconds now; 75 s before


def test_m4_a_header_over_the_configured_cap_is_refused_before_parsing() -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "pad": "x" * 5000})
    with pytest.raises(WeightsError, match="cap of 4096 bytes"):
        inspect_safetensors(_safetensors(header.encode(), b"\0" * 4), max_header_bytes=4096)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (str([10**400]), "integer of 401 digits"),  # F4: OverflowError (int * 0.5) before the fix
        ("[" + "1" * 4301 + "]", "integer of 4301 digits"),  # ValueError (int-digits limit) before
        (str([2**40]), "below 2\\^40"),
        (str([2**39, 2**39]), "more than 2\\^53 elements"),
        (str([1] * 65), "at most 64 dimensions"),
        ("[-1]", "non-negative"),
        ("[1.5]", "non-negative integers"),
        ("[3]", "do not match"),  # 3 F4 values are 1.5 bytes: never a whole byte range
    ],
)
def test_m4_hostile_shapes_are_a_weights_error_not_a_crash(shape: str, message: str) -> None:
    header = ('{"w": {"dtype": "F4", "shape": ' + shape + ', "data_offsets": [0, 4]}}').encode()
    with pytest.raises(WeightsError, match=message):
        inspect_safetensors(_safetensors(header, b"\0" * 4))


@pytest.mark.parametrize(
    "header",
    [
        b'{"w":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # RecursionError in the JSON parser
        b'{"w":{"dtype":["F32"],"shape":[1],"data_offsets":[0,4]}}',  # unhashable dtype: TypeError
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,' + b"4" * 30 + b"]}}",
    ],
)
def test_m4_parser_failures_are_weights_errors(header: bytes) -> None:
    with pytest.raises(WeightsError):
        inspect_safetensors(_safetensors(header, b"\0" * 4))


def test_m4_valid_packed_and_empty_tensors_still_pass() -> None:
    summary = inspect_safetensors(
        _safetensors(
            {
                "packed": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]},
                "empty": {"dtype": "F32", "shape": [0, 2**39], "data_offsets": [3, 3]},
                "w": {"dtype": "BF16", "shape": [2], "data_offsets": [3, 7]},
            },
            b"\0" * 7,
        )
    )
    assert summary.parameters == 8 and summary.dtypes == ["BF16", "F32", "F4"]


# -- a scripted executor for the run path -----------------------------------------------------------------


def _log_record(i: int) -> ExecMetric:
    return ExecMetric({"v": 1, "kind": "log", "level": "info", "message": f"spam {i}"})


class ScriptedExecutor:
    """Answers train.py with ``train_events`` plus the model files, predict.py with ``predictions``."""

    def __init__(
        self,
        *,
        weights: bytes = VALID_WEIGHTS,
        config: bytes = b'{"classes": ["neg", "pos"]}',
        predictions: Callable[[int], bytes] | None = None,
        train_events: Callable[[], list[ExecEvent]] = list,
    ) -> None:
        self.weights, self.config = weights, config
        self.predictions = predictions or (lambda n: b'{"prediction": "pos"}\n' * n)
        self.train_events = train_events

    async def execute(self, request: ExecRequest, *, timeout_s: float) -> AsyncIterator[ExecEvent]:
        done = ExecResult(ExitReason.COMPLETED, 0, 0, "exited 0", ExecUsage(wall_s=0.1))
        if request.argv[-1] == "train.py":
            for event in self.train_events():
                yield event
            for path, data in (
                ("output/model.safetensors", self.weights),
                ("output/model_config.json", self.config),
            ):
                yield ExecProducedFile(path, len(data), "0" * 64, data)
        else:
            inputs = next(f.content for f in request.files if f.path == "data/inputs.jsonl")
            data = self.predictions(inputs.count(b"\n"))
            yield ExecProducedFile("predictions.jsonl", len(data), "0" * 64, data)
        yield done


async def _run(executor: ScriptedExecutor, tiny: Dataset, tmp_path: Path, **config: Any) -> list[TrainEvent]:
    trainer = Trainer(
        executor,
        ArtifactStore(LocalBlobBackend(tmp_path)),
        TrainerConfig(dataset_roots=(tiny.root.parent,), gpus=0, **config),
    )
    request = request_for(tiny_program(), tiny, family=TABULAR, target="label", smoke_only=True)
    return [item.event async for item in trainer.train(to_spec(request))]


async def test_m4_a_hostile_model_fails_the_run_as_a_program_failure(tiny: Dataset, tmp_path: Path) -> None:
    weights = _safetensors(
        json.dumps({"w": {"dtype": "F4", "shape": [10**400], "data_offsets": [0, 4]}}).encode(), b"\0" * 4
    )
    events = await _run(ScriptedExecutor(weights=weights), tiny, tmp_path)
    failure = events[-1]
    assert isinstance(failure, ProgramFailed) and failure.repairable
    assert failure.error.phase == "saving"
    assert "not valid safetensors" in failure.error.message and "401 digits" in failure.error.message


async def test_m4_the_weights_check_runs_off_the_event_loop(
    tiny: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real = training.inspect_safetensors

    def recording(data: bytes, **kw: Any) -> Any:
        threads.append(threading.current_thread())
        return real(data, **kw)

    monkeypatch.setattr(training, "inspect_safetensors", recording)
    events = await _run(ScriptedExecutor(), tiny, tmp_path)
    assert isinstance(events[-1], RunSucceeded), events[-1]
    assert threads and all(t is not threading.main_thread() for t in threads)


@pytest.mark.parametrize(
    "config",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 65 + b"1" + b"}" * 65,
        b"{" + b" " * (5 * 1024 * 1024) + b"}",
    ],
    ids=["recursion", "deep", "huge"],
)
async def test_l2_a_hostile_model_config_is_a_program_failure(
    config: bytes, tiny: Dataset, tmp_path: Path
) -> None:
    events = await _run(ScriptedExecutor(config=config), tiny, tmp_path)
    assert isinstance(events[-1], ProgramFailed)
    assert "model_config.json is not a JSON object" in events[-1].error.message


# -- L2: predictions.jsonl --------------------------------------------------------------------------------

HOSTILE_PREDICTIONS = {
    "huge_int": (b'{"prediction": 1' + b"0" * 400 + b"}", "401 digits"),
    "huge_float": (b'{"prediction": 1e400}', "not finite"),
    "nan": (b'{"prediction": NaN}', "NaN is not a number"),
    "deep": (b'{"prediction": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests deeper"),
    "deep_probabilities": (
        b'{"prediction": "a", "probabilities": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}",
        "nests deeper",
    ),
    "huge_probability": (b'{"prediction": "a", "probabilities": {"a": 1' + b"0" * 400 + b"}}", "401 digits"),
    "long_line": (b'{"prediction": "' + b"a" * (2 * 1024 * 1024) + b'"}', "longer than"),
    "not_utf8": (b'{"prediction": "\xff"}', "not UTF-8"),
}


@pytest.mark.parametrize("kind", [None, TaskKind.CLASSIFICATION, TaskKind.REGRESSION])
@pytest.mark.parametrize("case", sorted(HOSTILE_PREDICTIONS))
def test_l2_hostile_predictions_are_a_value_error_naming_the_line(case: str, kind: TaskKind | None) -> None:
    line, message = HOSTILE_PREDICTIONS[case]
    data = b'{"prediction": 1}\n' + line + b"\n"
    with pytest.raises(ValueError, match="line 2") as info:
        parse_predictions(data, 2, kind)
    assert message in str(info.value)
    assert type(info.value) is ValueError  # not an OverflowError/RecursionError that happens to subclass


def test_l2_too_many_lines_stop_at_the_first_extra_line() -> None:
    data = b'{"prediction": 1}\n' * 3 + b"{not json at all\n" * 100_000
    with pytest.raises(ValueError, match=r"expected 3 predictions .* got more \(line 4\)"):
        parse_predictions(data, 3, None)


def test_l2_ordinary_predictions_still_parse() -> None:
    data = (
        b'{"prediction": "a", "probabilities": {"a": 0.75, "b": 1}}\n\n{"prediction": [[1, 2], {"x": 3}]}\n'
    )
    assert parse_predictions(data, 2, None) == [("a", {"a": 0.75, "b": 1.0}), ([[1, 2], {"x": 3}], {})]
    assert parse_predictions(b'{"prediction": ' + b"9" * 300 + b"}\n", 1, TaskKind.REGRESSION)[0][0] == int(
        "9" * 300
    )


@pytest.mark.parametrize("case", ["huge_int", "huge_float", "deep"])
async def test_l2_hostile_predictions_fail_the_run_naming_the_line(
    case: str, tiny: Dataset, tmp_path: Path
) -> None:
    line = HOSTILE_PREDICTIONS[case][0]
    executor = ScriptedExecutor(predictions=lambda n: b'{"prediction": "pos"}\n' + line + b"\n" * n)
    events = await _run(executor, tiny, tmp_path)
    failure = events[-1]
    assert isinstance(failure, ProgramFailed), failure
    assert failure.error.phase == "prediction"
    assert failure.error.message.startswith("predict.py wrote unusable predictions: line 2")


@pytest.mark.parametrize("case", ["huge_int", "huge_float", "deep"])
async def test_l2_hostile_predictions_fail_predict_with_failed_precondition(
    case: str, tmp_path: Path
) -> None:
    store = ArtifactStore(LocalBlobBackend(tmp_path))
    manifest = await store.publish(
        {"predict.py": b"print()\n", "output/model.safetensors": VALID_WEIGHTS},
        {"predict_entry_point": "predict.py", "input_columns": '["x"]'},
    )
    line = HOSTILE_PREDICTIONS[case][0]
    executor = ScriptedExecutor(predictions=lambda n: line + b"\n")
    predictor = Predictor(executor, store, PredictorConfig())
    with pytest.raises(FailedPrecondition, match="unusable predictions: line 1") as info:
        await predictor.predict(manifest.artifact_id, [{"x": 1.0}])
    assert info.value.reason == "PREDICT_BAD_OUTPUT"


# -- M7: zxrt log records share the log bucket ------------------------------------------------------------


async def test_m7_ten_thousand_log_records_are_rate_limited_and_counted(
    tiny: Dataset, tmp_path: Path
) -> None:
    executor = ScriptedExecutor(train_events=lambda: [_log_record(i) for i in range(10_000)])
    started = time.monotonic()
    events = await _run(executor, tiny, tmp_path, log_lines_per_s=1.0, log_burst=20)
    elapsed = time.monotonic() - started
    assert isinstance(events[-1], RunSucceeded)
    forwarded = [e for e in events if isinstance(e, LogLine) and e.text.startswith("[info] spam")]
    # The burst, plus one a second for however long the run took (a fraction of a second).
    assert 20 <= len(forwarded) <= 20 + elapsed + 1
    summary = [e.text for e in events if isinstance(e, LogLine) and "were not forwarded" in e.text]
    assert summary == [
        f"{10_000 - len(forwarded)} output lines and zxrt log records were not forwarded (over 1 lines/s)"
    ]


# -- M7 through the real sandbox --------------------------------------------------------------------------

CHATTY_TRAIN = '''\
"""Prints about 10,000 @@zx: log records a second for 2.5 s, then saves a model (a hostile program)."""
import json
import time

import numpy as np

import zxrt

record = "@@zx:" + json.dumps({"v": 1, "kind": "log", "level": "info", "message": "chat"})
end = time.monotonic() + 2.5
while time.monotonic() < end:
    print("\\n".join([record] * 100), flush=True)
    time.sleep(0.01)
zxrt.save_model({"threshold": np.array([0.0], dtype=np.float32)}, {"classes": ["neg", "pos"]})
'''


def test_m7_log_records_from_a_real_sandbox_are_held_to_the_log_rate(suite: Suite, tiny: Dataset) -> None:
    program = tiny_program()
    for f in program.files:
        if f.path == "train.py":
            f.content = CHATTY_TRAIN.encode()
    request = request_for(program, tiny, family=TABULAR, target="label", smoke_only=True)
    started = time.monotonic()
    run = Run(request, suite.train(request))
    elapsed = time.monotonic() - started
    assert run.result.smoke_only
    chat = [line for line in run.logs(log_pb2.LOG_SOURCE_PROGRAM) if line == "[info] chat"]
    platform = run.logs(log_pb2.LOG_SOURCE_PLATFORM)
    # The executor passes 200 records a second (~700 in 2.5 s); the trainer then its bucket's worth:
    # 200 at once and 50 a second. Before the fix every record the executor passed was stored.
    assert any("executor dropped" in line for line in platform)
    dropped = [line for line in platform if "output lines and zxrt log records were not forwarded" in line]
    assert len(dropped) == 1 and int(dropped[0].split()[0]) > 0, platform
    assert 0 < len(chat) <= 200 + 50 * elapsed + 1
