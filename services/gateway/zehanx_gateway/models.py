"""Models: list, get, download, delete, predict (each only for the model's owner), and publish.

Archives are read through the :class:`~zehanx_gateway.artifacts.ArtifactStore` port. Predict checks
the model is the caller's, then forwards to the trainer through the :class:`Predictor` port (the
trainer runs the model's ``predict.py`` in the sandbox, resident between calls); the gateway never runs
model code itself. A stream of chunks (:meth:`ModelService.predict_stream`) is one trainer Predict per
chunk, a few at once, answered in order. Deleting a model ends its resident predictor at the trainer,
best effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zehanx_runtime import errors
from zehanx_runtime.logging import get_logger

from zehanx_gateway import metrics, paging
from zehanx_gateway.artifacts import ArtifactStore
from zehanx_gateway.domain import (
    DataLoss,
    InstancesJsonl,
    Model,
    NewModel,
    OutOfRange,
    Page,
    PredictResult,
    Principal,
)

DEFAULT_CHUNK = 1024 * 1024
#: Longest DeleteModel waits for the trainer to end the model's predictor; the deletion goes on
#: either way (the trainer's idle timeout ends a predictor nobody calls).
RELEASE_TIMEOUT_S = 5.0

_log = get_logger(__name__)


class ModelStore(Protocol):
    async def create_model(self, user_id: uuid.UUID, new: NewModel) -> Model: ...

    async def get_model(self, model_id: uuid.UUID, *, user_id: uuid.UUID) -> Model: ...

    async def list_models(
        self,
        user_id: uuid.UUID,
        *,
        page_size: int,
        page_token: str,
        task_family: str | None = None,
        job_id: uuid.UUID | None = None,
    ) -> Page[Model]: ...

    async def delete_model(
        self, model_id: uuid.UUID, *, user_id: uuid.UUID, on_unreferenced: Callable[[str], Awaitable[None]]
    ) -> Model: ...


class Predictor(Protocol):
    """Runs a stored model on instances (the trainer's ``Predict``)."""

    async def predict(
        self,
        artifact_id: str,
        instances: Sequence[Any] | InstancesJsonl,
        *,
        job_id: uuid.UUID | None,
        timeout_s: float,
    ) -> PredictResult: ...

    async def release(self, artifact_id: str, *, timeout_s: float) -> bool:
        """End the model's resident predictor; whether one was running."""
        ...


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """The answer to one chunk of a prediction stream: where its first instance stands in the stream."""

    offset: int
    result: PredictResult


@dataclass(frozen=True, slots=True)
class Download:
    """A download about to stream: the model, the archive's size, and its chunks from ``offset``."""

    model: Model
    filename: str
    total_size: int
    offset: int
    chunks: AsyncIterator[bytes]


class ModelService:
    def __init__(
        self,
        store: ModelStore,
        artifacts: ArtifactStore,
        predictor: Predictor | None = None,
        *,
        predict_timeout_s: float = 120.0,
        max_concurrent_predicts: int | None = None,
        stream_in_flight: int = 2,
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._predictor = predictor
        self._predict_timeout_s = predict_timeout_s
        self._max_predicts = max_concurrent_predicts
        self._stream_in_flight = stream_in_flight
        #: Predicts running now, per user (on this replica).
        self._predicting: dict[uuid.UUID, int] = {}

    async def list(
        self,
        principal: Principal,
        *,
        page_size: int,
        page_token: str,
        task_family: str | None = None,
        job_id: uuid.UUID | None = None,
    ) -> Page[Model]:
        return await self._store.list_models(
            principal.user_id,
            page_size=paging.page_size(page_size),
            page_token=page_token,
            task_family=task_family,
            job_id=job_id,
        )

    async def get(self, principal: Principal, model_id: uuid.UUID) -> Model:
        return await self._store.get_model(model_id, user_id=principal.user_id)

    async def download(
        self, principal: Principal, model_id: uuid.UUID, *, offset: int = 0, chunk_size: int = 0
    ) -> Download:
        model = await self._store.get_model(model_id, user_id=principal.user_id)
        size = await self._artifacts.size(model.archive_sha256)
        if size != model.archive_size:
            raise DataLoss(
                f"the stored archive of model {model_id} has {size} bytes, its record says {model.archive_size}",
                reason="ARCHIVE_CORRUPTED",
            )
        if offset > size:
            raise OutOfRange(
                f"offset {offset} is beyond the archive's {size} bytes", reason="OFFSET_BEYOND_END"
            )
        chunks = self._artifacts.read(
            model.archive_sha256, offset=offset, chunk_size=chunk_size or DEFAULT_CHUNK
        )
        return Download(
            model=model, filename=archive_filename(model), total_size=size, offset=offset, chunks=chunks
        )

    async def delete(self, principal: Principal, model_id: uuid.UUID) -> Model:
        """Delete the record and, when no other model shares it, the archive; then end the model's
        resident predictor at the trainer (best effort: a trainer that is down or slow is logged and
        the deletion stands; its idle timeout ends the predictor anyway)."""
        model = await self._store.delete_model(
            model_id, user_id=principal.user_id, on_unreferenced=self._delete_archive
        )
        if model.trainer_artifact_id and self._predictor is not None:
            try:
                released = await self._predictor.release(
                    model.trainer_artifact_id, timeout_s=RELEASE_TIMEOUT_S
                )
            except (errors.DomainError, TimeoutError) as exc:
                _log.warning(
                    "predictor_release_failed",
                    model_id=str(model_id),
                    artifact_id=model.trainer_artifact_id,
                    error=str(exc),
                )
            else:
                _log.info(
                    "predictor_released",
                    model_id=str(model_id),
                    artifact_id=model.trainer_artifact_id,
                    was_running=released,
                )
        return model

    async def predict(
        self,
        principal: Principal,
        model_id: uuid.UUID,
        instances: Sequence[Any] | InstancesJsonl,
        *,
        timeout_s: float | None = None,
    ) -> PredictResult:
        """Run the caller's model on ``instances`` through the trainer; one prediction per instance.

        Each user may have ``max_concurrent_predicts`` running at once (RESOURCE_EXHAUSTED beyond):
        every Predict holds one of the executor's few sandbox slots for up to the timeout, and they are
        shared with everyone's training runs."""
        with self._slots(principal.user_id, 1):
            model = await self._runnable(principal, model_id)
            return await self._call(model, instances, self._budget(timeout_s))

    async def predict_stream(
        self,
        principal: Principal,
        model_id: uuid.UUID,
        chunks: AsyncIterator[Sequence[Any]],
        *,
        timeout_s: float | None = None,
    ) -> AsyncIterator[ChunkResult]:
        """Run the caller's model on each chunk of ``chunks`` (one trainer Predict each) and yield the
        answers in the chunks' order.

        The stream takes its slots from the same per-user limit as :meth:`predict`: as many as are free,
        up to ``stream_in_flight`` (RESOURCE_EXHAUSTED when none is), held until it ends; that many
        chunks run at once, and at most one more is read ahead until an answer is sent. The first failure (a
        chunk the trainer refuses, or an error raised by ``chunks`` itself) ends the stream after the
        answers of the chunks before it."""
        with self._slots(principal.user_id, self._stream_in_flight) as slots:
            model = await self._runnable(principal, model_id)
            budget = self._budget(timeout_s)
            free = asyncio.Semaphore(slots)
            # In stream order: (offset, running call) per chunk, an exception, or None at the end.
            order: asyncio.Queue[tuple[int, asyncio.Task[PredictResult]] | BaseException | None] = (
                asyncio.Queue()
            )

            async def read() -> None:
                offset = 0
                try:
                    async for instances in chunks:
                        await free.acquire()
                        call = asyncio.create_task(self._call(model, instances, budget))
                        order.put_nowait((offset, call))
                        offset += len(instances)
                except Exception as exc:  # the chunk's error goes out in its place, in order
                    order.put_nowait(exc)
                else:
                    order.put_nowait(None)

            reader = asyncio.create_task(read())
            try:
                while (item := await order.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    offset, call = item
                    result = await call
                    yield ChunkResult(offset, result)
                    free.release()
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                while not order.empty():
                    left = order.get_nowait()
                    if isinstance(left, tuple):
                        left[1].cancel()
                        with contextlib.suppress(BaseException):
                            await left[1]

    @contextlib.contextmanager
    def _slots(self, user_id: uuid.UUID, want: int) -> Iterator[int]:
        """Take up to ``want`` of the user's prediction slots (at least one, else RESOURCE_EXHAUSTED).

        Each user may have ``max_concurrent_predicts`` trainer calls running at once: every Predict holds
        one of the trainer's few predictors (or sandbox slots) for up to the timeout, and they are
        shared with everyone's training runs."""
        running = self._predicting.get(user_id, 0)
        free = want if self._max_predicts is None else min(want, self._max_predicts - running)
        if free < 1:
            metrics.RATE_LIMITED.labels("predict").inc()
            raise errors.ResourceExhausted(
                f"you already have {running} predictions running (the limit is {self._max_predicts} at "
                "once, ZX_GATEWAY_MAX_CONCURRENT_PREDICTS_PER_USER); wait for one to finish",
                reason="TOO_MANY_PREDICTS",
                metadata={"limit": str(self._max_predicts), "running": str(running)},
            )
        self._predicting[user_id] = running + free  # no await since the check: the two are atomic
        try:
            yield free
        finally:
            left = self._predicting[user_id] - free
            if left:
                self._predicting[user_id] = left
            else:
                del self._predicting[user_id]

    def _budget(self, timeout_s: float | None) -> float:
        return self._predict_timeout_s if timeout_s is None else min(timeout_s, self._predict_timeout_s)

    async def _runnable(self, principal: Principal, model_id: uuid.UUID) -> Model:
        model = await self._store.get_model(model_id, user_id=principal.user_id)
        if not model.trainer_artifact_id:
            raise errors.FailedPrecondition(
                f"model {model_id} was recorded without the trainer's artifact id, so it cannot run; "
                "download it and run its predict.py yourself",
                reason="MODEL_NOT_RUNNABLE",
            )
        if self._predictor is None:
            raise errors.Unavailable(
                "this gateway has no trainer to run models", reason="TRAINER_UNAVAILABLE"
            )
        return model

    async def _call(
        self, model: Model, instances: Sequence[Any] | InstancesJsonl, budget: float
    ) -> PredictResult:
        if self._predictor is None or not model.trainer_artifact_id:  # _runnable checked both
            raise errors.Internal(f"model {model.id} cannot run here", reason="MODEL_NOT_RUNNABLE")
        result = await self._predictor.predict(
            model.trainer_artifact_id, instances, job_id=model.job_id, timeout_s=budget
        )
        if result.count != len(instances):
            raise errors.Internal(
                f"the trainer returned {result.count} predictions for {len(instances)} instances",
                reason="PREDICTION_COUNT_MISMATCH",
            )
        return result

    async def of_job(self, user_id: uuid.UUID, job_id: uuid.UUID) -> Model | None:
        """The model a job published, if it did (for the orchestrator: a rerun publishes once)."""
        page = await self._store.list_models(user_id, page_size=1, page_token="", job_id=job_id)
        return page.items[0] if page.items else None

    async def publish(self, user_id: uuid.UUID, new: NewModel) -> Model:
        """Record a model whose archive is already in the artifact store (for the orchestrator)."""
        size = await self._artifacts.size(new.archive_sha256)
        if size != new.archive_size:
            raise errors.FailedPrecondition(
                f"the archive {new.archive_sha256} has {size} bytes, not {new.archive_size}",
                reason="ARCHIVE_SIZE_MISMATCH",
            )
        return await self._store.create_model(user_id, new)

    async def _delete_archive(self, sha256: str) -> None:
        await self._artifacts.delete(sha256)


def archive_filename(model: Model) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.title.lower()).strip("-")[:60] or "model"
    extension = {"application/zip": ".zip", "application/gzip": ".tar.gz"}.get(model.media_type, "")
    return f"{slug}-{model.id}{extension}"
