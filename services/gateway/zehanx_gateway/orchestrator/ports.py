"""The services a job runs through, and the registry it reads, as ports: the pipeline takes them through
its constructor.

The messages are the contracts' own (``zehanx.*.v1``): the orchestrator's job is to carry them from one
service to the next. The gRPC adapters are in :mod:`.clients`; tests may pass in-process fakes.
Every method raises :class:`~zehanx_runtime.errors.DomainError` subclasses (UNAVAILABLE when the service
cannot be reached), never grpc errors.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from zehanx.codegen.v1 import codegen_service_pb2 as codegen_pb
from zehanx.crawler.v1 import crawler_service_pb2 as crawler_pb
from zehanx.trainer.v1 import trainer_service_pb2 as trainer_pb

from zehanx_gateway.domain import Job, JobEvent

#: The job owner's own provider keys (metadata name -> key) for the calls made by the job being run:
#: set by the pipeline in the job's task, read by the adapters (``zehanx_gateway.clients.pipeline``),
#: so each call carries only its own job owner's keys.
caller_keys: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "zx_caller_keys", default=None
)


class DatasetBuilder(Protocol):
    """``CrawlerService``: ``BuildDataset`` (progress messages, then the dataset) and ``PutSourceFile`` (a
    user's uploaded file streamed to the crawler before a build that names it by ``upload_id``)."""

    def build_dataset(
        self, request: crawler_pb.BuildDatasetRequest, *, timeout_s: float
    ) -> AsyncIterator[crawler_pb.BuildDatasetResponse]: ...

    async def put_source_file(
        self, upload_id: str, path: Path, *, job_id: str, timeout_s: float
    ) -> crawler_pb.PutSourceFileResponse: ...


class ProgramWriter(Protocol):
    """``CodegenService``: plan, write, repair."""

    async def plan_task(
        self, request: codegen_pb.PlanTaskRequest, *, timeout_s: float
    ) -> codegen_pb.PlanTaskResponse: ...

    async def generate_program(
        self, request: codegen_pb.GenerateProgramRequest, *, timeout_s: float
    ) -> codegen_pb.GenerateProgramResponse: ...

    async def repair_program(
        self, request: codegen_pb.RepairProgramRequest, *, timeout_s: float
    ) -> codegen_pb.RepairProgramResponse: ...


class Trainer(Protocol):
    """``TrainerService``: ``Train`` (the run's messages; cancelling the iteration stops the sandbox) and
    ``ReadArtifact`` (a stored model as one zip: a header, then chunks)."""

    def train(
        self, request: trainer_pb.TrainRequest, *, timeout_s: float
    ) -> AsyncIterator[trainer_pb.TrainResponse]: ...

    def read_artifact(
        self, artifact_id: str, *, timeout_s: float
    ) -> AsyncIterator[trainer_pb.ReadArtifactResponse]: ...


class Registry(Protocol):
    """What the orchestrator reads from the job registry and how its workers hold their leases (the
    Postgres registry in ``zehanx_gateway.store``); state changes and events go through ``JobService``."""

    async def get_job(self, job_id: uuid.UUID, *, user_id: uuid.UUID | None) -> Job: ...

    async def list_events(
        self, job_id: uuid.UUID, *, after_sequence: int, limit: int, user_id: uuid.UUID | None = None
    ) -> list[JobEvent]: ...

    async def claim_next(self, owner: str, lease: timedelta) -> tuple[Job, JobEvent] | None: ...

    async def renew_lease(self, job_id: uuid.UUID, owner: str, attempt: int, lease: timedelta) -> Job: ...

    async def recover_expired(self, *, max_attempts: int) -> list[tuple[Job, JobEvent]]: ...
