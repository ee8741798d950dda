"""WatchJob: snapshot first, every event exactly once and in order, live, across replicas, for fast,
resuming and slow watchers alike — and a slow one delays nobody."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from gateway_support import Served, bearer, gateway_settings, serve_gateway, stop_gateway
from zehanx.common.v1 import log_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx.gateway.v1 import job_event_pb2, job_pb2
from zehanx_gateway import convert
from zehanx_gateway.domain import JobStage, JobState

WATCHERS = 200
EVENTS = 400


def log_event(n: int, width: int = 120) -> job_event_pb2.JobEvent:
    text = f"line {n} " + "x" * width
    return job_event_pb2.JobEvent(log_line=log_pb2.LogLine(source=log_pb2.LOG_SOURCE_PROGRAM, text=text))


async def produce(
    served: Served, job_id: uuid.UUID, *, events: int, batch: int = 10, pause: float = 0.005
) -> None:
    """What the orchestrator will do: start the job, stream events, finish it."""
    jobs = served.gateway.jobs
    await jobs.transition(job_id, JobState.RUNNING, stage=JobStage.TRAINING, reason="test producer")
    for start in range(0, events, batch):
        await jobs.publish(
            [convert.pending_event(job_id, log_event(n)) for n in range(start, min(events, start + batch))]
        )
        await asyncio.sleep(pause)
    await jobs.transition(job_id, JobState.SUCCEEDED, reason="done")


async def watch(
    stub: rpc.GatewayServiceStub, job_id: str, auth: tuple, after: int = 0, *, delay: float = 0.0
) -> AsyncIterator[job_event_pb2.JobEvent]:
    call = stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_sequence=after), metadata=auth)
    try:
        async for message in call:
            yield message.event
            if delay:
                await asyncio.sleep(delay)
    finally:
        call.cancel()


async def wait_for_subscribers(served: Served, job_id: uuid.UUID, count: int, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while served.gateway.hub.subscriber_count(job_id) < count:
        assert time.monotonic() < deadline, f"only {served.gateway.hub.subscriber_count(job_id)} subscribed"
        await asyncio.sleep(0.02)


@pytest.fixture
async def small_buffer_gateway(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    """Watch buffers of 32 events, so that a watcher that stops reading overflows quickly."""
    running = await serve_gateway(gateway_settings(database_url, tmp_path, watch_buffer=32))
    try:
        yield running
    finally:
        await stop_gateway(running)


async def test_200_watchers_get_every_event_once_in_order_and_a_slow_one_delays_nobody(
    small_buffer_gateway: Served,
) -> None:
    served = small_buffer_gateway
    auth = bearer(await served.api_key("alice"))
    job = await served.stub.CreateJob(pb.CreateJobRequest(job=job_pb2.Job(prompt="watch me")), metadata=auth)
    job_id = uuid.UUID(job.id)
    last = 1 + 1 + EVENTS + 1  # created, RUNNING, the log lines, SUCCEEDED
    expected = list(range(1, last + 1))
    channels = [grpc.aio.insecure_channel(served.address) for _ in range(4)]
    # The slow watcher's own connection has small HTTP/2 windows, so its stream backs up into the
    # gateway's per-subscriber buffer soon instead of into megabytes of transport buffers.
    slow_channel = grpc.aio.insecure_channel(
        served.address, options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 4096)]
    )
    stubs = [rpc.GatewayServiceStub(c) for c in channels]
    finished: dict[str, float] = {}

    async def fast(n: int) -> list[int]:
        seen: list[int] = []
        first = True
        async for event in watch(stubs[n % len(stubs)], job.id, auth):
            if first:
                assert event.WhichOneof("event") == "snapshot"
                first = False
                continue
            seen.append(event.sequence)
        finished[f"fast-{n}"] = time.monotonic()
        return seen

    async def resuming() -> list[int]:
        seen: list[int] = []
        async for event in watch(stubs[0], job.id, auth):
            if event.WhichOneof("event") != "snapshot":
                seen.append(event.sequence)
            if len(seen) >= 60:
                break  # the connection drops mid-job...
        async for event in watch(stubs[1], job.id, auth, after=seen[-1]):  # ...and it resumes
            if event.WhichOneof("event") == "snapshot":
                assert event.sequence >= seen[-1]
                continue
            seen.append(event.sequence)
        finished["resuming"] = time.monotonic()
        return seen

    others_done = asyncio.Event()

    async def slow() -> list[int]:
        """Takes the snapshot and one event, then stops reading until everyone else has finished:
        if the gateway waited for it, nobody would finish and this test would time out."""
        seen: list[int] = []
        async for event in watch(rpc.GatewayServiceStub(slow_channel), job.id, auth):
            if event.WhichOneof("event") != "snapshot":
                seen.append(event.sequence)
                if len(seen) == 1:
                    await others_done.wait()
        finished["slow"] = time.monotonic()
        return seen

    try:
        fast_tasks = [asyncio.create_task(fast(n)) for n in range(WATCHERS - 2)]
        resume_task = asyncio.create_task(resuming())
        slow_task = asyncio.create_task(slow())
        await wait_for_subscribers(served, job_id, WATCHERS)
        await produce(served, job_id, events=EVENTS)

        fast_results = await asyncio.wait_for(asyncio.gather(*fast_tasks), 240)
        resumed = await asyncio.wait_for(resume_task, 120)
        assert "slow" not in finished  # still parked after its first event
        others_done.set()
        slow_seen = await asyncio.wait_for(slow_task, 120)
    finally:
        for channel in [*channels, slow_channel]:
            await channel.close()

    for seen in fast_results:
        assert seen == expected[1:] or seen == expected, seen[:5]  # each exactly once, in order
    assert resumed == expected[1:] or resumed == expected
    # The slow one overflowed its 32-event buffer, was sent back to the store, and still got every
    # event exactly once and in order.
    assert slow_seen == expected[1:] or slow_seen == expected
    assert served.gateway.hub.overflows >= 1
    assert served.gateway.hub.events_written == EVENTS


async def test_a_finished_job_gives_its_snapshot_and_history_then_ends(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    job = await served.stub.CreateJob(
        pb.CreateJobRequest(job=job_pb2.Job(prompt="done already")), metadata=auth
    )
    await produce(served, uuid.UUID(job.id), events=5, pause=0)
    events = [e async for e in watch(served.stub, job.id, auth)]
    assert events[0].WhichOneof("event") == "snapshot"
    assert events[0].snapshot.state == job_pb2.JOB_STATE_SUCCEEDED
    assert events[0].sequence == 8
    assert [e.sequence for e in events[1:]] == list(range(1, 9))
    assert events[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED
    # Resuming at the end: the snapshot alone, then the stream ends.
    tail = [e async for e in watch(served.stub, job.id, auth, after=8)]
    assert [e.WhichOneof("event") for e in tail] == ["snapshot"]
    # Beyond the end is a bad request, with the field named.
    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        _ = [e async for e in watch(served.stub, job.id, auth, after=9)]
    assert beyond.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_cancelled_watch_leaves_no_subscriber_behind(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    job = await served.stub.CreateJob(pb.CreateJobRequest(job=job_pb2.Job(prompt="x")), metadata=auth)
    job_id = uuid.UUID(job.id)
    calls = [served.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=auth) for _ in range(5)]
    for call in calls:
        await call.read()  # the snapshot
    await wait_for_subscribers(served, job_id, 5)
    for call in calls:
        call.cancel()
    deadline = time.monotonic() + 10
    while served.gateway.hub.subscriber_count(job_id):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mode", ["notify", "poll"])
async def test_a_watcher_on_replica_b_sees_events_written_by_replica_a(
    database_url: str, tmp_path: Path, mode: str
) -> None:
    """LISTEN/NOTIFY carries events across replicas (polling off); with LISTEN off, the poll does."""
    if mode == "notify":
        b_settings = gateway_settings(database_url, tmp_path, event_poll_seconds=0)
    else:
        b_settings = gateway_settings(database_url, tmp_path, event_listen=False, event_poll_seconds=0.2)
    a = await serve_gateway(gateway_settings(database_url, tmp_path))
    b = await serve_gateway(b_settings)
    try:
        auth = bearer(await a.api_key("alice"))
        job = await a.stub.CreateJob(pb.CreateJobRequest(job=job_pb2.Job(prompt="across")), metadata=auth)
        job_id = uuid.UUID(job.id)
        received: list[tuple[int, float]] = []

        async def watcher() -> None:
            async for event in watch(b.stub, job.id, auth):
                if event.WhichOneof("event") != "snapshot":
                    received.append((event.sequence, time.monotonic()))

        task = asyncio.create_task(watcher())
        await wait_for_subscribers(b, job_id, 1)
        sent: dict[int, float] = {}
        await a.gateway.jobs.transition(job_id, JobState.RUNNING, stage=JobStage.TRAINING)
        for n in range(20):
            (event,) = await a.gateway.jobs.publish([convert.pending_event(job_id, log_event(n))])
            sent[event.sequence] = time.monotonic()
            await asyncio.sleep(0.01)
        await a.gateway.jobs.transition(job_id, JobState.SUCCEEDED)
        await asyncio.wait_for(task, 30)
        assert [s for s, _ in received] == list(range(1, 24))
        delays = sorted(t - sent[s] for s, t in received if s in sent)
        median = delays[len(delays) // 2]
        # NOTIFY arrives within milliseconds; the poll within its period.
        assert median < (0.1 if mode == "notify" else 0.6), delays
        if mode == "notify":
            assert b.gateway.hub.notifications > 0
    finally:
        await stop_gateway(b)
        await stop_gateway(a)
