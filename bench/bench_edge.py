"""Web edge benchmark: the same gateway through its Connect edge (HTTP/1.1, JSON, httpx) and through its
gRPC port (grpc.aio), measured in the same run, on the same machine, in the same way.

    .venv/bin/python bench/bench_edge.py [--events 5000] [--calls 2000] [--concurrency 8]

1. WatchJob: a job with ``--events`` stored log events (then SUCCEEDED) is replayed from sequence 0,
   one stream at a time, three times per door; events/s = events / (request -> end of stream).
2. GetJob: ``--concurrency`` callers make ``--calls`` authenticated calls in all (API key).

Prints events/s and calls/s for each door and the ratio edge/gRPC. The clients run in this process,
on the server's event loop, for both doors alike (so the client's own cost is in both numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package: support.connect

import grpc  # noqa: E402
import httpx  # noqa: E402
from served_gateway import bench_key, served_gateway, stored_job  # noqa: E402
from support.connect import END_STREAM, envelope, frames  # noqa: E402
from zehanx.common.v1 import log_pb2  # noqa: E402
from zehanx.gateway.v1 import gateway_service_pb2 as pb  # noqa: E402
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc  # noqa: E402
from zehanx.gateway.v1 import job_event_pb2  # noqa: E402
from zehanx_runtime.logging import configure_logging  # noqa: E402

SERVICE = "/zehanx.gateway.v1.GatewayService"


def log_event(n: int) -> job_event_pb2.JobEvent:
    text = f"step {n} loss=0.{n:06d} " + "x" * 80
    return job_event_pb2.JobEvent(log_line=log_pb2.LogLine(source=log_pb2.LOG_SOURCE_PROGRAM, text=text))


async def watch_grpc(stub: rpc.GatewayServiceStub, job_id: str, auth: Any) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    async for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=auth):
        count += 1
    return count, time.perf_counter() - started


async def watch_edge(http: httpx.AsyncClient, job_id: str, key: str) -> tuple[int, float]:
    body = json.dumps({"jobId": job_id}).encode()
    headers = {"content-type": "application/connect+json", "authorization": f"Bearer {key}"}
    started = time.perf_counter()
    count = 0
    async with http.stream(
        "POST", f"{SERVICE}/WatchJob", content=envelope(body), headers=headers
    ) as response:
        async for flags, data in frames(response.aiter_raw()):
            json.loads(data)  # a browser parses every message too
            if not flags & END_STREAM:
                count += 1
    return count, time.perf_counter() - started


async def hammer(call: Any, calls: int, concurrency: int) -> float:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=True)
    with tempfile.TemporaryDirectory(prefix="zx-bench-edge-") as tmp:
        async with served_gateway(Path(tmp), edge=True) as served:
            assert served.edge is not None
            gateway = served.gateway
            token = await bench_key(gateway)
            auth = (("authorization", f"Bearer {token}"),)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{served.server.port}")
            stub = rpc.GatewayServiceStub(channel)
            limits = httpx.Limits(
                max_connections=args.concurrency, max_keepalive_connections=args.concurrency
            )
            http = httpx.AsyncClient(base_url=served.edge.url, timeout=300, limits=limits)
            try:
                job_id = await stored_job(
                    gateway, stub, auth, [log_event(n) for n in range(args.events)], end=True
                )

                rates: dict[str, float] = {}
                for door, watch in (
                    ("grpc", lambda: watch_grpc(stub, job_id, auth)),
                    ("edge", lambda: watch_edge(http, job_id, token)),
                ):
                    best = 0.0
                    for _ in range(3):
                        count, seconds = await watch()
                        assert count >= args.events, (door, count)
                        best = max(best, count / seconds)
                    rates[door] = best
                print(f"WatchJob replay of {args.events} events, best of 3 (events/s):")
                print(f"  gRPC port           {rates['grpc']:10.0f}")
                print(
                    f"  Connect edge (JSON) {rates['edge']:10.0f}   ratio edge/gRPC {rates['edge'] / rates['grpc']:.2f}"
                )

                get = pb.GetJobRequest(job_id=job_id)
                headers = {"authorization": f"Bearer {token}"}

                async def over_edge() -> None:
                    response = await http.post(f"{SERVICE}/GetJob", json={"jobId": job_id}, headers=headers)
                    response.raise_for_status()

                grpc_rate = await hammer(
                    lambda: stub.GetJob(get, metadata=auth), args.calls, args.concurrency
                )
                edge_rate = await hammer(over_edge, args.calls, args.concurrency)
                print(f"GetJob, {args.calls} calls, {args.concurrency} callers (calls/s):")
                print(f"  gRPC port           {grpc_rate:10.0f}")
                print(
                    f"  Connect edge (JSON) {edge_rate:10.0f}   ratio edge/gRPC {edge_rate / grpc_rate:.2f}"
                )
            finally:
                await http.aclose()
                await channel.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
