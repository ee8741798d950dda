"""A training run: staging, smoke run, full run, held-out evaluation, publishing.

This is the trainer's domain: no grpc. The servicer turns a ``TrainRequest`` into a :class:`TrainSpec`,
iterates :meth:`Trainer.train` and turns each :class:`Sequenced` event into a ``TrainResponse``.

The order of a run, and what each stage guarantees:

1. STAGING: the program is checked (entry points, runtime helper version), the dataset files are read
   from the allowed folders and verified against their sha256, the task is taken from the plan.
2. SMOKE_RUN: ``train.py`` with ``ZX_SMOKE=1`` under a tight time limit, then ``predict.py`` on a few
   validation inputs. A failure ends the run with a repairable structured error, in seconds.
3. TRAINING: the full run, its metrics, logs and checkpoints streamed as they come.
4. EVALUATING: ``predict.py`` in a fresh sandbox on the test inputs only (no targets); the trainer
   scores the predictions itself, beside a simple baseline.
5. PUBLISHING: weights (safetensors, checked), program, schema, metrics and model card go to the
   artifact store, all or nothing.

Cancelling the iteration (the gRPC call) closes the executor stream, which kills the sandbox; a
publish in flight removes what it wrote.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from zehanx_runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from zehanx_runtime.logging import get_logger
from zehanx_runtime.program_output import RECORD_PREFIX

from zehanx_trainer import datasets as ds
from zehanx_trainer.artifacts import ArtifactStore
from zehanx_trainer.evaluation import (
    Evaluation,
    EvaluationError,
    TaskKind,
    evaluate,
    nests_deeper,
    parse_predictions,
)
from zehanx_trainer.executor_port import (
    ExecFile,
    ExecLimits,
    ExecMetric,
    ExecOutput,
    ExecProducedFile,
    ExecRequest,
    ExecResult,
    ExecUsage,
    Executor,
    ExitReason,
)
from zehanx_trainer.failures import StructuredError, build_error, failure_error, is_repairable
from zehanx_trainer.model_card import CardInput, CurveSummary, render
from zehanx_trainer.records import (
    CheckpointRecord,
    ErrorRecord,
    FinalRecord,
    LogRecord,
    MetricRecord,
    ModelRecord,
    PhaseRecord,
    RecordError,
    parse_record,
)
from zehanx_trainer.runtime_helper import ZXRT_VERSION, zxrt_source
from zehanx_trainer.weights import MAX_HEADER_BYTES, WeightsError, WeightsSummary, inspect_safetensors

log = get_logger("zehanx.trainer")

#: Where things are in the sandbox's working folder (relative paths work on every backend).
DATA_DIR = "data"
OUTPUT_DIR = "output"
MAX_LOG_LINE_BYTES = 16 * 1024
STDERR_TAIL_BYTES = 32 * 1024
MAX_PREDICTIONS_BYTES = 64 * 1024 * 1024
#: ``output/model_config.json``: sizes, class names, a vocabulary; the model card quotes it.
MAX_MODEL_CONFIG_BYTES = 4 * 1024 * 1024
MAX_MODEL_CONFIG_DEPTH = 64
#: Task families (``schema.json`` / ``TaskFamily`` names) and how the trainer scores them.
TASK_KINDS = {
    "text_classification": TaskKind.CLASSIFICATION,
    "tabular_classification": TaskKind.CLASSIFICATION,
    "image_classification": TaskKind.CLASSIFICATION,
    "tabular_regression": TaskKind.REGRESSION,
    "time_series_forecasting": TaskKind.FORECASTING,
    "time_series_classification": TaskKind.CLASSIFICATION,
}


# -- what a run is given ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramSpec:
    files: tuple[ExecFile, ...]
    train_entry_point: str = "train.py"
    predict_entry_point: str = "predict.py"
    runtime_version: str = "1"

    @property
    def paths(self) -> set[str]:
        return {f.path for f in self.files}


@dataclass(frozen=True)
class PlanSpec:
    task_family: str
    target_column: str
    input_columns: tuple[str, ...] = ()
    metric_name: str = ""
    model_family: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""


@dataclass(frozen=True)
class ResourceSpec:
    device: str = "unspecified"  # "unspecified" | "cpu" | "gpu"
    gpu_count: int = 0
    cpu_count: int = 0
    memory_bytes: int = 0
    training_s: float = 0.0


@dataclass(frozen=True)
class ModelMeta:
    title: str = ""
    prompt: str = ""
    dataset_name: str = ""
    dataset_explanation: str = ""
    profile: dict[str, Any] = field(default_factory=dict)
    provenance: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class TrainSpec:
    run_id: str
    program: ProgramSpec
    dataset: ds.DatasetSpec
    plan: PlanSpec
    resources: ResourceSpec = ResourceSpec()
    smoke_only: bool = False
    meta: ModelMeta = ModelMeta()
    job_id: str = ""


@dataclass(frozen=True)
class TrainerConfig:
    """The trainer's limits and defaults, built once from the settings."""

    dataset_roots: tuple[Path, ...]
    max_dataset_bytes: int = 48 * 1024 * 1024
    smoke_timeout_s: float = 120.0
    smoke_predict_rows: int = 8
    default_training_s: float = 1800.0
    max_training_s: float = 86400.0
    training_grace_s: float = 60.0
    eval_timeout_s: float = 600.0
    memory_bytes: int = 4 * 1024**3
    max_memory_bytes: int = 16 * 1024**3
    max_processes: int = 512
    disk_bytes: int = 2 * 1024**3
    output_bytes: int = 64 * 1024**2
    max_model_bytes: int = 1024**3
    gpus: int = 0
    seed: int = 42
    max_concurrent_runs: int = 2
    log_lines_per_s: float = 50.0
    log_burst: int = 200
    executor_margin_s: float = 30.0
    max_weights_header_bytes: int = MAX_HEADER_BYTES


# -- what a run reports -------------------------------------------------------------------------------


class Stage(Enum):
    STAGING = "staging"
    SMOKE_RUN = "smoke_run"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PUBLISHING = "publishing"


@dataclass(frozen=True)
class StageChanged:
    stage: Stage
    message: str


@dataclass(frozen=True)
class MetricsReported:
    record: MetricRecord
    smoke: bool


@dataclass(frozen=True)
class LogLine:
    source: str  # "program" | "platform"
    stream: str  # "stdout" | "stderr" | ""
    text: str
    truncated: bool = False


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    epoch: int
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ProgramFailed:
    stage: Stage
    error: StructuredError
    exit_reason: ExitReason
    exit_code: int
    repairable: bool


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    smoke_only: bool
    artifact_id: str = ""
    artifact_uri: str = ""
    weights_sha256: str = ""
    artifact_size_bytes: int = 0
    metric_name: str = ""
    held_out_metrics: dict[str, float] = field(default_factory=dict)
    claimed_metrics: dict[str, float] = field(default_factory=dict)
    baseline_name: str = ""
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    test_row_count: int = 0
    model_card_uri: str = ""
    usage: ExecUsage | None = None


@dataclass(frozen=True)
class RunSucceeded:
    outcome: TrainOutcome


TrainEvent = StageChanged | MetricsReported | LogLine | CheckpointSaved | ProgramFailed | RunSucceeded


@dataclass(frozen=True)
class Sequenced:
    """An event with its place in the stream (from 1, no gaps) and its time."""

    sequence: int
    time: datetime
    event: TrainEvent


# -- one sandboxed program run ------------------------------------------------------------------------


@dataclass
class ProgramRun:
    """What one execution of train.py or predict.py left behind."""

    result: ExecResult | None = None
    files: dict[str, ExecProducedFile] = field(default_factory=dict)
    stderr_tail: bytearray = field(default_factory=bytearray)
    error: ErrorRecord | None = None
    phase: str = ""
    final: FinalRecord | None = None
    model: ModelRecord | None = None
    curve: CurveSummary = field(default_factory=CurveSummary)
    invalid_records: int = 0
    dropped_lines: int = 0
    #: What ``_train_failure`` found in a valid model (set only when it returned None).
    weights: WeightsSummary | None = None
    model_config: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.succeeded

    def stderr_text(self) -> str:
        return bytes(self.stderr_tail).decode("utf-8", "replace")


@dataclass(frozen=True)
class _Done:
    run: ProgramRun


class _LineSplitter:
    """Chunks of one stream into lines; a line longer than MAX_LOG_LINE_BYTES is cut and flagged."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.skipping = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        self.buffer += data
        lines: list[tuple[bytes, bool]] = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LOG_LINE_BYTES:
                    if not self.skipping:
                        lines.append((bytes(self.buffer[:MAX_LOG_LINE_BYTES]), True))
                    self.skipping = True
                    self.buffer.clear()
                return lines
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if self.skipping:
                self.skipping = False
                continue
            if len(line) > MAX_LOG_LINE_BYTES:
                lines.append((line[:MAX_LOG_LINE_BYTES], True))
            else:
                lines.append((line, False))

    def flush(self) -> list[tuple[bytes, bool]]:
        rest, self.buffer = bytes(self.buffer), bytearray()
        if rest and not self.skipping:
            return [(rest[:MAX_LOG_LINE_BYTES], len(rest) > MAX_LOG_LINE_BYTES)]
        return []


class _TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# -- the trainer --------------------------------------------------------------------------------------


class Trainer:
    """Runs training programs through an :class:`Executor` and publishes to an :class:`ArtifactStore`."""

    def __init__(
        self,
        executor: Executor,
        store: ArtifactStore,
        config: TrainerConfig,
        *,
        dataset_files: ds.DatasetFiles | None = None,
    ) -> None:
        self.executor = executor
        self.store = store
        self.config = config
        #: Where split files come from: the crawler (zx-crawler:) and the operator's folders (file://).
        self.dataset_files = dataset_files or ds.DatasetFileRouter(
            ds.LocalDatasetFiles(list(config.dataset_roots))
        )
        self._active = 0

    async def train(self, spec: TrainSpec, *, deadline: float | None = None) -> AsyncIterator[Sequenced]:
        """Run ``spec`` and stream its events; ``deadline`` is a ``time.monotonic()`` instant."""
        if self._active >= self.config.max_concurrent_runs:
            raise ResourceExhausted(
                f"all {self.config.max_concurrent_runs} training slots are busy; try again later",
                reason="NO_TRAINING_SLOT",
            )
        self._active += 1
        try:
            async for event in _Run(self, spec, deadline).events():
                yield event
        finally:
            self._active -= 1


class _Run:
    """The state of one training run."""

    def __init__(self, trainer: Trainer, spec: TrainSpec, deadline: float | None) -> None:
        self.trainer = trainer
        self.config = trainer.config
        self.spec = spec
        self.deadline = deadline
        self.sequence = 0
        self.log = log.bind(run_id=spec.run_id)

    def _emit(self, event: TrainEvent) -> Sequenced:
        self.sequence += 1
        return Sequenced(self.sequence, datetime.now(UTC), event)

    def _platform(self, text: str) -> Sequenced:
        return self._emit(LogLine("platform", "", text))

    # -- checks ----------------------------------------------------------------------------------

    def _check_program(self) -> None:
        program = self.spec.program
        bad: list[FieldViolation] = []
        if program.runtime_version.strip() != str(ZXRT_VERSION):
            raise FailedPrecondition(
                f"the program was written against runtime helper version {program.runtime_version!r}; "
                f"this trainer provides version {ZXRT_VERSION}",
                reason="UNSUPPORTED_RUNTIME_VERSION",
            )
        for name, path in (
            ("program.train_entry_point", program.train_entry_point),
            ("program.predict_entry_point", program.predict_entry_point),
        ):
            if not path.endswith(".py"):
                bad.append(FieldViolation(name, "must name a .py file"))
            elif path not in program.paths:
                bad.append(FieldViolation(name, "must name one of the program's files"))
        for i, f in enumerate(program.files):
            if f.path == "zxrt.py" and f.content != zxrt_source():
                bad.append(FieldViolation(f"program.files[{i}].path", "zxrt.py is provided by the platform"))
            if f.path.split("/")[0] in (DATA_DIR, OUTPUT_DIR):
                bad.append(
                    FieldViolation(f"program.files[{i}].path", f"{DATA_DIR}/ and {OUTPUT_DIR}/ are reserved")
                )
        if bad:
            raise InvalidArgument("the program cannot be run", violations=bad, reason="BAD_PROGRAM")

    def _task(self, train_rows: list[dict[str, Any]]) -> ds.TaskSpec:
        plan = self.spec.plan
        kind = TASK_KINDS.get(plan.task_family)
        if kind is None:
            raise InvalidArgument(
                f"plan.task_family {plan.task_family!r} is not one the trainer evaluates",
                violations=[FieldViolation("plan.task_family", "unsupported")],
            )
        if train_rows and plan.target_column not in train_rows[0]:
            raise FailedPrecondition(
                f"the training split has no column {plan.target_column!r} (plan.target_column)",
                reason="TARGET_MISSING",
            )
        task = ds.TaskSpec(
            family=plan.task_family,
            kind=kind,
            target_column=plan.target_column,
            input_columns=tuple(plan.input_columns),
            metric_name=plan.metric_name,
        )
        if plan.target_column in task.input_columns:
            raise InvalidArgument(
                "plan.input_columns must not include the target column",
                violations=[FieldViolation("plan.input_columns", "contains the target column")],
            )
        return task

    def _device(self) -> tuple[str, int]:
        """("cpu", 0) or ("cuda", number of GPUs)."""
        res = self.spec.resources
        gpus = self.config.gpus
        if res.device == "cpu" or (res.device == "unspecified" and gpus == 0):
            return "cpu", 0
        if gpus == 0:
            raise FailedPrecondition("a GPU was asked for but this trainer has none", reason="NO_GPU")
        wanted = res.gpu_count or (1 if res.device == "gpu" else gpus)
        return "cuda", max(1, min(wanted, gpus))

    def _timeout(self, limit_s: float) -> float:
        """The executor call's timeout: the stage's limit plus margin, within the caller's deadline."""
        timeout = limit_s + self.config.executor_margin_s
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 1.0:
                raise DeadlineExceeded(
                    "the caller's deadline passed during the run", reason="DEADLINE_EXCEEDED"
                )
            timeout = min(timeout, left)
        return timeout

    # -- the stages ------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Sequenced]:
        spec, cfg = self.spec, self.config
        yield self._emit(StageChanged(Stage.STAGING, "checking the program and reading the dataset"))
        self._check_program()
        device, gpus = self._device()
        dataset = await ds.load_dataset(
            spec.dataset, self.trainer.dataset_files, max_bytes=cfg.max_dataset_bytes
        )
        train_rows, validation_rows, test_rows = await asyncio.to_thread(
            lambda: (dataset.rows("train"), dataset.rows("validation"), dataset.rows("test"))
        )
        if not train_rows or not test_rows:
            raise FailedPrecondition("the training and test splits must not be empty", reason="EMPTY_SPLIT")
        task = self._task(train_rows)
        columns = ds.input_columns(task, train_rows)
        test_targets = ds.targets(task, test_rows, "test")
        history = ds.targets(task, train_rows, "train")
        if task.kind is TaskKind.FORECASTING and validation_rows:
            history = history + ds.targets(task, validation_rows, "validation")
        ext = dataset.extension
        base_files = [
            *self.spec.program.files,
            *([] if "zxrt.py" in self.spec.program.paths else [ExecFile("zxrt.py", zxrt_source())]),
        ]
        data_files = [
            ExecFile(f"{DATA_DIR}/train.{ext}", dataset.train),
            ExecFile(f"{DATA_DIR}/validation.{ext}", dataset.validation),
            ExecFile(f"{DATA_DIR}/schema.json", spec.dataset.schema_json.encode("utf-8")),
        ]
        yield self._platform(
            f"staged {len(base_files)} program files and {len(train_rows)} train / {len(validation_rows)} "
            f"validation rows ({dataset.extension}); {len(test_rows)} test rows stay with the trainer"
        )

        # SMOKE_RUN: train.py for a few batches, then predict.py on a few validation inputs.
        launcher = "torchrun" if gpus > 1 else "python"
        yield self._emit(
            StageChanged(
                Stage.SMOKE_RUN,
                f"ZX_SMOKE=1 on {device}{f' x{gpus} ({launcher})' if gpus > 1 else ''}, "
                f"limit {cfg.smoke_timeout_s:.0f} s",
            )
        )
        smoke = ProgramRun()
        async for item in self._run_train(
            base_files + data_files, device, gpus, smoke=True, budget_s=cfg.smoke_timeout_s
        ):
            if isinstance(item, _Done):
                smoke = item.run
            else:
                yield item
        failure = await self._train_failure(smoke, Stage.SMOKE_RUN, "train.py (smoke run)", repairable=True)
        if failure is not None:
            yield self._emit(failure)
            return
        smoke_rows = validation_rows[: cfg.smoke_predict_rows] or train_rows[: cfg.smoke_predict_rows]
        model_files = self._model_files(smoke)
        predict_run = ProgramRun()
        async for item in self._run_predict(
            base_files, model_files, ds.inputs_jsonl(smoke_rows, columns), device, cfg.smoke_timeout_s
        ):
            if isinstance(item, _Done):
                predict_run = item.run
            else:
                yield item
        predictions, failure = await self._predictions(
            predict_run, len(smoke_rows), task, Stage.SMOKE_RUN, repairable=True
        )
        if failure is not None:
            yield self._emit(failure)
            return
        yield self._platform(
            f"smoke run passed: train.py saved a model and predict.py answered {len(predictions)} rows"
        )
        if spec.smoke_only:
            yield self._emit(
                RunSucceeded(
                    TrainOutcome(run_id=spec.run_id, smoke_only=True, claimed_metrics=_claimed(smoke))
                )
            )
            return

        # TRAINING: the full run.
        budget = min(spec.resources.training_s or cfg.default_training_s, cfg.max_training_s)
        yield self._emit(
            StageChanged(
                Stage.TRAINING,
                f"full run on {device}{f' x{gpus} ({launcher})' if gpus > 1 else ''}, time budget {budget:.0f} s",
            )
        )
        full = ProgramRun()
        async for item in self._run_train(
            base_files + data_files, device, gpus, smoke=False, budget_s=budget
        ):
            if isinstance(item, _Done):
                full = item.run
            else:
                yield item
        failure = await self._train_failure(full, Stage.TRAINING, "train.py", repairable=None)
        if failure is not None:
            yield self._emit(failure)
            return
        assert full.result is not None and full.weights is not None
        model_files = self._model_files(full)
        weights = full.weights  # checked (off the event loop) in _train_failure
        if (
            full.model is not None
            and full.model.sha256 != full.files[f"{OUTPUT_DIR}/model.safetensors"].sha256
        ):
            yield self._platform(
                "warning: the model record's sha256 differs from the saved file's; using the file"
            )

        # EVALUATING: predict.py on the test inputs only; the trainer scores the predictions.
        yield self._emit(
            StageChanged(
                Stage.EVALUATING,
                f"predict.py on {len(test_rows)} held-out rows; the trainer computes the metrics",
            )
        )
        eval_run = ProgramRun()
        async for item in self._run_predict(
            base_files, model_files, ds.inputs_jsonl(test_rows, columns), device, cfg.eval_timeout_s
        ):
            if isinstance(item, _Done):
                eval_run = item.run
            else:
                yield item
        predictions, failure = await self._predictions(
            eval_run, len(test_rows), task, Stage.EVALUATING, repairable=None
        )
        if failure is not None:
            yield self._emit(failure)
            return
        try:
            evaluation = evaluate(
                task.kind,
                test_targets=test_targets,
                predictions=[p for p, _ in predictions],
                train_targets=history,
                season=ds.season_length(dataset.schema),
            )
        except EvaluationError as exc:
            yield self._emit(
                ProgramFailed(
                    Stage.EVALUATING,
                    failure_error(f"the predictions cannot be scored: {exc}", phase="prediction"),
                    ExitReason.COMPLETED,
                    0,
                    True,
                )
            )
            return
        claimed = _claimed(full)
        primary = evaluation.primary_metric
        yield self._platform(
            f"held-out {primary} {evaluation.metrics[primary]:.4f} vs baseline {evaluation.baseline_name} "
            f"{evaluation.baseline_metrics[primary]:.4f}"
            + (f" (the program claimed {claimed[primary]:.4f})" if primary in claimed else "")
        )

        # PUBLISHING: all or nothing.
        yield self._emit(StageChanged(Stage.PUBLISHING, "storing weights, program, metrics and model card"))
        outcome = await self._publish(
            task=task,
            columns=columns,
            device=device if gpus <= 1 else f"{device} x{gpus}",
            base_files=base_files,
            model_files=model_files,
            weights=weights,
            full=full,
            evaluation=evaluation,
            claimed=claimed,
            split_rows={"train": len(train_rows), "validation": len(validation_rows), "test": len(test_rows)},
        )
        yield self._emit(RunSucceeded(outcome))

    # -- running programs ------------------------------------------------------------------------

    def _env(self, device: str, *, smoke: bool, budget_s: float | None) -> dict[str, str]:
        env = {
            "ZX_DATA": DATA_DIR,
            "ZX_OUTPUT": OUTPUT_DIR,
            "ZX_SMOKE": "1" if smoke else "0",
            "ZX_DEVICE": device,
            "ZX_SEED": str(_seed(self.spec.plan.hyperparameters, self.config.seed)),
        }
        if budget_s is not None:
            env["ZX_TIME_BUDGET_S"] = f"{budget_s:.0f}"
        if self.spec.resources.cpu_count:
            env["OMP_NUM_THREADS"] = str(self.spec.resources.cpu_count)
        return env

    def _limits(self, wall_s: float, device: str) -> ExecLimits:
        memory = min(
            self.spec.resources.memory_bytes or self.config.memory_bytes, self.config.max_memory_bytes
        )
        return ExecLimits(
            wall_s=wall_s,
            memory_bytes=memory,
            max_processes=self.config.max_processes,
            disk_bytes=self.config.disk_bytes,
            output_bytes=self.config.output_bytes,
            gpu=device == "cuda",
        )

    async def _run_train(
        self, files: list[ExecFile], device: str, gpus: int, *, smoke: bool, budget_s: float
    ) -> AsyncIterator[Any]:
        entry = self.spec.program.train_entry_point
        if gpus > 1:
            argv = (
                "python",
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={gpus}",
                entry,
            )
        else:
            argv = ("python", entry)
        wall = budget_s if smoke else budget_s + max(self.config.training_grace_s, 0.1 * budget_s)
        request = ExecRequest(
            files=tuple(files),
            argv=argv,
            env=self._env(device, smoke=smoke, budget_s=None if smoke else budget_s),
            limits=self._limits(wall, device),
            collect=(f"{OUTPUT_DIR}/*",),
            collect_max_bytes=self.config.max_model_bytes,
            job_id=self.spec.job_id,
        )
        async for item in self._execute(request, wall, smoke=smoke, default_phase=""):
            yield item

    async def _run_predict(
        self,
        base_files: list[ExecFile],
        model_files: dict[str, bytes],
        inputs: bytes,
        device: str,
        wall_s: float,
    ) -> AsyncIterator[Any]:
        files = [
            *base_files,
            *(ExecFile(path, data) for path, data in sorted(model_files.items())),
            ExecFile(f"{DATA_DIR}/schema.json", self.spec.dataset.schema_json.encode("utf-8")),
            ExecFile(f"{DATA_DIR}/inputs.jsonl", inputs),
        ]
        request = ExecRequest(
            files=tuple(files),
            argv=(
                "python",
                self.spec.program.predict_entry_point,
                f"{DATA_DIR}/inputs.jsonl",
                "predictions.jsonl",
            ),
            env=self._env(device, smoke=False, budget_s=None),
            limits=self._limits(wall_s, device),
            collect=("predictions.jsonl",),
            collect_max_bytes=MAX_PREDICTIONS_BYTES,
            job_id=self.spec.job_id,
        )
        async for item in self._execute(
            request, wall_s, smoke=False, default_phase="prediction", metrics=False
        ):
            yield item

    async def _execute(
        self, request: ExecRequest, wall_s: float, *, smoke: bool, default_phase: str, metrics: bool = True
    ) -> AsyncIterator[Any]:
        """Run one request; yield its events as they come, then a :class:`_Done` with the outcome."""
        run = ProgramRun(phase=default_phase)
        splitters = {"stdout": _LineSplitter(), "stderr": _LineSplitter()}
        bucket = _TokenBucket(self.config.log_lines_per_s, self.config.log_burst)
        warned_invalid = 0
        warned_nan = False
        last_epoch = 0

        def lines_of(stream: str, pieces: list[tuple[bytes, bool]]) -> list[Sequenced]:
            out = []
            for raw, truncated in pieces:
                if stream == "stdout" and raw.startswith(RECORD_PREFIX):
                    continue
                if bucket.take():
                    out.append(
                        self._emit(
                            LogLine("program", stream, raw.decode("utf-8", "replace").rstrip("\r"), truncated)
                        )
                    )
                else:
                    run.dropped_lines += 1
            return out

        async for event in self.trainer.executor.execute(request, timeout_s=self._timeout(wall_s)):
            if isinstance(event, ExecOutput):
                if event.stream == "stderr":
                    run.stderr_tail += event.data
                    del run.stderr_tail[:-STDERR_TAIL_BYTES]
                for item in lines_of(event.stream, splitters[event.stream].feed(event.data)):
                    yield item
            elif isinstance(event, ExecMetric):
                try:
                    record = parse_record(event.payload)
                except RecordError as exc:
                    run.invalid_records += 1
                    if warned_invalid < 3:
                        warned_invalid += 1
                        yield self._platform(
                            f"ignored a zxrt record that breaks the contract ({exc.reason}): {exc}"
                        )
                    continue
                if isinstance(record, MetricRecord):
                    if record.epoch is not None:
                        last_epoch = record.epoch
                    run.curve.add(record)
                    if record.loss is not None and math.isnan(record.loss) and not warned_nan:
                        warned_nan = True
                        yield self._platform(f"warning: the training loss is not finite (step {record.step})")
                    if metrics:
                        yield self._emit(MetricsReported(record, smoke))
                elif isinstance(record, CheckpointRecord):
                    yield self._emit(
                        CheckpointSaved(
                            record.step, last_epoch, record.path, record.sha256, record.size_bytes
                        )
                    )
                elif isinstance(record, LogRecord):
                    # Under the same bucket as stdout and stderr lines: the metric channel's own cap
                    # (200/s) would otherwise store ~17 M log events in a 24 h run.
                    if bucket.take():
                        yield self._emit(LogLine("program", "stdout", f"[{record.level}] {record.message}"))
                    else:
                        run.dropped_lines += 1
                elif isinstance(record, PhaseRecord):
                    run.phase = record.phase
                elif isinstance(record, ErrorRecord):
                    run.error = record
                elif isinstance(record, FinalRecord):
                    run.final = record
                elif isinstance(record, ModelRecord):
                    run.model = record
            elif isinstance(event, ExecProducedFile):
                run.files[event.path] = event
            elif isinstance(event, ExecResult):
                run.result = event
        for stream, splitter in splitters.items():
            for item in lines_of(stream, splitter.flush()):
                yield item
        if run.dropped_lines:
            yield self._platform(
                f"{run.dropped_lines} output lines and zxrt log records were not forwarded "
                f"(over {self.config.log_lines_per_s:.0f} lines/s)"
            )
        if run.invalid_records > warned_invalid:
            yield self._platform(
                f"{run.invalid_records} zxrt records in all broke the contract and were ignored"
            )
        if run.result is not None and run.result.dropped_metrics:
            yield self._platform(
                f"the executor dropped {run.result.dropped_metrics} metric lines (malformed or over its rate)"
            )
        if run.result is None:
            raise FailedPrecondition(
                "the executor ended the stream without a result", reason="EXECUTOR_PROTOCOL"
            )
        if run.result.reason is ExitReason.SANDBOX_ERROR:
            raise Unavailable(f"the sandbox failed: {run.result.message}", reason="SANDBOX_ERROR")
        if run.result.reason is ExitReason.NODE_LOST:
            # Nothing of the lost run is kept; the caller runs the job again from its start.
            raise Unavailable(run.result.message, reason="NODE_LOST")
        if run.result.reason is ExitReason.CANCELLED:
            # Our own cancellation arrives as CancelledError; this is the executor stopping the run.
            raise Unavailable(
                f"the executor cancelled the run: {run.result.message}", reason="EXECUTOR_CANCELLED"
            )
        yield _Done(run)

    # -- judging outcomes ------------------------------------------------------------------------

    def _program_failed(
        self, run: ProgramRun, stage: Stage, what: str, repairable: bool | None, phase: str
    ) -> ProgramFailed:
        assert run.result is not None
        result = run.result
        error = build_error(
            result=result,
            record=run.error,
            stderr_tail=run.stderr_text(),
            program_paths=self.spec.program.paths,
            phase=run.phase or phase,
            what=what,
        )
        exit_code = -1 if result.signal else result.exit_code
        # A missing module is the sandbox's fault, never the program's: not sent to repair.
        return ProgramFailed(stage, error, result.reason, exit_code, is_repairable(result, error, repairable))

    async def _train_failure(
        self, run: ProgramRun, stage: Stage, what: str, repairable: bool | None
    ) -> ProgramFailed | None:
        """None when train.py succeeded and left a valid model (then in ``run.weights`` and
        ``run.model_config``); else the failure to report."""
        assert run.result is not None
        if not run.ok:
            return self._program_failed(run, stage, what, repairable, "")
        fixable = True if repairable is None else repairable
        weights = run.files.get(f"{OUTPUT_DIR}/model.safetensors")
        config = run.files.get(f"{OUTPUT_DIR}/model_config.json")
        if weights is None or config is None:
            missing = " and ".join(
                name
                for name, f in (("model.safetensors", weights), ("model_config.json", config))
                if f is None
            )
            return self._saving_failure(
                stage,
                f"{what} exited 0 but left no {missing} in $ZX_OUTPUT: save the model with "
                "zxrt.save_model(model, config)",
                fixable,
            )
        for produced in (weights, config):
            if produced.content is None:
                return self._saving_failure(
                    stage,
                    f"{produced.path} is {produced.size_bytes} bytes, more than this trainer stores "
                    f"({self.config.max_model_bytes} bytes)",
                    stage is Stage.SMOKE_RUN,
                )
        # Both files are untrusted and up to max_model_bytes: checked in a thread, never on the loop.
        try:
            run.weights = await asyncio.to_thread(
                inspect_safetensors,
                weights.content or b"",
                max_header_bytes=self.config.max_weights_header_bytes,
            )
        except WeightsError as exc:
            return self._saving_failure(stage, f"model.safetensors is not valid safetensors: {exc}", fixable)
        try:
            run.model_config = await asyncio.to_thread(_model_config, config.content or b"")
        except ValueError as exc:
            return self._saving_failure(stage, f"model_config.json is not a JSON object: {exc}", fixable)
        return None

    def _saving_failure(self, stage: Stage, message: str, repairable: bool) -> ProgramFailed:
        return ProgramFailed(
            stage, failure_error(message, phase="saving"), ExitReason.COMPLETED, 0, repairable
        )

    def _model_files(self, run: ProgramRun) -> dict[str, bytes]:
        """The top-level files of ``output/`` with content (the model and what predict.py needs)."""
        return {
            path: produced.content
            for path, produced in run.files.items()
            if produced.content is not None and path.count("/") == 1 and path.startswith(f"{OUTPUT_DIR}/")
        }

    async def _predictions(
        self, run: ProgramRun, rows: int, task: ds.TaskSpec, stage: Stage, *, repairable: bool | None
    ) -> tuple[list[tuple[Any, dict[str, float]]], ProgramFailed | None]:
        assert run.result is not None
        if not run.ok:
            return [], self._program_failed(run, stage, "predict.py", repairable, "prediction")
        produced = run.files.get("predictions.jsonl")
        fixable = True if repairable is None else repairable
        if produced is None or produced.content is None:
            message = "predict.py exited 0 but wrote no predictions file (its second argument)"
            if produced is not None:
                message = (
                    f"predictions.jsonl is {produced.size_bytes} bytes, more than {MAX_PREDICTIONS_BYTES}"
                )
            return [], ProgramFailed(
                stage, failure_error(message, phase="prediction"), ExitReason.COMPLETED, 0, fixable
            )
        try:
            # Up to 64 MiB of a program's output: parsed in a thread.
            return await asyncio.to_thread(parse_predictions, produced.content, rows, task.kind), None
        except ValueError as exc:
            error = failure_error(f"predict.py wrote unusable predictions: {exc}", phase="prediction")
            return [], ProgramFailed(stage, error, ExitReason.COMPLETED, 0, fixable)

    # -- publishing ------------------------------------------------------------------------------

    async def _publish(
        self,
        *,
        task: ds.TaskSpec,
        columns: list[str],
        device: str,
        base_files: list[ExecFile],
        model_files: dict[str, bytes],
        weights: WeightsSummary,
        full: ProgramRun,
        evaluation: Evaluation,
        claimed: dict[str, float],
        split_rows: dict[str, int],
    ) -> TrainOutcome:
        spec = self.spec
        assert full.result is not None
        weights_sha = full.files[f"{OUTPUT_DIR}/model.safetensors"].sha256
        created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        metric_name = (
            task.metric_name if task.metric_name in evaluation.metrics else evaluation.primary_metric
        )
        metrics_doc = {
            "run_id": spec.run_id,
            "task_family": task.family,
            "metric_name": metric_name,
            "test_rows": evaluation.rows,
            "held_out": evaluation.metrics,
            "baseline": {"name": evaluation.baseline_name, "metrics": evaluation.baseline_metrics},
            "claimed": claimed,
            "beats_baseline": evaluation.beats_baseline,
            "training": {
                "wall_s": round(full.result.usage.wall_s, 3),
                "last_step": full.curve.last_step,
                "last_epoch": full.curve.last_epoch,
                "first_loss": full.curve.first_loss,
                "last_loss": full.curve.last_loss,
                "min_loss": full.curve.min_loss,
            },
        }
        card = render(
            CardInput(
                run_id=spec.run_id,
                title=spec.meta.title or f"{task.family.replace('_', ' ').capitalize()} model",
                prompt=spec.meta.prompt,
                task_family=task.family,
                target_column=task.target_column,
                input_columns=columns,
                metric_name=metric_name,
                dataset_name=spec.meta.dataset_name,
                dataset_id=spec.dataset.dataset_id,
                dataset_explanation=spec.meta.dataset_explanation,
                profile=spec.meta.profile,
                provenance=list(spec.meta.provenance),
                split_rows=split_rows,
                model_family=spec.plan.model_family or "PyTorch",
                hyperparameters=spec.plan.hyperparameters,
                rationale=spec.plan.rationale,
                model_config=full.model_config or {},
                weights=weights,
                weights_sha256=weights_sha,
                curve=full.curve,
                evaluation=evaluation,
                claimed_metrics=claimed,
                device=device,
                training_wall_s=full.result.usage.wall_s,
                created_time=created,
            )
        )
        files: dict[str, bytes] = {f.path: f.content for f in base_files}
        files.update(model_files)
        files[f"{DATA_DIR}/schema.json"] = spec.dataset.schema_json.encode("utf-8")
        files["metrics.json"] = (
            json.dumps(metrics_doc, indent=2, sort_keys=True, default=_json_default) + "\n"
        ).encode()
        files["MODEL_CARD.md"] = card.encode("utf-8")
        metadata = {
            "run_id": spec.run_id,
            "job_id": spec.job_id,
            "dataset_id": spec.dataset.dataset_id,
            "task_family": task.family,
            "target_column": task.target_column,
            "input_columns": json.dumps(columns),
            "metric_name": metric_name,
            "weights_sha256": weights_sha,
            "zxrt_version": str(ZXRT_VERSION),
            "train_entry_point": spec.program.train_entry_point,
            "predict_entry_point": spec.program.predict_entry_point,
        }
        manifest = await self.trainer.store.publish(files, metadata)
        self.log.info("published", artifact_id=manifest.artifact_id, bytes=manifest.total_bytes)
        return TrainOutcome(
            run_id=spec.run_id,
            smoke_only=False,
            artifact_id=manifest.artifact_id,
            artifact_uri=self.trainer.store.uri(manifest.artifact_id),
            weights_sha256=weights_sha,
            artifact_size_bytes=manifest.total_bytes,
            metric_name=metric_name,
            held_out_metrics=evaluation.metrics,
            claimed_metrics=claimed,
            baseline_name=evaluation.baseline_name,
            baseline_metrics=evaluation.baseline_metrics,
            test_row_count=evaluation.rows,
            model_card_uri=self.trainer.store.file_uri(manifest, "MODEL_CARD.md"),
            usage=full.result.usage,
        )


# -- helpers ------------------------------------------------------------------------------------------


def _claimed(run: ProgramRun) -> dict[str, float]:
    """What the program said about itself: its final report, else its last validation metrics."""
    source = run.final.metrics if run.final is not None and run.final.metrics else run.curve.last_val
    return {k: v for k, v in source.items() if not math.isnan(v)}


def _model_config(data: bytes) -> dict[str, Any]:
    """``model_config.json`` as a JSON object; ValueError (never anything else) when it is not one."""
    if len(data) > MAX_MODEL_CONFIG_BYTES:
        raise ValueError(f"it is {len(data)} bytes, more than {MAX_MODEL_CONFIG_BYTES}")
    too_deep = ValueError(f"it nests deeper than {MAX_MODEL_CONFIG_DEPTH} levels")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise too_deep from None
    if nests_deeper(value, MAX_MODEL_CONFIG_DEPTH):
        raise too_deep
    if not isinstance(value, dict):
        raise ValueError("it is not a JSON object")
    return value


def _seed(hyperparameters: dict[str, Any], default: int) -> int:
    value = hyperparameters.get("seed")
    if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        return int(value) % 2**31
    return default


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
