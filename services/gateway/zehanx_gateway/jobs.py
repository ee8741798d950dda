"""Jobs: what a caller may do with their jobs, and what the orchestrator does to them.

Every public method takes the calling :class:`Principal`; another user's job is NOT_FOUND. Every
transition goes through the registry's compare-and-set and its event is handed to the hub at once, so
live watchers see it without waiting for a notification.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from zehanx_runtime import errors, tracing

from zehanx_gateway import paging
from zehanx_gateway.domain import (
    Job,
    JobError,
    JobEvent,
    JobStage,
    JobState,
    NewJob,
    Page,
    PendingEvent,
    Principal,
)
from zehanx_gateway.fanout import EventHub

DEFAULT_EVENT_PAGE = 200
_UNSET = object()


class JobStore(Protocol):
    async def create_job(
        self,
        user_id: uuid.UUID,
        new: NewJob,
        *,
        max_active: int | None = None,
        max_per_minute: int | None = None,
        max_per_day: int | None = None,
    ) -> tuple[Job, bool]: ...

    async def get_job(self, job_id: uuid.UUID, *, user_id: uuid.UUID | None) -> Job: ...

    async def list_jobs(
        self, user_id: uuid.UUID, *, states: Iterable[JobState] = (), page_size: int, page_token: str
    ) -> Page[Job]: ...

    async def transition(
        self, job_id: uuid.UUID, to_state: JobState, **guards: object
    ) -> tuple[Job, JobEvent | None]: ...

    async def list_events(
        self, job_id: uuid.UUID, *, after_sequence: int, limit: int, user_id: uuid.UUID | None = None
    ) -> list[JobEvent]: ...


#: Checks a new job's sources (JSON form) for the caller; raises INVALID_ARGUMENT naming bad ones.
SourceCheck = Callable[[Principal, Sequence[Mapping[str, Any]]], Awaitable[None]]


class JobService:
    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        *,
        max_active_jobs: int | None = None,
        max_jobs_per_minute: int | None = None,
        max_jobs_per_day: int | None = None,
        max_memory_bytes: int | None = None,
        source_check: SourceCheck | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._max_active = max_active_jobs
        self._max_per_minute = max_jobs_per_minute
        self._max_per_day = max_jobs_per_day
        self._max_memory = max_memory_bytes
        self._source_check = source_check

    # -- the public API ---------------------------------------------------------------------------

    async def create(self, principal: Principal, new: NewJob) -> Job:
        """Create a QUEUED job. RESOURCE_EXHAUSTED beyond the caller's unfinished-job limit or creation
        rate (checked and charged by the store under one lock); INVALID_ARGUMENT for a memory request
        above the per-job cap (the trainer would only lower it, and eight such runs at once would
        overcommit the executor's host)."""
        self._check_memory(new)
        if self._source_check is not None:
            await self._source_check(principal, list(new.spec.get("sources") or []))
        if not new.trace_parent:  # the job's trace continues from this CreateJob call's span
            new = dataclasses.replace(new, trace_parent=tracing.traceparent())
        job, _created = await self._store.create_job(
            principal.user_id,
            new,
            max_active=self._max_active,
            max_per_minute=self._max_per_minute,
            max_per_day=self._max_per_day,
        )
        return job

    def _check_memory(self, new: NewJob) -> None:
        if self._max_memory is None:
            return
        resources = (new.spec.get("options") or {}).get("resources") or {}
        asked = int(resources.get("max_memory_bytes") or 0)  # int64 is a string in the JSON form
        if asked > self._max_memory:
            field = "job.options.resources.max_memory_bytes"
            raise errors.InvalidArgument(
                f"{field} asks for {asked} bytes; a job may ask for at most {self._max_memory} "
                "(ZX_GATEWAY_MAX_JOB_MEMORY_BYTES)",
                violations=[
                    errors.FieldViolation(
                        field, f"must be at most {self._max_memory}", "JOB_MEMORY_ABOVE_CAP"
                    )
                ],
                reason="JOB_MEMORY_ABOVE_CAP",
            )

    async def get(self, principal: Principal, job_id: uuid.UUID) -> Job:
        return await self._store.get_job(job_id, user_id=principal.user_id)

    async def list(
        self, principal: Principal, *, states: Iterable[JobState], page_size: int, page_token: str
    ) -> Page[Job]:
        return await self._store.list_jobs(
            principal.user_id, states=states, page_size=paging.page_size(page_size), page_token=page_token
        )

    async def cancel(self, principal: Principal, job_id: uuid.UUID, reason: str = "") -> Job:
        """QUEUED: CANCELLED at once. RUNNING: CANCELLING (its worker stops the stage and confirms).
        CANCELLING or CANCELLED: unchanged. SUCCEEDED or FAILED: FAILED_PRECONDITION."""
        message = f"cancelled by the user: {reason}" if reason else "cancelled by the user"
        for _ in range(8):
            job = await self._store.get_job(job_id, user_id=principal.user_id)
            if job.state in (JobState.CANCELLING, JobState.CANCELLED):
                return job
            if job.state in (JobState.SUCCEEDED, JobState.FAILED):
                raise errors.FailedPrecondition(
                    f"job {job_id} already ended {job.state.value}; there is nothing to cancel",
                    reason="JOB_FINISHED",
                    metadata={"state": job.state.value},
                )
            to_state = JobState.CANCELLED if job.state is JobState.QUEUED else JobState.CANCELLING
            try:
                job, event = await self._store.transition(
                    job_id,
                    to_state,
                    from_states=[job.state],
                    expected_version=job.version,
                    error=JobError("CANCELLED", message, "CANCELLED_BY_USER"),
                    reason=message,
                    user_id=principal.user_id,
                )
            except errors.Aborted:
                continue  # it moved on meanwhile (a worker took it up): decide again
            self._notify(event)
            return job
        raise errors.Aborted(f"job {job_id} keeps changing; try again", reason="TRANSITION_CONFLICT")

    async def watch(
        self, principal: Principal, job_id: uuid.UUID, after_sequence: int
    ) -> AsyncIterator[Job | JobEvent]:
        """The job's snapshot, then each event after ``after_sequence`` exactly once, in order, until
        the event that makes it terminal."""
        # Subscribe before reading the snapshot: an event committed in between is then either in the
        # snapshot's history (read from the store) or offered live, never lost.
        subscription = self._hub.subscribe(job_id, after_sequence)
        try:
            job = await self._store.get_job(job_id, user_id=principal.user_id)
            if after_sequence > job.last_sequence:
                raise errors.InvalidArgument(
                    f"after_sequence {after_sequence} is beyond the job's last event ({job.last_sequence})",
                    violations=[
                        errors.FieldViolation(
                            "after_sequence", f"must be <= {job.last_sequence}", "after_sequence.beyond_last"
                        )
                    ],
                )
            yield job
            if job.terminal and after_sequence >= job.last_sequence:
                return
            async for event in subscription.events():
                yield event
        finally:
            subscription.close()

    async def list_events(
        self, principal: Principal, job_id: uuid.UUID, *, after_sequence: int, page_size: int, page_token: str
    ) -> Page[JobEvent]:
        job = await self._store.get_job(job_id, user_id=principal.user_id)
        size = paging.page_size(page_size, default=DEFAULT_EVENT_PAGE)
        fp = paging.fingerprint("events", str(job.id), after_sequence)
        position = paging.decode(page_token, "events", fp)
        start = after_sequence
        if position is not None:
            try:
                start = int(position["s"])
            except (KeyError, TypeError, ValueError):
                raise paging.bad_token("page_token is damaged") from None
        events = await self._store.list_events(
            job_id, after_sequence=start, limit=size + 1, user_id=principal.user_id
        )
        return paging.page_of(events, size, "events", fp, lambda last: {"s": last.sequence})

    # -- for the orchestrator and tests ---------------------------------------------------------------

    async def transition(
        self,
        job_id: uuid.UUID,
        to_state: JobState,
        *,
        from_states: Iterable[JobState] | None = None,
        stage: JobStage | object | None = _UNSET,
        error: JobError | None = None,
        reason: str = "",
        lease: tuple[str, int] | None = None,
        **more: object,
    ) -> Job:
        """Move a job (compare-and-set; see PostgresJobStore.transition) and fan the event out."""
        guards: dict[str, object] = dict(more)
        if stage is not _UNSET:
            guards["stage"] = stage
        job, event = await self._store.transition(
            job_id, to_state, from_states=from_states, error=error, reason=reason, lease=lease, **guards
        )
        self._notify(event)
        return job

    async def publish(self, events: Sequence[PendingEvent]) -> list[JobEvent]:
        """Persist events (batched with other producers') and fan them out; returns them numbered."""
        return await self._hub.publish_many(events)

    def _notify(self, event: JobEvent | None) -> None:
        if event is not None:
            self._hub.committed([event])
