"""The gateway under an unauthenticated attack on its web edge (security review H2): GetJob latency
through the gRPC port while a client without credentials sends gzip bombs and oversized JSON to the
Connect edge in a loop, against the same figures without the attack, in the same run.

    .venv/bin/python bench/bench_edge_attack.py [--seconds 10] [--attackers 1] [--concurrency 4]

1. Quiet: ``--concurrency`` callers make authenticated GetJob calls on the gRPC port for ``--seconds``.
2. Attacked: the same, while another process (``--attackers`` threads) sends, round after round and
   without credentials: the review's gzip bomb (a PredictRequest of 1,000,000 instances, 1.9 MiB of JSON,
   2 KiB gzip'd) as a POST, the same kind of bomb as a GET ``?compression=gzip&message=``, and 4 MiB of
   JSON to CreateJob.

Prints p50 and p99 GetJob latency of both, the ratio attacked/quiet (target: p99 at most 2x), and what
the attacker got back. The gRPC callers run in the gateway's process, on its event loop (any stall of
that loop shows in their latency); the attacker runs in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gzip
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import grpc
from served_gateway import bench_auth, served_gateway
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx.gateway.v1 import job_pb2
from zehanx_runtime.logging import configure_logging

SERVICE = "/zehanx.gateway.v1.GatewayService"


# -- the attacker (a process of its own) ------------------------------------------------------------


def attacks() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(name, HTTP method and target, body, headers) of each request of one round, none with credentials."""
    bomb_json = json.dumps({"modelId": str(uuid.uuid4()), "instances": [1] * 1_000_000}).encode()
    bomb = gzip.compress(bomb_json, compresslevel=9)
    states = json.dumps({"states": [1] * 1_000_000}).encode()
    query = urlencode(
        {
            "encoding": "json",
            "compression": "gzip",
            "base64": "1",
            "message": base64.urlsafe_b64encode(gzip.compress(states, compresslevel=9)).decode(),
        }
    )
    big = json.dumps({"job": {"prompt": "x" * (4 * 1024 * 1024)}}).encode()
    json_type = {"content-type": "application/json"}
    return [
        ("gzip bomb POST", f"POST {SERVICE}/Predict", bomb, {**json_type, "content-encoding": "gzip"}),
        ("gzip bomb GET", f"GET {SERVICE}/ListJobs?{query}", b"", {}),
        ("4 MiB JSON", f"POST {SERVICE}/CreateJob", big, json_type),
    ]


def attack(url: str, seconds: float, threads: int) -> None:
    """Send the attacks from ``threads`` threads for ``seconds``; print what came back (JSON)."""
    parts = urlsplit(url)
    rounds = attacks()
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def one(name: str, line: str, body: bytes, headers: dict[str, str]) -> str:
        method, target = line.split(" ", 1)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            conn.request(method, target, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            code = json.loads(data).get("code", "?") if data else "-"
            return f"{name}: {response.status} {code}"
        except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
            # Refused before the body was read, the connection closed under the rest of it.
            return f"{name}: {type(exc).__name__}"
        finally:
            conn.close()

    def worker(offset: int) -> None:
        n = offset
        while time.monotonic() < deadline:
            outcome = one(*rounds[n % len(rounds)])
            n += 1
            with lock:
                outcomes[outcome] += 1

    print("ready", flush=True)
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps(dict(outcomes)), flush=True)


# -- the measurement -------------------------------------------------------------------------------


async def get_job_latencies(
    stub: rpc.GatewayServiceStub, job_id: str, auth: Any, seconds: float, concurrency: int
) -> tuple[list[float], float]:
    """GetJob latencies of ``concurrency`` callers for ``seconds``, and the event loop's worst lag (a
    10 ms sleep that woke late) meanwhile."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    request = pb.GetJobRequest(job_id=job_id)

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await stub.GetJob(request, metadata=auth)
            latencies.append(time.perf_counter() - started)

    lags: list[float] = [0.0]

    async def ticker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - started - 0.01)

    await asyncio.gather(ticker(), *(caller() for _ in range(concurrency)))
    return latencies, max(lags)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def row(name: str, measured: tuple[list[float], float], seconds: float) -> str:
    latencies, lag = measured
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return (
        f"  {name:9} p50 {p50 * 1000:8.2f} ms   p99 {p99 * 1000:8.2f} ms   "
        f"max {max(latencies) * 1000:8.1f} ms   {len(latencies) / seconds:7.0f} calls/s   "
        f"event loop worst lag {lag * 1000:6.1f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("error", json=True)
    with tempfile.TemporaryDirectory(prefix="zx-bench-edge-attack-") as tmp:
        async with served_gateway(Path(tmp), edge=True) as served:
            assert served.edge is not None
            gateway = served.gateway
            auth = await bench_auth(gateway)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{served.server.port}")
            stub = rpc.GatewayServiceStub(channel)
            try:
                job = await stub.CreateJob(
                    pb.CreateJobRequest(job=job_pb2.Job(prompt="bench")), metadata=auth
                )
                await get_job_latencies(stub, job.id, auth, 1.0, args.concurrency)  # warm up
                quiet = await get_job_latencies(stub, job.id, auth, args.seconds, args.concurrency)

                attacker = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--attack",
                    served.edge.url,
                    "--seconds",
                    str(args.seconds),
                    "--attackers",
                    str(args.attackers),
                    stdout=subprocess.PIPE,
                )
                assert attacker.stdout is not None
                ready = await attacker.stdout.readline()
                assert ready.strip() == b"ready", ready
                attacked = await get_job_latencies(stub, job.id, auth, args.seconds, args.concurrency)
                report = (await attacker.stdout.read()).decode()
                await attacker.wait()
            finally:
                await channel.close()

    print(
        f"GetJob on the gRPC port, {args.concurrency} callers, {args.seconds:.0f} s each; "
        f"attack: {args.attackers} unauthenticated client(s) in a loop on the Connect edge"
    )
    print(row("quiet", quiet, args.seconds))
    print(row("attacked", attacked, args.seconds))
    ratio = percentile(attacked[0], 99) / percentile(quiet[0], 99)
    print(
        f"  p50 ratio {percentile(attacked[0], 50) / percentile(quiet[0], 50):.2f}   "
        f"p99 ratio {ratio:.2f} (target <= 2)"
    )
    outcomes = json.loads(report.strip().splitlines()[-1])
    print(f"attack requests answered: {sum(outcomes.values())}")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:6d}  {outcome}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--attackers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--attack", metavar="URL", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.attack:
        attack(parsed.attack, parsed.seconds, parsed.attackers)
    else:
        asyncio.run(main(parsed))
