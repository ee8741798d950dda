"""The gateway's job workers: claim, heartbeat, cancel, recover.

Each worker loops: take back expired leases (``recover_expired``: RUNNING → QUEUED for another attempt,
or FAILED after ``max_attempts``; CANCELLING → CANCELLED), then claim the oldest QUEUED job
(``FOR UPDATE SKIP LOCKED``: two workers never get the same job) and run it through the
:class:`~.pipeline.Pipeline`. While it runs:

- a heartbeat renews the lease every third of its length; when renewing fails (the lease was taken
  back) the run stops at once without writing anything more, so a job never runs twice;
- a watcher follows the job's events (live, from any replica) and cancels the run the moment the job
  turns CANCELLING: the in-flight call (Train included) is cancelled, which stops the sandbox.

On shutdown the running jobs go back to QUEUED for another gateway (or this one, restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from datetime import timedelta

from zehanx_runtime import errors
from zehanx_runtime.logging import get_logger

from zehanx_gateway.domain import STATE_CHANGE, Job, JobState
from zehanx_gateway.fanout import EventHub
from zehanx_gateway.jobs import JobService
from zehanx_gateway.orchestrator.pipeline import Pipeline, RunControl, StopRun
from zehanx_gateway.orchestrator.ports import Registry
from zehanx_gateway.orchestrator.settings import OrchestratorSettings

log = get_logger("zehanx.gateway.orchestrator")


class Orchestrator:
    """``settings.workers`` loops that run jobs. ``start()`` once the event hub runs; ``close()`` at exit."""

    def __init__(
        self,
        *,
        registry: Registry,
        jobs: JobService,
        hub: EventHub,
        pipeline: Pipeline,
        settings: OrchestratorSettings,
    ) -> None:
        self._registry = registry
        self._jobs = jobs
        self._hub = hub
        self._pipeline = pipeline
        self._settings = settings
        self._lease = timedelta(seconds=settings.lease_seconds)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[uuid.UUID, tuple[Job, RunControl]] = {}
        self._stopping = asyncio.Event()

    def start(self) -> None:
        for index in range(self._settings.workers):
            self._loops.append(asyncio.create_task(self._loop(index), name=f"zx-worker-{index}"))
        log.info("workers started", workers=self._settings.workers, owner=self.owner)

    @property
    def running_jobs(self) -> list[uuid.UUID]:
        return list(self._running)

    async def close(self) -> None:
        """Stop claiming; hand the running jobs back (QUEUED) so another worker resumes them."""
        self._stopping.set()
        for _job, control in list(self._running.values()):
            control.stop("shutdown")
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()

    # -- the loop -----------------------------------------------------------------------------------

    async def _loop(self, index: int) -> None:
        owner = f"{self.owner}/w{index}"
        while not self._stopping.is_set():
            try:
                await self._recover()
                claimed = await self._registry.claim_next(owner, self._lease)
            except errors.DomainError as exc:  # the database is restarting: try again shortly
                log.warning("cannot claim jobs", error=exc.message)
                claimed = None
            if claimed is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._settings.claim_poll_seconds)
                continue
            job, event = claimed
            self._hub.committed([event])
            await self._run(job)

    async def _recover(self) -> None:
        for job, event in await self._registry.recover_expired(max_attempts=self._settings.max_attempts):
            self._hub.committed([event])
            log.warning("took back an expired lease", job_id=str(job.id), state=job.state.value)

    async def _run(self, job: Job) -> None:
        control = RunControl()
        task = asyncio.create_task(self._pipeline.run(job, control), name=f"zx-job-{job.id}")
        control.task = task
        self._running[job.id] = (job, control)
        helpers = [
            asyncio.create_task(self._heartbeat(job, control), name=f"zx-heartbeat-{job.id}"),
            asyncio.create_task(self._watch_cancel(job, control), name=f"zx-cancel-watch-{job.id}"),
        ]
        log.info("running job", job_id=str(job.id), attempt=job.attempt)
        try:
            await task
        except asyncio.CancelledError:
            if control.stop_reason is None:  # this loop itself is being cancelled
                task.cancel()
            if control.stop_reason == "shutdown":
                await self._requeue(job)
        except StopRun as stop:
            log.warning("job run stopped", job_id=str(job.id), why=str(stop))
        except Exception:  # one job's failure must not end the worker
            log.exception("job run crashed", job_id=str(job.id))
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await helper
            self._running.pop(job.id, None)

    async def _requeue(self, job: Job) -> None:
        assert job.lease_owner is not None
        with contextlib.suppress(errors.DomainError):
            await self._jobs.transition(
                job.id,
                JobState.QUEUED,
                from_states=[JobState.RUNNING],
                lease=(job.lease_owner, job.attempt),
                reason="the gateway running it stopped; queued again",
            )

    async def _heartbeat(self, job: Job, control: RunControl) -> None:
        assert job.lease_owner is not None
        interval = self._settings.lease_seconds / 3
        failures = 0
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self._registry.renew_lease(job.id, job.lease_owner, job.attempt, self._lease)
                failures = 0
            except errors.Aborted:
                log.warning("lease lost; stopping the run", job_id=str(job.id))
                control.stop("lease_lost")
                return
            except errors.DomainError as exc:
                failures += 1
                log.warning(
                    "cannot renew the lease", job_id=str(job.id), error=exc.message, failures=failures
                )
                continue
            if renewed.state is JobState.CANCELLING:
                control.request_cancel()

    async def _watch_cancel(self, job: Job, control: RunControl) -> None:
        subscription = self._hub.subscribe(job.id, job.last_sequence)
        try:
            async for event in subscription.events():
                if event.kind == STATE_CHANGE and event.payload.get("to_state") == JobState.CANCELLING.value:
                    control.request_cancel()
        finally:
            subscription.close()
