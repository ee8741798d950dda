"""Observability benchmark: the gateway's GetJob RPC/s and WatchJob events/s with metrics and traces on
against off, in the same run (target: on >= 0.9x off).

    .venv/bin/python bench/bench_observability.py [--watchers 100] [--events 500] [--calls 3000]

Off: no tracer provider (what a service runs without OTEL_EXPORTER_OTLP_ENDPOINT) and nobody scraping.
On: the SDK tracer provider every service installs when the variable is set, its batch processor
exporting with OTLP/gRPC to a receiver on loopback (the OTLP TraceService of opentelemetry-proto,
counting spans), and the /metrics endpoint scraped every second. The in-process Prometheus counters
are always counted (there is no switch), so "off" includes them. A tracer provider can be installed once
per process: off runs first, then on, each measured twice, best of two. The workloads are those of
bench/bench_gateway.py (a real gateway on an embedded PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
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


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=True)
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    receiver = Receiver()
    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)
    collector_port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    metrics_server, metrics_port = serve_metrics("127.0.0.1", 0)
    results: dict[str, tuple[float, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="zx-bench-observability-") as tmp:
            async with served_gateway(Path(tmp), max_active_jobs_per_user=10_000) as served:
                auth = await bench_auth(served.gateway)
                port = served.server.port

                async def measure() -> tuple[float, float]:
                    best_get, best_fan = 0.0, 0.0
                    for _ in range(2):
                        best_get = max(
                            best_get, await gateway_getjob(port, auth, args.calls, args.concurrency)
                        )
                        best_fan = max(
                            best_fan,
                            await gateway_fanout(served.gateway, port, auth, args.watchers, args.events),
                        )
                    return best_get, best_fan

                results["off"] = await measure()

                from opentelemetry import trace
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                provider = TracerProvider(resource=Resource.create({"service.name": "zehanx-gateway"}))
                exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{collector_port}", insecure=True)
                provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
                trace.set_tracer_provider(provider)
                stop = asyncio.Event()
                scraping = asyncio.create_task(
                    _scrape_every_second(f"http://127.0.0.1:{metrics_port}/metrics", stop)
                )
                results["on"] = await measure()
                stop.set()
                scrapes = await scraping
                provider.force_flush()
                await asyncio.sleep(0.5)
    finally:
        metrics_server.shutdown()
        collector.stop(None)
    (get_off, fan_off), (get_on, fan_on) = results["off"], results["on"]
    print(f"GetJob ({args.calls} calls, {args.concurrency} concurrent), best of 2:")
    print(
        f"  off {get_off:10,.0f} RPC/s   on {get_on:10,.0f} RPC/s   ratio {get_on / get_off:.2f} (target >= 0.9)"
    )
    print(f"WatchJob fan-out ({args.watchers} watchers x {args.events} events), best of 2:")
    print(
        f"  off {fan_off:10,.0f} ev/s    on {fan_on:10,.0f} ev/s    ratio {fan_on / fan_off:.2f} (target >= 0.9)"
    )
    print(
        f"  with traces on: {receiver.spans} spans received by the OTLP receiver, /metrics scraped {scrapes} times"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    sys.exit(asyncio.run(main(parser.parse_args())))
