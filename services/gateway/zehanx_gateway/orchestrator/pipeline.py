"""One job, stage by stage: crawl → generate → train (smoke run, repairs, full run, evaluation) → publish.

Every stage change is a compare-and-set transition fenced by the worker's lease (owner, attempt), and
so is every event (``PendingEvent.lease``: the registry refuses it with ABORTED once the lease is lost),
so a worker that lost its lease can write neither a state nor an event any more. Everything that
happens becomes an event.

Resuming: the events a stage ends with carry, under the payload key ``zx_resume`` (which the public
API does not show: stored JSON is read back ignoring unknown fields), what the next stages need: the
dataset (``dataset_built``), the program (``program_generated``) and the training result
(``evaluation_result``). A job taken over after its worker died reads its own history and goes on
after the last completed stage instead of starting again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message
from zehanx.codegen.v1 import codegen_service_pb2 as codegen_pb
from zehanx.common.v1 import (
    dataset_pb2,
    log_pb2,
    plan_pb2,
    program_pb2,
    resources_pb2,
    structured_error_pb2,
    task_family_pb2,
)
from zehanx.crawler.v1 import crawler_service_pb2 as crawler_pb
from zehanx.crawler.v1 import dataset_pb2 as crawler_dataset_pb2
from zehanx.gateway.v1 import job_event_pb2, job_pb2, model_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as trainer_pb
from zehanx_runtime import errors, provider_keys, tracing
from zehanx_runtime.logging import get_logger

from zehanx_gateway import convert, metrics
from zehanx_gateway.artifacts import ArtifactStore
from zehanx_gateway.domain import Job, JobError, JobEvent, JobStage, JobState, Model, PendingEvent, Provider
from zehanx_gateway.jobs import JobService
from zehanx_gateway.models import ModelService
from zehanx_gateway.orchestrator.archive import receive_archive
from zehanx_gateway.orchestrator.ports import DatasetBuilder, ProgramWriter, Registry, Trainer, caller_keys
from zehanx_gateway.orchestrator.settings import OrchestratorSettings

if TYPE_CHECKING:
    from zehanx_gateway.provider_keys import ProviderKeyService
    from zehanx_gateway.uploads import UploadService

log = get_logger("zehanx.gateway.orchestrator")

RESUME_KEY = "zx_resume"
#: Where each of a user's provider keys goes: the metadata name the service that uses it reads.
_KEY_METADATA = {
    Provider.GROQ: provider_keys.GROQ_KEY,
    Provider.FIRECRAWL: provider_keys.FIRECRAWL_KEY,
    Provider.E2B: provider_keys.E2B_KEY,
}
DEFAULT_MAX_REPAIRS = 3
#: Time allowed to receive a model's archive from the trainer at publishing.
READ_ARTIFACT_TIMEOUT_S = 600.0
#: Time allowed to send one uploaded file to the crawler.
PUT_SOURCE_TIMEOUT_S = 600.0
_LOG_TEXT_MAX = 16 * 1024
#: The trainer's reason when the node (Ray node or worker) running the sandbox died mid-run.
NODE_LOST = "NODE_LOST"
#: How the platform log line that marks a training run started again after a lost node begins (the
#: dashboard starts a new run in its chart there; a program's own lines are LOG_SOURCE_PROGRAM).
NODE_LOST_MARK = "node lost:"
_TRAIN_STAGE_NAMES = {
    trainer_pb.TRAIN_STAGE_STAGING: "staging",
    trainer_pb.TRAIN_STAGE_SMOKE_RUN: "smoke run",
    trainer_pb.TRAIN_STAGE_TRAINING: "training",
    trainer_pb.TRAIN_STAGE_EVALUATING: "held-out evaluation",
    trainer_pb.TRAIN_STAGE_PUBLISHING: "storing the model",
}
T = TypeVar("T")


class StopRun(Exception):
    """The run must stop without writing anything more (its lease is lost, or the gateway stops)."""


class JobFailed(Exception):
    """A stage failed in a way that ends the job: FAILED with this error."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class Checkpoint:
    """What earlier attempts of the job completed (read from its events)."""

    dataset: crawler_dataset_pb2.Dataset | None = None
    plan: plan_pb2.Plan | None = None
    program: program_pb2.Program | None = None
    program_attempt: int = 0
    train_result: trainer_pb.TrainResult | None = None
    model_id: uuid.UUID | None = None


@dataclass
class RunControl:
    """Set by the worker: why the running task is being cancelled, and whether it may be now."""

    stop_reason: str | None = None
    #: While publishing, a user's cancellation waits: the model is stored whole and the job SUCCEEDS.
    publishing: bool = False
    cancel_deferred: bool = False
    task: asyncio.Task[Any] | None = field(default=None, repr=False)

    def request_cancel(self) -> None:
        if self.stop_reason is not None:
            return
        if self.publishing:
            self.cancel_deferred = True
            return
        self.stop_reason = "cancel"
        if self.task is not None:
            self.task.cancel()

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.task is not None:
            self.task.cancel()


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _parse(payload: Any, message: T) -> T:
    json_format.ParseDict(payload, message, ignore_unknown_fields=True)  # type: ignore[arg-type]
    return message


def _error_text(error: structured_error_pb2.StructuredError) -> str:
    head = f"{error.exception_type}: {error.message}" if error.exception_type else error.message
    where = f" ({error.file_path}:{error.line})" if error.file_path else ""
    return f"{head}{where}"


def break_program(program: program_pb2.Program, note: str) -> program_pb2.Program:
    """A copy of ``program`` whose train.py raises at start (the test_break_programs setting)."""
    broken = program_pb2.Program()
    broken.CopyFrom(program)
    for item in broken.files:
        if item.path == broken.train_entry_point:
            line = f"raise RuntimeError({note!r})  # injected by ZX_GATEWAY_TEST_BREAK_PROGRAMS\n"
            item.content = line.encode() + item.content
    return broken


class Pipeline:
    """Runs jobs through the services. One instance serves every worker of a gateway."""

    def __init__(
        self,
        *,
        jobs: JobService,
        models: ModelService,
        artifacts: ArtifactStore,
        registry: Registry,
        crawler: DatasetBuilder,
        codegen: ProgramWriter,
        trainer: Trainer,
        settings: OrchestratorSettings,
        spool_dir: Path | None = None,
        uploads: UploadService | None = None,
        provider_keys: ProviderKeyService | None = None,
    ) -> None:
        self._jobs = jobs
        self._models = models
        self._artifacts = artifacts
        self._registry = registry
        self._crawler = crawler
        self._codegen = codegen
        self._trainer = trainer
        self._settings = settings
        self._spool_dir = spool_dir
        self._uploads = uploads
        self._provider_keys = provider_keys

    def run(self, job: Job, control: RunControl) -> Awaitable[None]:
        return _JobRun(self, job, control).run()


class _JobRun:
    def __init__(self, pipeline: Pipeline, job: Job, control: RunControl) -> None:
        self.p = pipeline
        self.s = pipeline._settings
        self.job = job
        self.control = control
        assert job.lease_owner is not None
        self.lease = (job.lease_owner, job.attempt)
        self.spec = _parse(dict(job.spec), job_pb2.Job())
        self.options = self.spec.options
        self.max_repairs = (
            self.options.max_repair_attempts
            if self.options.HasField("max_repair_attempts")
            else DEFAULT_MAX_REPAIRS
        )
        self.repairs = job.repair_count
        self.log = log.bind(job_id=str(job.id), attempt=job.attempt)
        #: The stage this run is in and when it entered it (for the stage-duration histogram).
        self._stage_clock: tuple[JobStage, float] | None = None

    # -- the run ------------------------------------------------------------------------------------

    async def run(self) -> None:
        # One span for this attempt, in the trace the job's CreateJob started (a worker of another
        # gateway, or after a restart, continues the same trace); every stage and call goes under it.
        with tracing.span(
            "job",
            parent=self.job.trace_parent or None,
            **{"zx.job.id": str(self.job.id), "zx.job.attempt": self.job.attempt},
        ) as job_span:
            trace_id = tracing.trace_id_of(job_span)
            if trace_id:
                self.log = self.log.bind(trace_id=trace_id)
            await self._run()

    async def _run(self) -> None:
        try:
            await self._stages()
        except asyncio.CancelledError:
            reason = self.control.stop_reason
            if reason == "cancel":
                await self._end_cancelled()
                return
            raise
        except StopRun:
            raise
        except JobFailed as failed:
            await self._end_failed(failed.error)
        except errors.DomainError as exc:
            await self._end_failed(JobError(exc.code, exc.message, exc.reason))
        except Exception as exc:  # the job ends with a reason, never in limbo
            self.log.exception("orchestration failed")
            await self._end_failed(
                JobError("INTERNAL", f"the gateway failed to run the job: {exc!r}", "ORCHESTRATION_FAILED")
            )
        finally:
            self._stage_done()

    async def _stages(self) -> None:
        if self.p._provider_keys is not None:
            # The owner's own keys go with this job's calls (this task's context only), each to the
            # one service that uses it; without stored keys the services use their configured ones.
            opened = await self.p._provider_keys.keys_for(self.job.user_id)
            caller_keys.set({_KEY_METADATA[p]: key for p, key in opened.items()})
        done = await self._checkpoint()
        if done.model_id is not None:  # published by an attempt that died before its last transition
            await self._succeed(done.model_id)
            return
        if done.dataset is None:
            with tracing.span("crawl"):
                dataset = await self._crawl()
        else:
            dataset = done.dataset
            await self._platform_log(
                f"resuming attempt {self.job.attempt}: dataset {dataset.id} was built by an earlier attempt"
            )
        if done.program is None or done.plan is None:
            with tracing.span("generate"):
                plan, program, version = await self._generate(dataset)
        else:
            plan, program, version = done.plan, done.program, done.program_attempt
        result = done.train_result
        if result is None:
            with tracing.span("train"):
                result = await self._train(dataset, plan, program, version)
        with tracing.span("publish"):
            await self._publish(dataset, plan, result)

    # -- stages -------------------------------------------------------------------------------------

    async def _crawl(self) -> crawler_dataset_pb2.Dataset:
        await self._move(JobStage.CRAWLING, "building the dataset")
        request = crawler_pb.BuildDatasetRequest(
            prompt=self.job.prompt, sources=await self._crawler_sources(), job_id=str(self.job.id)
        )
        if self.options.HasField("dataset"):
            request.options.CopyFrom(self.options.dataset)

        async def attempt() -> crawler_dataset_pb2.Dataset:
            dataset = None
            async for message in self.p._crawler.build_dataset(
                request, timeout_s=self.s.crawl_timeout_seconds
            ):
                kind = message.WhichOneof("event")
                if kind == "progress":
                    progress = message.progress
                    text = progress.message or crawler_pb.DatasetBuildPhase.Name(progress.phase)
                    await self._emit(
                        "stage_progress",
                        job_event_pb2.StageProgress(
                            message=text, bytes_done=progress.bytes_done, rows_done=progress.rows_done
                        ),
                    )
                elif kind == "dataset":
                    dataset = message.dataset
            if dataset is None:
                raise errors.Internal(
                    "the crawler ended its stream without a dataset", reason="CRAWLER_NO_DATASET"
                )
            return dataset

        dataset = await self._retrying("crawler", attempt)
        built = job_event_pb2.DatasetBuilt(
            dataset_id=dataset.id,
            name=dataset.name,
            task_family=dataset.task_family,
            target_column=dataset.target_column,
            explanation=dataset.explanation,
            profile=dataset.profile,
            provenance=dataset.provenance,
            train_row_count=dataset.train_row_count,
            validation_row_count=dataset.validation_row_count,
            test_row_count=dataset.test_row_count,
            warnings=dataset.warnings,
            preview_rows=dataset.preview_rows,
        )
        await self._emit("dataset_built", built, resume={"dataset": _json(dataset)})
        return dataset

    async def _crawler_sources(self) -> list[dataset_pb2.DataSource]:
        """The job's sources as the crawler reads them: each upload sent to the crawler first (the
        crawler names it to the user as "upload <id> (<file name>)")."""
        sources = []
        for index, source in enumerate(self.spec.sources):
            kind = source.WhichOneof("source")
            if kind == "upload_id" or (kind == "local_path" and self.p._uploads is not None):
                if self.p._uploads is None:
                    raise JobFailed(
                        JobError("FAILED_PRECONDITION", "this gateway keeps no uploads", "UPLOADS_DISABLED")
                    )
                if kind == "upload_id":
                    # The caller's own upload only; its bytes go to the crawler, never its path.
                    path = await self.p._uploads.resolve(self.job.user_id, source.upload_id)
                    send = functools.partial(
                        self.p._crawler.put_source_file,
                        source.upload_id,
                        path,
                        job_id=str(self.job.id),
                        timeout_s=PUT_SOURCE_TIMEOUT_S,
                    )
                    await self._retrying("crawler", send)
                    sources.append(dataset_pb2.DataSource(upload_id=source.upload_id))
                    continue
                if self.p._uploads.inside_root(source.local_path):
                    raise JobFailed(
                        JobError(
                            "INVALID_ARGUMENT",
                            f"sources[{index}].local_path is inside the upload folder: name uploads by upload_id",
                            "LOCAL_PATH_IN_UPLOADS",
                        )
                    )
            sources.append(source)
        return sources

    async def _generate(
        self, dataset: crawler_dataset_pb2.Dataset
    ) -> tuple[plan_pb2.Plan, program_pb2.Program, int]:
        await self._move(
            JobStage.GENERATING, "planning and writing the training program", dataset_id=dataset.id
        )
        timeout = self.s.codegen_timeout_seconds
        planned = await self._retrying(
            "codegen",
            lambda: self.p._codegen.plan_task(
                codegen_pb.PlanTaskRequest(
                    prompt=self.job.prompt,
                    profile=dataset.profile,
                    schema_json=dataset.ref.schema_json,
                    target_column_hint=dataset.target_column,
                    task_hint=dataset.task_family,
                    job_id=str(self.job.id),
                ),
                timeout_s=timeout,
            ),
        )
        plan = plan_pb2.Plan()
        plan.CopyFrom(planned.plan)
        for key, value in self.options.hyperparameters.items():  # the user's overrides win
            plan.hyperparameters[key].CopyFrom(value)
        written = await self._retrying(
            "codegen",
            lambda: self.p._codegen.generate_program(
                codegen_pb.GenerateProgramRequest(
                    prompt=self.job.prompt,
                    plan=plan,
                    profile=dataset.profile,
                    schema_json=dataset.ref.schema_json,
                    job_id=str(self.job.id),
                ),
                timeout_s=timeout,
            ),
        )
        program = self._maybe_break(written.program, 1)
        await self._program_event(1, plan, program, written.backend, "")
        return plan, program, 1

    async def _train(
        self,
        dataset: crawler_dataset_pb2.Dataset,
        plan: plan_pb2.Plan,
        program: program_pb2.Program,
        version: int,
    ) -> trainer_pb.TrainResult:
        while True:
            await self._move(JobStage.TRAINING, f"smoke run, then the full run (program version {version})")
            outcome = await self._train_on_a_node(dataset, plan, program, version)
            if isinstance(outcome, trainer_pb.TrainResult):
                await self._emit(
                    "evaluation_result",
                    job_event_pb2.EvaluationResult(
                        metric_name=outcome.metric_name,
                        metric_goal=plan.metric_goal,
                        held_out_metrics=outcome.held_out_metrics,
                        claimed_metrics=outcome.claimed_metrics,
                        baseline_name=outcome.baseline_name,
                        baseline_metrics=outcome.baseline_metrics,
                        test_row_count=outcome.test_row_count,
                    ),
                    resume={"train_result": _json(outcome), "plan": _json(plan)},
                )
                metrics.EVALUATIONS.labels(
                    str(_beats(plan.metric_goal, outcome.metric_name, outcome)).lower()
                ).inc()
                return outcome
            failure = outcome
            stage = _TRAIN_STAGE_NAMES.get(failure.stage, "training")
            text = _error_text(failure.error)
            await self._platform_log(
                f"{stage} failed (program version {version}): {text}\n{failure.error.traceback_tail}".rstrip()
            )
            smoke = failure.stage == trainer_pb.TRAIN_STAGE_SMOKE_RUN
            if failure.environment:  # the sandbox's configuration, not the program: no repair, own reason
                raise JobFailed(
                    JobError(
                        "FAILED_PRECONDITION", f"the {stage} could not run: {text}", "SANDBOX_ENVIRONMENT"
                    )
                )
            if not (failure.repairable and smoke):
                raise JobFailed(
                    JobError("FAILED_PRECONDITION", f"the {stage} failed: {text}", "PROGRAM_FAILED")
                )
            if self.repairs >= self.max_repairs:
                raise JobFailed(
                    JobError(
                        "FAILED_PRECONDITION",
                        f"the smoke run still fails after {self.repairs} repair(s): {text}",
                        "REPAIRS_EXHAUSTED",
                    )
                )
            self.repairs += 1
            metrics.REPAIRS.inc()
            await self._move(
                JobStage.GENERATING,
                f"smoke run failed: {text[:300]}; repairing (attempt {self.repairs} of {self.max_repairs})",
                repair_count=self.repairs,
            )
            repair_request = codegen_pb.RepairProgramRequest(
                program=program,
                plan=plan,
                error=failure.error,
                attempt=self.repairs,
                profile=dataset.profile,
                schema_json=dataset.ref.schema_json,
                job_id=str(self.job.id),
            )
            repaired = await self._retrying(
                "codegen",
                functools.partial(
                    self.p._codegen.repair_program, repair_request, timeout_s=self.s.codegen_timeout_seconds
                ),
            )
            version += 1
            program = self._maybe_break(repaired.program, version)
            await self._program_event(version, plan, program, repaired.backend, repaired.change_summary)

    async def _train_on_a_node(
        self,
        dataset: crawler_dataset_pb2.Dataset,
        plan: plan_pb2.Plan,
        program: program_pb2.Program,
        version: int,
    ) -> trainer_pb.TrainResult | trainer_pb.ProgramFailure:
        """One Train call (again while the trainer is unreachable); when the node running it is lost
        (NODE_LOST), the run starts again from its start, up to node_lost_retries times.

        The lost run's events stay in the job's history (nothing is taken back, nothing is written
        twice: each event is numbered once by the registry); one platform line between the two runs
        says the node was lost and which run starts, so a reader (and the dashboard's chart) can tell
        the runs apart instead of seeing their steps spliced into one curve.
        """
        losses = 0
        while True:
            try:
                return await self._retrying(
                    "trainer", functools.partial(self._train_once, dataset, plan, program, version)
                )
            except errors.Unavailable as exc:
                if exc.reason != NODE_LOST:
                    raise
                losses += 1
                runs = self.s.node_lost_retries + 1
                if losses > self.s.node_lost_retries:
                    raise JobFailed(
                        JobError(
                            "UNAVAILABLE",
                            f"the training run's node was lost {losses} time(s) "
                            f"(ZX_GATEWAY_NODE_LOST_RETRIES={self.s.node_lost_retries}): {exc.message}",
                            NODE_LOST,
                        )
                    ) from None
                self.log.warning("node lost; training again", run=losses + 1, error=exc.message[:300])
                await self._platform_log(
                    f"{NODE_LOST_MARK} {exc.message} The training run starts again from its start on "
                    f"another node (run {losses + 1} of at most {runs}, program version {version}); the "
                    f"metrics that follow are the new run's."
                )
                await self._emit(
                    "stage_progress",
                    job_event_pb2.StageProgress(
                        message=f"training again after a lost node (run {losses + 1} of at most {runs})",
                        program_attempt=version,
                    ),
                )

    async def _train_once(
        self,
        dataset: crawler_dataset_pb2.Dataset,
        plan: plan_pb2.Plan,
        program: program_pb2.Program,
        version: int,
    ) -> trainer_pb.TrainResult | trainer_pb.ProgramFailure:
        resources = resources_pb2.Resources()
        if self.options.HasField("resources"):
            resources.CopyFrom(self.options.resources)
        if not resources.HasField("max_training_duration"):
            resources.max_training_duration.CopyFrom(
                duration_pb2.Duration(seconds=int(self.s.default_training_seconds))
            )
        budget = resources.max_training_duration.ToTimedelta().total_seconds()
        request = trainer_pb.TrainRequest(
            run_id=str(uuid.uuid4()),
            job_id=str(self.job.id),
            program=program,
            dataset=dataset.ref,
            plan=plan,
            resources=resources,
            model_metadata=trainer_pb.ModelMetadata(
                title=_title(self.job.prompt),
                prompt=self.job.prompt[:4000],
                dataset_name=dataset.name[:256],
                dataset_explanation=dataset.explanation[:8192],
                dataset_profile=dataset.profile,
                provenance=list(dataset.provenance)[:100],
            ),
        )
        async for message in self.p._trainer.train(
            request, timeout_s=budget + self.s.training_margin_seconds
        ):
            kind = message.WhichOneof("event")
            if kind == "metrics":
                await self._emit("training_metrics", message.metrics)
            elif kind == "log_line":
                await self._emit("log_line", message.log_line)
            elif kind == "stage_change":
                change = message.stage_change
                name = _TRAIN_STAGE_NAMES.get(change.stage, "training")
                await self._emit(
                    "stage_progress",
                    job_event_pb2.StageProgress(
                        message=f"{name}: {change.message}" if change.message else name,
                        program_attempt=version,
                    ),
                )
                if change.stage == trainer_pb.TRAIN_STAGE_EVALUATING:
                    await self._move(JobStage.EVALUATING, "evaluating the model on the held-out split")
            elif kind == "checkpoint":
                point = message.checkpoint
                await self._platform_log(
                    f"checkpoint saved at step {point.step} (epoch {point.epoch}): {point.path}"
                )
            elif kind == "program_failure":
                return message.program_failure
            elif kind == "result":
                return message.result
        raise errors.Unavailable(
            "the trainer ended the run without a result (did it restart?)", reason="TRAINER_STREAM_ENDED"
        )

    async def _publish(
        self, dataset: crawler_dataset_pb2.Dataset, plan: plan_pb2.Plan, result: trainer_pb.TrainResult
    ) -> None:
        await self._move(JobStage.PUBLISHING, "storing the model and writing its record")
        self.control.publishing = True
        try:
            if self.control.stop_reason is not None:
                raise asyncio.CancelledError
            existing = await self.p._models.of_job(self.job.user_id, self.job.id)  # a rerun publishes once
            model = existing or await self._store_model(dataset, plan, result)
            await self._emit(
                "model_published",
                job_event_pb2.ModelPublished(
                    model_id=str(model.id),
                    archive_sha256=model.archive_sha256,
                    archive_size_bytes=model.archive_size,
                ),
            )
            await self._succeed(model.id)
        finally:
            self.control.publishing = False

    async def _store_model(
        self, dataset: crawler_dataset_pb2.Dataset, plan: plan_pb2.Plan, result: trainer_pb.TrainResult
    ) -> Model:
        archive = await receive_archive(
            result.artifact_id,
            self.p._trainer.read_artifact(result.artifact_id, timeout_s=READ_ARTIFACT_TIMEOUT_S),
            spool_dir=self.p._spool_dir,
        )
        try:
            info = await self.p._artifacts.put(archive.chunks())
        finally:
            archive.close()
        if info.sha256 != archive.sha256:
            raise errors.Internal("the archive changed while it was stored", reason="ARCHIVE_CHANGED")
        record = model_pb2.Model(
            job_id=str(self.job.id),
            title=_title(self.job.prompt),
            prompt=self.job.prompt,
            task_family=plan.task_family,
            plan=plan,
            class_labels=_class_labels(dataset),
            metric_name=result.metric_name or plan.metric_name,
            held_out_metrics=result.held_out_metrics,
            claimed_metrics=result.claimed_metrics,
            baseline_name=result.baseline_name,
            baseline_metrics=result.baseline_metrics,
            dataset_id=dataset.id,
            provenance=dataset.provenance,
            archive_sha256=info.sha256,
            archive_size_bytes=info.size,
            weights_sha256=result.weights_sha256,
            model_card=archive.model_card,
        )
        return await self.p._models.publish(
            self.job.user_id, convert.new_model(record, trainer_artifact_id=result.artifact_id)
        )

    # -- endings --------------------------------------------------------------------------------------

    async def _succeed(self, model_id: uuid.UUID) -> None:
        await self.p._jobs.transition(
            self.job.id,
            JobState.SUCCEEDED,
            from_states=[JobState.RUNNING, JobState.CANCELLING],
            lease=self.lease,
            model_id=model_id,
            reason=f"model {model_id} published",
        )

    async def _end_failed(self, error: JobError) -> None:
        self.log.info("job failed", reason=error.reason, message=error.message[:500])
        tracing.mark_error(f"{error.reason}: {error.message[:200]}")  # the job's span shows the failure
        try:
            await self.p._jobs.transition(
                self.job.id,
                JobState.FAILED,
                from_states=[JobState.RUNNING],
                lease=self.lease,
                error=error,
                reason=error.message[:2000],
            )
        except errors.Aborted:
            job = await self.p._registry.get_job(self.job.id, user_id=None)
            if job.state is JobState.CANCELLING and job.lease_owner == self.lease[0]:
                await self._end_cancelled()
                return
            raise StopRun(f"job {self.job.id} is no longer ours ({job.state})") from None

    async def _end_cancelled(self) -> None:
        job = await self.p._registry.get_job(self.job.id, user_id=None)
        error = job.error or JobError("CANCELLED", "cancelled by the user", "CANCELLED_BY_USER")
        await self.p._jobs.transition(
            self.job.id,
            JobState.CANCELLED,
            from_states=[JobState.CANCELLING],
            lease=self.lease,
            error=error,
            reason="the running stage stopped",
        )

    # -- helpers ----------------------------------------------------------------------------------------

    async def _checkpoint(self) -> Checkpoint:
        done = Checkpoint()
        if self.job.attempt <= 1:  # a first attempt has nothing to resume
            return done
        after = 0
        while True:
            page: list[JobEvent] = await self.p._registry.list_events(
                self.job.id, after_sequence=after, limit=500
            )
            for event in page:
                resume = event.payload.get(RESUME_KEY) if isinstance(event.payload, dict) else None
                if event.kind == "model_published":
                    done.model_id = uuid.UUID(str(event.payload.get("model_id")))
                if not resume:
                    continue
                if event.kind == "dataset_built" and "dataset" in resume:
                    done.dataset = _parse(resume["dataset"], crawler_dataset_pb2.Dataset())
                    done.plan = done.program = done.train_result = None
                elif event.kind == "program_generated" and "program" in resume:
                    done.program = _parse(resume["program"], program_pb2.Program())
                    done.plan = _parse(resume["plan"], plan_pb2.Plan())
                    done.program_attempt = int(resume.get("program_attempt", 1))
                    done.train_result = None
                elif event.kind == "evaluation_result" and "train_result" in resume:
                    done.train_result = _parse(resume["train_result"], trainer_pb.TrainResult())
            if len(page) < 500:
                break
            after = page[-1].sequence
        return done

    def _maybe_break(self, program: program_pb2.Program, version: int) -> program_pb2.Program:
        if version <= self.s.test_break_programs:
            return break_program(program, f"zehanx test: program version {version} broken on purpose")
        return program

    async def _program_event(
        self, version: int, plan: plan_pb2.Plan, program: program_pb2.Program, backend: str, summary: str
    ) -> None:
        await self._emit(
            "program_generated",
            job_event_pb2.ProgramGenerated(
                program_attempt=version,
                plan=plan,
                file_paths=[f.path for f in program.files],
                change_summary=summary,
                backend=backend,
            ),
            resume={"program": _json(program), "plan": _json(plan), "program_attempt": version},
        )

    def _stage_done(self, next_stage: JobStage | None = None) -> None:
        """Observe how long the run spent in its current stage, and start timing ``next_stage``."""
        now = time.monotonic()
        if self._stage_clock is not None and self._stage_clock[0] != next_stage:
            stage, since = self._stage_clock
            metrics.STAGE_SECONDS.labels(stage.value.lower()).observe(now - since)
        if next_stage is None:
            self._stage_clock = None
        elif self._stage_clock is None or self._stage_clock[0] != next_stage:
            self._stage_clock = (next_stage, now)

    async def _move(self, stage: JobStage, reason: str, **fields: Any) -> None:
        """RUNNING at ``stage`` (a no-op when already there), fenced by the lease."""
        self._stage_done(stage)
        try:
            self.job = await self.p._jobs.transition(
                self.job.id,
                JobState.RUNNING,
                from_states=[JobState.RUNNING],
                stage=stage,
                lease=self.lease,
                reason=reason,
                **fields,
            )
        except errors.Aborted:
            job = await self.p._registry.get_job(self.job.id, user_id=None)
            if (
                job.state is JobState.CANCELLING
                and job.lease_owner == self.lease[0]
                and job.attempt == self.lease[1]
            ):
                self.control.stop_reason = self.control.stop_reason or "cancel"
                raise asyncio.CancelledError from None
            raise StopRun(
                f"job {self.job.id} is no longer ours ({job.state}, attempt {job.attempt})"
            ) from None

    async def _emit(self, kind: str, message: Message, *, resume: dict[str, Any] | None = None) -> None:
        event = job_event_pb2.JobEvent()
        getattr(event, kind).CopyFrom(message)
        pending = convert.pending_event(self.job.id, event)
        pending = PendingEvent(
            job_id=pending.job_id,
            kind=pending.kind,
            payload={**pending.payload, RESUME_KEY: resume} if resume is not None else pending.payload,
            event_time=pending.event_time,
            lease=self.lease,  # fenced: once another worker holds the job, this one writes nothing more
        )
        try:
            await self.p._jobs.publish([pending])
        except (errors.FailedPrecondition, errors.Aborted) as exc:
            # The job ended meanwhile (cancelled at QUEUED, ...), or its lease went to another worker.
            raise StopRun(str(exc)) from None

    async def _platform_log(self, text: str) -> None:
        await self._emit(
            "log_line",
            log_pb2.LogLine(
                source=log_pb2.LOG_SOURCE_PLATFORM,
                text=text[:_LOG_TEXT_MAX],
                truncated=len(text) > _LOG_TEXT_MAX,
            ),
        )

    async def _retrying(self, service: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again while ``service`` is unreachable or busy, for up to service_retry_seconds."""
        deadline = time.monotonic() + self.s.service_retry_seconds
        delay = 1.0
        while True:
            try:
                return await call()
            except (errors.Unavailable, errors.ResourceExhausted) as exc:
                if exc.reason == NODE_LOST:  # not "unreachable": the run is gone (see _train_on_a_node)
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise JobFailed(
                        JobError(
                            "UNAVAILABLE",
                            f"gave up after {self.s.service_retry_seconds:.0f}s: {exc.message}",
                            "SERVICE_UNAVAILABLE",
                        )
                    ) from None
                wait = min(delay, left)
                await self._platform_log(f"{exc.message}; trying again in {wait:.0f}s")
                await asyncio.sleep(wait)
                delay = min(delay * 2, 10.0)


def _title(prompt: str) -> str:
    text = " ".join(prompt.split())
    return (text[:1].upper() + text[1:])[:120] or "Model"


def _class_labels(dataset: crawler_dataset_pb2.Dataset) -> list[str]:
    try:
        schema = json.loads(dataset.ref.schema_json or "{}")
    except ValueError:
        schema = {}
    classes = schema.get("classes") if isinstance(schema, dict) else None
    if isinstance(classes, list) and classes:
        return [str(c) for c in classes][:10000]
    return sorted(c.label for c in dataset.profile.classes)


def _beats(goal: int, metric: str, result: trainer_pb.TrainResult) -> bool:
    """Whether the held-out figure is better than the baseline's, in the metric's direction."""
    model = result.held_out_metrics.values.get(metric)
    baseline = result.baseline_metrics.values.get(metric)
    if model is None or baseline is None:
        return False
    return model < baseline if goal == task_family_pb2.METRIC_GOAL_MINIMIZE else model > baseline
