"""A training run: staging, smoke run, full run, held-out evaluation, publishing.

This is the trainer's domain: no grpc. The servicer turns a ``TrainRequest`` into a :class:`TrainSpec`,
iterates :meth:`Trainer.train` and turns each :class:`Sequenced` event into a ``TrainResponse``. The
values are in ``domain.py``, the reading of a program's output in ``program_output.py``, the storing of
the model in ``publishing.py``; :meth:`_Run.events` below is the run itself, read top to bottom.

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
from contextlib import aclosing
from datetime import UTC, datetime
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

from zehanx_trainer import datasets as ds
from zehanx_trainer.artifacts import ArtifactStore
from zehanx_trainer.domain import (
    DATA_DIR,
    OUTPUT_DIR,
    TASK_KINDS,
    LogLine,
    ProgramFailed,
    RunSucceeded,
    Sequenced,
    Stage,
    StageChanged,
    TrainerConfig,
    TrainEvent,
    TrainOutcome,
    TrainSpec,
)
from zehanx_trainer.evaluation import EvaluationError, TaskKind, evaluate, nests_deeper, parse_predictions
from zehanx_trainer.executor_port import ExecFile, ExecLimits, ExecRequest, Executor, ExitReason
from zehanx_trainer.failures import build_error, failure_error, is_repairable
from zehanx_trainer.program_output import ProgramRun, read_output
from zehanx_trainer.publishing import Trained, publish
from zehanx_trainer.runtime_helper import ZXRT_VERSION, zxrt_source
from zehanx_trainer.weights import WeightsError, inspect_safetensors

log = get_logger("zehanx.trainer")

MAX_PREDICTIONS_BYTES = 64 * 1024 * 1024
#: ``output/model_config.json``: sizes, class names, a vocabulary; the model card quotes it.
MAX_MODEL_CONFIG_BYTES = 4 * 1024 * 1024
MAX_MODEL_CONFIG_DEPTH = 64


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
        async for event in self._run_train(
            smoke, base_files + data_files, device, gpus, smoke=True, budget_s=cfg.smoke_timeout_s
        ):
            yield event
        failure = await self._train_failure(smoke, Stage.SMOKE_RUN, "train.py (smoke run)", repairable=True)
        if failure is not None:
            yield self._emit(failure)
            return
        smoke_rows = validation_rows[: cfg.smoke_predict_rows] or train_rows[: cfg.smoke_predict_rows]
        model_files = self._model_files(smoke)
        predict_run = ProgramRun()
        async for event in self._run_predict(
            predict_run,
            base_files,
            model_files,
            ds.inputs_jsonl(smoke_rows, columns),
            device,
            cfg.smoke_timeout_s,
        ):
            yield event
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
        async for event in self._run_train(
            full, base_files + data_files, device, gpus, smoke=False, budget_s=budget
        ):
            yield event
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
        async for event in self._run_predict(
            eval_run, base_files, model_files, ds.inputs_jsonl(test_rows, columns), device, cfg.eval_timeout_s
        ):
            yield event
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
        trained = Trained(
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
        yield self._emit(RunSucceeded(await publish(self.trainer.store, spec, trained, self.log)))

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
        self, run: ProgramRun, files: list[ExecFile], device: str, gpus: int, *, smoke: bool, budget_s: float
    ) -> AsyncIterator[Sequenced]:
        """Run train.py; its events as they come, and ``run`` filled with what it left behind."""
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
        async with aclosing(self._execute(run, request, wall, smoke=smoke)) as events:
            async for event in events:
                yield event

    async def _run_predict(
        self,
        run: ProgramRun,
        base_files: list[ExecFile],
        model_files: dict[str, bytes],
        inputs: bytes,
        device: str,
        wall_s: float,
    ) -> AsyncIterator[Sequenced]:
        """Run predict.py on ``inputs``; its events, and ``run`` filled (``predictions.jsonl``)."""
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
        run.phase = "prediction"
        async with aclosing(self._execute(run, request, wall_s, smoke=False, metrics=False)) as events:
            async for event in events:
                yield event

    async def _execute(
        self, run: ProgramRun, request: ExecRequest, wall_s: float, *, smoke: bool, metrics: bool = True
    ) -> AsyncIterator[Sequenced]:
        """Run one request and yield its events in order; an executor-side failure raises.

        Closing this generator (the caller cancelled) closes the executor's stream at once, which kills
        the sandbox; nothing waits for the garbage collector to do it.
        """
        cfg = self.config
        async with (
            aclosing(self.trainer.executor.execute(request, timeout_s=self._timeout(wall_s))) as stream,
            aclosing(
                read_output(
                    stream,
                    run,
                    smoke=smoke,
                    metrics=metrics,
                    lines_per_s=cfg.log_lines_per_s,
                    burst=cfg.log_burst,
                )
            ) as output,
        ):
            async for event in output:
                yield self._emit(event)
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
