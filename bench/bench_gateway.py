"""Gateway benchmark: WatchJob fan-out and GetJob throughput, each against a bare grpcio baseline
measured in the same run, on the same machine, in the same way.

    .venv/bin/python bench/bench_gateway.py [--watchers 200] [--events 1000] [--calls 3000]

1. Fan-out: ``--watchers`` WatchJob streams of one job on a real gateway (embedded PostgreSQL, the
   object graph ``zx-gateway`` serves); a producer publishes ``--events`` log events through the
   gateway's event hub (persisted in batches, fanned out live), then finishes the job. Aggregate
   events/s = watchers x events / (first publish -> last watcher saw the terminal event).
   Baseline: a bare grpcio server-streaming method that yields the same number of pre-serialized
   WatchJobResponse messages of the same size to the same number of streams. Target ratio >= 0.5.
2. GetJob: ``--concurrency`` callers make ``--calls`` authenticated GetJob calls in all (API key:
   looked up in PostgreSQL on every call, so revocation is immediate; and HS256 JWT). Baseline: a bare
   grpcio unary echo of the same request. Target ratio >= 0.5.

The clients run in this process, on the server's event loop, for the gateway and the baselines alike.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

import grpc  # noqa: E402
import jwt  # noqa: E402
from served_gateway import bench_auth, served_gateway  # noqa: E402
from zehanx.common.v1 import log_pb2  # noqa: E402
from zehanx.gateway.v1 import gateway_service_pb2 as pb  # noqa: E402
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc  # noqa: E402
from zehanx.gateway.v1 import job_event_pb2, job_pb2  # noqa: E402
from zehanx_gateway import convert  # noqa: E402
from zehanx_gateway.app import Gateway  # noqa: E402
from zehanx_gateway.domain import JobStage, JobState  # noqa: E402
from zehanx_runtime.logging import configure_logging  # noqa: E402

JWT_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
CHANNELS = 8


def log_event(n: int) -> job_event_pb2.JobEvent:
    text = f"step {n} loss=0.{n:06d} " + "x" * 80
    return job_event_pb2.JobEvent(log_line=log_pb2.LogLine(source=log_pb2.LOG_SOURCE_PROGRAM, text=text))


# -- baselines ------------------------------------------------------------------------------------


async def bare_server(messages: list[bytes]) -> tuple[grpc.aio.Server, int]:
    """A bare grpcio server: a streaming method yielding ``messages``, and a unary echo."""

    async def stream(request: bytes, context: Any) -> Any:
        for message in messages:
            yield message

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Bare",
        {
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def bare_fanout(port: int, watchers: int, events: int) -> float:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    try:
        calls = [
            channels[i % CHANNELS].unary_stream(
                "/bench.Bare/Stream", response_deserializer=pb.WatchJobResponse.FromString
            )
            for i in range(watchers)
        ]

        async def one(call: Any) -> int:
            n = 0
            async for _ in call(b""):
                n += 1
            return n

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(c) for c in calls))
        elapsed = time.perf_counter() - started
        assert all(c == events for c in counts), counts[:3]
        return watchers * events / elapsed
    finally:
        for channel in channels:
            await channel.close()


async def bare_echo(port: int, calls: int, concurrency: int, request: bytes) -> float:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    try:
        echo = [
            c.unary_unary("/bench.Bare/Echo", response_deserializer=pb.GetJobRequest.FromString)
            for c in channels
        ]
        return await _hammer(lambda i: echo[i % CHANNELS](request), calls, concurrency)
    finally:
        for channel in channels:
            await channel.close()


async def _hammer(call: Any, calls: int, concurrency: int) -> float:
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, 16))))  # warm-up of the channels
    counter = iter(range(calls))
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


# -- the gateway ------------------------------------------------------------------------------------


async def gateway_fanout(gateway: Gateway, port: int, auth: Any, watchers: int, events: int) -> float:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    stubs = [rpc.GatewayServiceStub(c) for c in channels]
    job = await stubs[0].CreateJob(
        pb.CreateJobRequest(job=job_pb2.Job(prompt="bench fan-out")), metadata=auth
    )
    job_id = uuid.UUID(job.id)
    done_at: list[float] = []

    async def watcher(stub: rpc.GatewayServiceStub) -> int:
        n = 0
        async for message in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=auth):
            if message.event.WhichOneof("event") == "log_line":
                n += 1
        done_at.append(time.perf_counter())
        return n

    tasks = [asyncio.create_task(watcher(stubs[i % CHANNELS])) for i in range(watchers)]
    while gateway.hub.subscriber_count(job_id) < watchers:  # noqa: ASYNC110 - the hub has no event for it
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    await gateway.jobs.transition(job_id, JobState.RUNNING, stage=JobStage.TRAINING, reason="bench")
    batch = 50
    for first in range(0, events, batch):
        await gateway.jobs.publish(
            [convert.pending_event(job_id, log_event(n)) for n in range(first, min(events, first + batch))]
        )
    await gateway.jobs.transition(job_id, JobState.SUCCEEDED, reason="bench done")
    counts = await asyncio.gather(*tasks)
    elapsed = max(done_at) - started
    assert all(c == events for c in counts), counts[:3]
    for channel in channels:
        await channel.close()
    return watchers * events / elapsed


async def gateway_getjob(port: int, auth: Any, calls: int, concurrency: int) -> float:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CHANNELS)]
    try:
        stubs = [rpc.GatewayServiceStub(c) for c in channels]
        job = await stubs[0].CreateJob(
            pb.CreateJobRequest(job=job_pb2.Job(prompt="bench get")), metadata=auth
        )
        request = pb.GetJobRequest(job_id=job.id)
        return await _hammer(lambda i: stubs[i % CHANNELS].GetJob(request, metadata=auth), calls, concurrency)
    finally:
        for channel in channels:
            await channel.close()


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=True)
    with tempfile.TemporaryDirectory(prefix="zx-bench-gateway-") as tmp:
        async with served_gateway(Path(tmp), jwt_secret=JWT_SECRET, max_active_jobs_per_user=1000) as served:
            gateway, server = served.gateway, served.server
            key_auth = await bench_auth(gateway)
            token = jwt.encode(
                {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": int(time.time()) + 3600},
                JWT_SECRET,
                algorithm="HS256",
            )
            jwt_auth = (("authorization", f"Bearer {token}"),)

            sample = pb.WatchJobResponse(
                event=job_event_pb2.JobEvent(sequence=123, log_line=log_event(7).log_line)
            ).SerializeToString()
            bare, bare_port = await bare_server([sample] * args.events)
            try:
                print(f"fan-out: {args.watchers} watchers x {args.events} events")
                base = await bare_fanout(bare_port, args.watchers, args.events)
                ours = await gateway_fanout(gateway, server.port, key_auth, args.watchers, args.events)
                print(f"  bare grpcio server-streaming loop  {base:12,.0f} events/s")
                print(f"  gateway WatchJob (persist + fan)   {ours:12,.0f} events/s")
                print(
                    f"  ratio {ours / base:.2f}  (target >= 0.5) {'PASS' if ours / base >= 0.5 else 'BELOW'}"
                )

                print(f"GetJob: {args.calls} calls, {args.concurrency} concurrent")
                request = pb.GetJobRequest(job_id=str(uuid.uuid4())).SerializeToString()
                echo = await bare_echo(bare_port, args.calls, args.concurrency, request)
                with_key = await gateway_getjob(server.port, key_auth, args.calls, args.concurrency)
                with_jwt = await gateway_getjob(server.port, jwt_auth, args.calls, args.concurrency)
                print(f"  bare grpcio unary echo             {echo:12,.0f} RPC/s")
                print(f"  gateway GetJob, API key            {with_key:12,.0f} RPC/s")
                print(f"  gateway GetJob, HS256 JWT          {with_jwt:12,.0f} RPC/s")
                for name, value in (("API key", with_key), ("JWT", with_jwt)):
                    ratio = value / echo
                    print(
                        f"  ratio ({name}) {ratio:.2f}  (target >= 0.5) {'PASS' if ratio >= 0.5 else 'BELOW'}"
                    )
                print(
                    f"  hub: {gateway.hub.batches_written} batches wrote {gateway.hub.events_written} events; "
                    f"{gateway.hub.overflows} subscriber overflows"
                )
            finally:
                await bare.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    sys.exit(asyncio.run(main(parser.parse_args())))
