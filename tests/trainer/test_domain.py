"""The trainer's domain code without a sandbox: metrics against scikit-learn, zxrt records held to the
contract, safetensors checks, structured errors from tracebacks, and the zxrt helper itself."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from zehanx_trainer import records
from zehanx_trainer.evaluation import (
    TaskKind,
    classification_metrics,
    evaluate,
    parse_predictions,
    regression_metrics,
    seasonal_naive,
)
from zehanx_trainer.executor_port import ExecResult, ExecUsage, ExitReason
from zehanx_trainer.failures import build_error, parse_traceback
from zehanx_trainer.runtime_helper import RUNTIME_DIR
from zehanx_trainer.weights import WeightsError, inspect_safetensors

RNG = np.random.default_rng(7)


# -- held-out metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_classification_metrics_match_scikit_learn(classes: int) -> None:
    y_true = RNG.integers(0, classes, 300).tolist()
    y_pred = [t if RNG.random() < 0.7 else int(RNG.integers(0, classes)) for t in y_true]
    ours = classification_metrics(y_true, y_pred)
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert ours["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))


def test_labels_compare_by_value_not_spelling() -> None:
    assert classification_metrics([1, 2, "3", True], ["1", 2.0, 3, "true"])["accuracy"] == 1.0


def test_regression_and_forecasting_metrics_match_scikit_learn() -> None:
    y_true = RNG.normal(10, 3, 200)
    y_pred = y_true + RNG.normal(0, 1, 200)
    ours = regression_metrics(y_true.tolist(), y_pred.tolist())
    assert ours["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y_true, y_pred)))
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert ours["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))
    forecast = evaluate(
        TaskKind.FORECASTING,
        test_targets=y_true.tolist(),
        predictions=y_pred.tolist(),
        train_targets=[1.0, 2.0, 3.0, 4.0],
        season=2,
    )
    assert forecast.metrics["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y_true, y_pred))
    assert forecast.baseline_name == "seasonal naive (season 2)"


def test_baselines_are_majority_class_training_mean_and_seasonal_naive() -> None:
    clf = evaluate(
        TaskKind.CLASSIFICATION,
        test_targets=["a", "b", "b"],
        predictions=["a", "b", "b"],
        train_targets=["b", "b", "a"],
    )
    assert clf.baseline_metrics["accuracy"] == pytest.approx(2 / 3) and clf.beats_baseline
    reg = evaluate(
        TaskKind.REGRESSION, test_targets=[1.0, 3.0], predictions=[2.0, 2.0], train_targets=[2.0, 2.0]
    )
    assert reg.baseline_metrics == reg.metrics and not reg.beats_baseline
    assert seasonal_naive([1, 2, 3, 4, 5, 6], 5, 3) == [4.0, 5.0, 6.0, 4.0, 5.0]


def test_predictions_file_is_checked_line_by_line() -> None:
    good = b'{"prediction": "a", "probabilities": {"a": 0.9, "b": 0.1}}\n{"prediction": "b"}\n'
    assert parse_predictions(good, 2, TaskKind.CLASSIFICATION)[0] == ("a", {"a": 0.9, "b": 0.1})
    with pytest.raises(ValueError, match="expected 3 predictions"):
        parse_predictions(good, 3, TaskKind.CLASSIFICATION)
    with pytest.raises(ValueError, match="finite number"):
        parse_predictions(b'{"prediction": "NaN"}\n', 1, TaskKind.REGRESSION)
    with pytest.raises(ValueError, match="not JSON"):
        parse_predictions(b"{oops\n", 1, None)


# -- records from the sandbox --------------------------------------------------------------------------


def test_a_valid_metric_record_is_typed() -> None:
    record = records.parse_record(
        {"v": 1, "kind": "metric", "step": 10.0, "epoch": 1, "loss": None, "lr": 0.001, "val.accuracy": 0.9}
    )
    assert isinstance(record, records.MetricRecord)
    assert record.step == 10 and math.isnan(record.loss) and record.val == {"accuracy": 0.9}


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"v": 2, "kind": "metric", "step": 1}, "UNSUPPORTED_VERSION"),
        ({"v": True, "kind": "metric", "step": 1}, "UNSUPPORTED_VERSION"),
        ({"v": 1, "kind": "shell", "cmd": "rm"}, "UNKNOWN_KIND"),
        ({"v": 1, "kind": "metric", "step": -1}, "OUT_OF_RANGE"),
        ({"v": 1, "kind": "metric", "step": 1.5}, "BAD_TYPE"),
        ({"v": 1, "kind": "metric", "loss": "low"}, "BAD_TYPE"),
        ({"v": 1, "kind": "metric", "lr": -1}, "OUT_OF_RANGE"),
        ({"v": 1, "kind": "metric", "step": 1, "admin": True}, "UNKNOWN_FIELD"),
        ({"v": 1, "kind": "metric", "val.bad name": 1}, "BAD_NAME"),
        ({"v": 1, "kind": "metric"}, "EMPTY"),
        ({"v": 1, "kind": "metric", **{f"val.m{i}": 1.0 for i in range(40)}}, "TOO_MANY"),
        (
            {
                "v": 1,
                "kind": "checkpoint",
                "step": 1,
                "path": "../x.safetensors",
                "sha256": "0" * 64,
                "bytes": 1,
            },
            "BAD_PATH",
        ),
        (
            {
                "v": 1,
                "kind": "model",
                "path": "model.safetensors",
                "sha256": "XYZ",
                "bytes": 1,
                "config_path": "model_config.json",
            },
            "BAD_SHA256",
        ),
        ({"v": 1, "kind": "log", "level": "root", "message": "x"}, "BAD_LEVEL"),
        ({"v": 1, "kind": "log", "level": "info", "message": "x" * 5000}, "TOO_LONG"),
        ({"v": 1, "kind": "phase", "phase": "exfiltration"}, "BAD_PHASE"),
        ([1, 2], "NOT_AN_OBJECT"),
    ],
)
def test_records_that_break_the_contract_are_refused(obj: object, reason: str) -> None:
    with pytest.raises(records.RecordError) as info:
        records.parse_record(obj)
    assert info.value.reason == reason


# -- weights ------------------------------------------------------------------------------------------


def _safetensors(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def test_real_safetensors_pass_and_hostile_ones_are_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3, 4), "b": torch.ones(4, dtype=torch.int64)}, tmp_path / "m.safetensors")
    summary = inspect_safetensors((tmp_path / "m.safetensors").read_bytes())
    assert summary.parameters == 16 and summary.dtypes == ["F32", "I64"]
    with pytest.raises(WeightsError, match="8-byte"):
        inspect_safetensors(b"\x80\x03")  # a pickle prefix
    with pytest.raises(WeightsError, match="does not fit"):
        inspect_safetensors((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(WeightsError, match="overlap"):
        inspect_safetensors(
            _safetensors(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                },
                b"\0" * 8,
            )
        )
    with pytest.raises(WeightsError, match="do not match"):
        inspect_safetensors(
            _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4)
        )
    with pytest.raises(WeightsError, match="belong to no tensor"):
        inspect_safetensors(
            _safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9)
        )


# -- structured errors --------------------------------------------------------------------------------

RESULT = ExecResult(ExitReason.FAILED, 1, 0, "exited 1", ExecUsage())


def test_a_syntax_error_without_zxrt_still_gives_a_structured_error() -> None:
    stderr = '  File "/job/train.py", line 3\n    def f(:\n          ^\nSyntaxError: invalid syntax\n'
    error = build_error(
        result=RESULT,
        record=None,
        stderr_tail=stderr,
        program_paths={"train.py"},
        phase="",
        what="train.py (smoke run)",
    )
    assert (error.exception_type, error.message, error.file_path, error.line) == (
        "SyntaxError",
        "invalid syntax",
        "train.py",
        3,
    )


def test_the_innermost_program_frame_is_named_not_the_librarys() -> None:
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "/job/train.py", line 9, in <module>\n    fit()\n'
        '  File "/job/lib/fit.py", line 4, in fit\n    torch.cat([])\n'
        '  File "/venv/site-packages/torch/x.py", line 100, in cat\n    raise\n'
        "RuntimeError: expected a non-empty list of Tensors\n"
    )
    parsed = parse_traceback(stderr, {"train.py", "lib/fit.py"})
    assert parsed is not None
    assert (parsed.file_path, parsed.line, parsed.exception_type) == ("lib/fit.py", 4, "RuntimeError")


def test_a_limit_hit_says_so() -> None:
    result = ExecResult(ExitReason.MEMORY, -1, 9, "memory limit 2 GiB", ExecUsage())
    error = build_error(
        result=result, record=None, stderr_tail="", program_paths=set(), phase="training", what="train.py"
    )
    assert "memory limit" in error.message and error.phase == "training"


# -- the zxrt helper, run as a program would ---------------------------------------------------------


def _run(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(RUNTIME_DIR), "ZX_OUTPUT": str(tmp_path / "out"), **env},
    )


def _records(stdout: str) -> list[dict]:
    return [json.loads(line[5:]) for line in stdout.splitlines() if line.startswith("@@zx:")]


def test_zxrt_lines_parse_as_valid_records_and_the_model_is_safetensors(tmp_path: Path) -> None:
    proc = _run(
        "import numpy as np, zxrt\n"
        "cfg = zxrt.env()\n"
        "assert cfg.smoke and cfg.seed == 5\n"
        "zxrt.phase('training')\n"
        "zxrt.log_metrics(1, epoch=0, loss=float('nan'), lr=0.1, samples_per_s=3.0, eta_s=1.0, total_steps=9)\n"
        "zxrt.log_metrics(2, epoch=1, val={'accuracy': 0.5})\n"
        "zxrt.save_checkpoint(2, {'w': np.zeros(3, dtype=np.float32)})\n"
        "zxrt.report_final({'accuracy': 0.5})\n"
        "zxrt.save_model({'w': np.ones(3, dtype=np.float32)}, {'classes': ['a']})\n"
        "zxrt.log('done')\n",
        tmp_path,
        ZX_SMOKE="1",
        ZX_SEED="5",
    )
    assert proc.returncode == 0, proc.stderr
    parsed = [records.parse_record(r) for r in _records(proc.stdout)]
    kinds = [type(r).__name__ for r in parsed]
    assert kinds == [
        "PhaseRecord",
        "MetricRecord",
        "MetricRecord",
        "CheckpointRecord",
        "FinalRecord",
        "PhaseRecord",
        "ModelRecord",
        "LogRecord",
    ]
    assert math.isnan(parsed[1].loss)
    inspect_safetensors((tmp_path / "out" / "model.safetensors").read_bytes())
    assert json.loads((tmp_path / "out" / "model_config.json").read_text()) == {"classes": ["a"]}


def test_zxrt_refuses_nonsense_where_the_program_calls_it(tmp_path: Path) -> None:
    proc = _run("import zxrt\nzxrt.phase('data_loading')\nzxrt.log_metrics(1, loss='low')\n", tmp_path)
    assert proc.returncode == 1
    error = [r for r in _records(proc.stdout) if r["kind"] == "error"]
    assert len(error) == 1
    record = records.parse_record(error[0])
    assert (record.type, record.phase, record.file, record.line) == (
        "TypeError",
        "data_loading",
        "prog.py",
        3,
    )
    assert "loss must be a number" in record.message


def test_a_validation_line_does_not_swallow_the_held_back_loss_line(tmp_path: Path) -> None:
    # Progress lines 50 per second are throttled to 20; a validation line right after one that was
    # held back sends it first, so every step that had a validation line also shows its loss.
    proc = _run(
        "import time, zxrt\n"
        "for step in range(1, 41):\n"
        "    zxrt.log_metrics(step=step, loss=1.0 / step, total_steps=40)\n"
        "    if step % 10 == 0:\n"
        "        zxrt.log_metrics(step=step, val={'accuracy': step / 40})\n"
        "    time.sleep(0.02)\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = [r for r in _records(proc.stdout) if r["kind"] == "metric"]
    loss_steps = {r["step"] for r in metrics if "loss" in r}
    val_steps = [r["step"] for r in metrics if "val.accuracy" in r]
    assert val_steps == [10, 20, 30, 40]
    assert set(val_steps) <= loss_steps, (sorted(loss_steps), val_steps)
    assert len(metrics) < 40 + 4, "progress lines are still throttled"
    steps = [r["step"] for r in metrics]
    assert steps == sorted(steps), "in step order"
