"""The gateway's job gauges, read from a real PostgreSQL: jobs by state, RUNNING jobs by stage, and the
age of the oldest queued job, as /metrics reports them."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from prometheus_client import REGISTRY
from zehanx_gateway import metrics
from zehanx_gateway.domain import JobStage, JobState, NewJob
from zehanx_gateway.store import PostgresRegistry


def _running() -> dict[str, float]:
    return {
        stage.value.lower(): REGISTRY.get_sample_value(
            "zx_gateway_running_jobs", {"stage": stage.value.lower()}
        )
        or 0.0
        for stage in JobStage
    }


async def test_a_running_job_moves_the_jobs_by_stage_gauge(registry: PostgresRegistry) -> None:
    idle = dict.fromkeys(_running(), 0.0)
    await metrics.read_job_gauges(registry)
    assert _running() == idle
    user = await registry.user_by_name("alice", create=True)
    job, _ = await registry.create_job(user, NewJob("a model", {}, None, hashlib.sha256(b"a model").digest()))
    await metrics.read_job_gauges(registry)
    assert REGISTRY.get_sample_value("zx_gateway_jobs", {"state": "QUEUED"}) == 1
    claimed = await registry.claim_next("w1", timedelta(seconds=30))
    assert claimed is not None
    lease = ("w1", claimed[0].attempt)

    for stage in (JobStage.CRAWLING, JobStage.TRAINING):
        await registry.transition(
            job.id, JobState.RUNNING, from_states=[JobState.RUNNING], stage=stage, lease=lease
        )
        await metrics.read_job_gauges(registry)
        assert _running() == {**idle, stage.value.lower(): 1.0}
    assert REGISTRY.get_sample_value("zx_gateway_jobs", {"state": "RUNNING"}) == 1
    assert REGISTRY.get_sample_value("zx_gateway_jobs", {"state": "QUEUED"}) == 0

    await registry.transition(job.id, JobState.SUCCEEDED, lease=lease)
    await metrics.read_job_gauges(registry)
    assert _running() == idle
    assert REGISTRY.get_sample_value("zx_gateway_jobs", {"state": "SUCCEEDED"}) == 1
