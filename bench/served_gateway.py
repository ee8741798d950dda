"""A gateway served for a benchmark: an embedded PostgreSQL of its own, the gateway's gRPC server on a
free port and (optionally) its web edge, all on this process's event loop; stopped in every outcome.

    async with served_gateway(Path(tmp), edge=True, jwt_secret=...) as served:
        served.gateway, served.server.port, served.edge.url
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import job_event_pb2, job_pb2
from zehanx_cli import procs
from zehanx_cli.postgres import EmbeddedPostgres
from zehanx_gateway import convert
from zehanx_gateway.app import Gateway
from zehanx_gateway.domain import JobStage, JobState
from zehanx_gateway.edge import EdgeSettings, RunningEdge, serve_edge
from zehanx_gateway.settings import GatewaySettings
from zehanx_runtime.server import settle_gc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package: the gateway as zx-gateway starts it

from support.gateway import api_key, open_gateway  # noqa: E402


@dataclass
class Served:
    gateway: Gateway
    server: Any
    edge: RunningEdge | None


async def bench_key(gateway: Gateway) -> str:
    """A new API key of the user "bench" (made on first use): the whole key, to send as a bearer."""
    return await api_key(gateway, "bench", "bench")


async def bench_auth(gateway: Gateway) -> tuple[tuple[str, str], ...]:
    """Call metadata with a new API key of the user "bench"."""
    return (("authorization", f"Bearer {await bench_key(gateway)}"),)


@contextlib.asynccontextmanager
async def served_gateway(home: Path, *, edge: bool = False, **settings: Any) -> AsyncIterator[Served]:
    """``settings`` override the gateway's (for example ``jwt_secret``, ``max_active_jobs_per_user``)."""
    postgres = EmbeddedPostgres(home / "pg", port=procs.free_port(), durable=False)
    process = postgres.start(log_path=home / "postgres.log")
    try:
        config = GatewaySettings(
            **{
                "host": "127.0.0.1",
                "port": 0,
                "database_url": postgres.url(),
                "artifact_dir": home / "artifacts",
                "log_level": "warning",
                "log_json": True,
                **settings,
            }
        )  # type: ignore[call-arg]
        gateway, server = await open_gateway(config)
        running = await serve_edge(gateway, EdgeSettings(edge_port=0)) if edge else None
        settle_gc()  # what zehanx_runtime.server.serve does once a service is up
        try:
            yield Served(gateway, server, running)
        finally:
            if running is not None:
                await running.stop(0.5)
            await server.stop(0.5)
            await gateway.close()
    finally:
        postgres.stop(process.pid)
        process.wait(timeout=30)


async def stored_job(
    gateway: Gateway, stub: Any, auth: Any, events: list[job_event_pb2.JobEvent], *, end: bool
) -> str:
    """A job of ``auth``'s user, RUNNING in TRAINING with ``events`` stored (then SUCCEEDED if ``end``)."""
    job = await stub.CreateJob(pb.CreateJobRequest(job=job_pb2.Job(prompt="bench")), metadata=auth)
    job_id = convert.parse_id(job.id, "job_id")
    await gateway.jobs.transition(job_id, JobState.RUNNING, stage=JobStage.TRAINING, reason="bench")
    for first in range(0, len(events), 100):
        await gateway.jobs.publish([convert.pending_event(job_id, e) for e in events[first : first + 100]])
    if end:
        await gateway.jobs.transition(job_id, JobState.SUCCEEDED, reason="bench done")
    return job.id
