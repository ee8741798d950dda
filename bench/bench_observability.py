"""Observability benchmark: the gateway's GetJob RPC/s and WatchJob events/s with metrics and traces on
against off, in the same run (target: on >= 0.9x off).

    .venv/bin/python bench/bench_observability.py [--watchers 100] [--events 500] [--calls 2000] [--rounds 5]

Off: no tracer provider (what a service runs without OTEL_EXPORTER_OTLP_ENDPOINT) and nobody scraping.
On: what every service installs when the variable is set (``zehanx_runtime.tracing.configure_tracing``
with OTEL_EXPORTER_OTLP_ENDPOINT pointed at the receiver, the batch processor's defaults), exporting
with OTLP/gRPC to a receiver on loopback in its own process, as a collector would be (the OTLP
TraceService of opentelemetry-proto, counting spans), and the /metrics endpoint scraped every second.
The in-process Prometheus counters are always counted (there is no switch), so "off" includes them.
Off and on alternate, --rounds of each after a warm-up round (the global tracer provider is switched
between rounds, as OpenTelemetry's own test utilities reset it), and each round's on/off ratio is
taken against its neighbour: this machine is shared and its speed drifts over a run.
The workloads are those of bench/bench_gateway.py (a real gateway on an embedded PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import grpc  # noqa: E402
import httpx  # noqa: E402
from bench_gateway import gateway_fanout, gateway_getjob  # noqa: E402
from served_gateway import bench_auth, served_gateway  # noqa: E402
from zehanx_runtime.logging import configure_logging  # noqa: E402
from zehanx_runtime.metrics import serve_metrics  # noqa: E402


class Receiver:
    """Counts the spans it is sent (an OTLP/gRPC TraceService on loopback)."""

    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request, context):
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        with self.lock:
            self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def receive() -> None:
    """The receiver's process: serve on a free loopback port, print it, and print the spans counted
    when stdin closes."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(None)
    print(receiver.spans, flush=True)


def _start_receiver() -> tuple[subprocess.Popen[str], int]:
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receive"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdout is not None
    return receiver, int(receiver.stdout.readline())


async def _scrape_every_second(url: str, stop: asyncio.Event) -> int:
    scrapes = 0
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            await client.get(url)
            scrapes += 1
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    return scrapes


def _thread_cpu(name: str) -> float:
    """CPU seconds of this process's thread called ``name`` so far (0 where there is none, or no /proc)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            try:
                fields = (
                    Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
                )
            except OSError:
                return 0.0
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


EXPORT_THREAD = "OtelBatchSpanRecordProcessor"  # the SDK's BatchSpanProcessor worker


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=True)
    receiver, collector_port = _start_receiver()
    assert receiver.stdout is not None and receiver.stdin is not None
    metrics_server, metrics_port = serve_metrics("127.0.0.1", 0)
    gets: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    fans: dict[bool, list[float]] = {False: [], True: []}
    export_cpu: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="zx-bench-observability-") as tmp:
            async with served_gateway(Path(tmp), max_active_jobs_per_user=10_000) as served:
                auth = await bench_auth(served.gateway)
                port = served.server.port
                from opentelemetry import trace
                from zehanx_runtime.tracing import configure_tracing

                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{collector_port}"
                os.environ["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
                configure_tracing("gateway")
                provider = trace.get_tracer_provider()
                scrapes = 0

                async def one(on: bool) -> None:
                    nonlocal scrapes
                    # The global provider switched as OpenTelemetry's own test utilities reset it: None
                    # is what a process without the variable runs (the no-op tracer).
                    trace._TRACER_PROVIDER = provider if on else None  # type: ignore[attr-defined]
                    stop = asyncio.Event()
                    url = f"http://127.0.0.1:{metrics_port}/metrics"
                    scraping = asyncio.create_task(_scrape_every_second(url, stop)) if on else None
                    cpu_before, export_before = time.process_time(), _thread_cpu(EXPORT_THREAD)
                    gets[on].append(await gateway_getjob(port, auth, args.calls, args.concurrency))
                    # gateway_getjob makes each call twice: a warm-up pass, then the timed one.
                    cpu[on].append((time.process_time() - cpu_before) / (2 * args.calls))
                    if on:
                        export_cpu.append((_thread_cpu(EXPORT_THREAD) - export_before) / (2 * args.calls))
                    fans[on].append(
                        await gateway_fanout(served.gateway, port, auth, args.watchers, args.events)
                    )
                    stop.set()
                    if scraping is not None:
                        scrapes += await scraping

                await one(False)  # warm-up (not counted): the first round pays for imports and caches
                gets[False].clear()
                cpu[False].clear()
                fans[False].clear()
                for i in range(args.rounds):  # off and on alternate, first one then the other
                    for on in (False, True) if i % 2 == 0 else (True, False):
                        await one(on)
                trace._TRACER_PROVIDER = provider  # type: ignore[attr-defined]
                # Spans still queued: their export's CPU falls outside the rounds.
                provider.force_flush()  # type: ignore[attr-defined]
    finally:
        metrics_server.shutdown()
        receiver.stdin.close()
        spans = int(receiver.stdout.readline() or 0)
        receiver.wait()

    def line(unit: str, runs: dict[bool, list[float]]) -> str:
        off, on = runs[False], runs[True]
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        return (
            f"  median: off {statistics.median(off):10,.0f} {unit}  on {statistics.median(on):10,.0f} {unit}  "
            f"median of the rounds' on/off ratios {statistics.median(ratios):.2f} (target >= 0.9; rounds: "
            + " ".join(f"{r:.2f}" for r in ratios)
            + ")"
        )

    print(f"GetJob ({args.calls} calls, {args.concurrency} concurrent), {args.rounds} rounds of off and on:")
    print(line("RPC/s", gets))
    cpu_off, cpu_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(
        f"  this process's CPU per GetJob (server, in-process client, span export; median): off "
        f"{cpu_off * 1e6:.0f} us, on {cpu_on * 1e6:.0f} us (+{(cpu_on - cpu_off) * 1e6:.0f} us), "
        f"off/on {cpu_off / cpu_on:.2f}"
    )
    if any(export_cpu):
        print(
            f"  of which the span exporter's thread (encoding and sending, in batches): "
            f"{statistics.median(export_cpu) * 1e6:.0f} us per GetJob (median of the rounds)"
        )
    print(f"WatchJob fan-out ({args.watchers} watchers x {args.events} events), {args.rounds} rounds:")
    print(line("ev/s ", fans))
    print(f"  with traces on: {spans} spans received by the OTLP receiver, /metrics scraped {scrapes} times")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.receive:
        receive()
    else:
        sys.exit(asyncio.run(main(parsed)))
