"""The gateway's domain metrics (Prometheus; served with the gRPC metrics by ``zehanx_runtime.metrics``).

Labels are small fixed sets (a job state, a stage); never a job id or a user id. The job gauges are
read from PostgreSQL every few seconds by :func:`refresh_job_gauges`, so every replica reports the
whole registry's queue, not only its own jobs.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram
from zehanx_runtime.logging import get_logger

from zehanx_gateway.domain import JobStage, JobState

log = get_logger("zehanx.gateway.metrics")

JOBS_CREATED = Counter("zx_gateway_jobs_created_total", "Jobs created (CreateJob calls that made a job).")
JOB_TRANSITIONS = Counter(
    "zx_gateway_job_transitions_total", "Job state changes committed, by the state entered.", ["to_state"]
)
STAGE_SECONDS = Histogram(
    "zx_gateway_job_stage_seconds",
    "Time a job spent in a stage (crawling, generating, training, evaluating, publishing).",
    ["stage"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
REPAIRS = Counter("zx_gateway_repairs_total", "Failed smoke runs sent to codegen for a repair.")
EVALUATIONS = Counter(
    "zx_gateway_heldout_evaluations_total",
    "Held-out evaluations recorded, by whether the model beat the baseline.",
    ["beats_baseline"],
)
JOBS = Gauge("zx_gateway_jobs", "Jobs in the registry by state (read from PostgreSQL).", ["state"])
RUNNING_JOBS = Gauge(
    "zx_gateway_running_jobs",
    "RUNNING jobs by stage (crawling, generating, training, evaluating, publishing; read from PostgreSQL).",
    ["stage"],
)
QUEUE_OLDEST_AGE = Gauge(
    "zx_gateway_queue_oldest_age_seconds", "Age of the oldest QUEUED job (0 when none waits)."
)
WATCH_SUBSCRIBERS = Gauge("zx_gateway_watch_subscribers", "WatchJob streams open on this gateway.")
EVENTS_FANNED_OUT = Counter(
    "zx_gateway_events_fanned_out_total", "Job events delivered to WatchJob subscribers of this gateway."
)


SIGN_IN_FAILURES = Counter(
    "zx_gateway_sign_in_failures_total",
    "Refused email-and-password sign-ins, by why (invalid_credentials, rate_limited).",
    ["reason"],
)
RATE_LIMITED = Counter(
    "zx_gateway_rate_limit_refusals_total",
    "Requests refused by a per-user or per-client limit, by limit (active_jobs, create_job, predict, upload, "
    "sign_in, sign_up).",
    ["limit"],
)


class JobCounts(Protocol):
    async def count_jobs_by_state(self) -> tuple[dict[str, int], float]: ...

    async def count_running_jobs_by_stage(self) -> dict[str, int]: ...


async def read_job_gauges(store: JobCounts) -> None:
    """Set :data:`JOBS`, :data:`RUNNING_JOBS` and :data:`QUEUE_OLDEST_AGE` from the registry, once."""
    counts, oldest = await store.count_jobs_by_state()
    stages = await store.count_running_jobs_by_stage()
    for state in JobState:
        JOBS.labels(state.value).set(counts.get(state.value, 0))
    for stage in JobStage:  # every stage, so one no job is in reads 0 rather than its last value
        RUNNING_JOBS.labels(stage.value.lower()).set(stages.get(stage.value, 0))
    QUEUE_OLDEST_AGE.set(oldest)


async def refresh_job_gauges(store: JobCounts, *, every_s: float = 5.0) -> None:
    """Keep the job gauges current (:func:`read_job_gauges` every ``every_s``) until cancelled."""
    while True:
        try:
            await read_job_gauges(store)
        except Exception as exc:  # the database away for a moment: the next round tries again
            log.warning("job gauges not read", error=str(exc))
        await asyncio.sleep(every_s)
