"""Tracing benchmark: what a span per RPC costs. Measured in this run: unary calls to a real gRPC server
(the runtime's server and interceptor, port 0) first with OpenTelemetry's no-op tracer (what a service
runs when OTEL_EXPORTER_OTLP_ENDPOINT is unset, the default), then with an SDK tracer provider making a
real span per call (what it runs with traces on; the export itself, batched in a background thread, is
left out). A provider can be installed once per process, so the two phases run one after the other,
each after a warm-up.

    .venv/bin/python bench/bench_tracing.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for sub in ("runtime", "gen/python"):
    sys.path.insert(0, str(REPO / sub))

NAME = "zehanx.crawler.v1.CrawlerService"
TOKEN = "bench-token"


async def _phase(stub: Any, request: Any, calls: int) -> list[float]:
    auth = [("x-zx-service-token", TOKEN)]
    for _ in range(200):
        await stub.ListCatalog(request, metadata=auth)
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        await stub.ListCatalog(request, metadata=auth)
        out.append(time.perf_counter() - started)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    import grpc
    from zehanx.crawler.v1 import crawler_service_pb2 as pb
    from zehanx.crawler.v1 import crawler_service_pb2_grpc as rpc
    from zehanx_runtime.logging import configure_logging
    from zehanx_runtime.server import start_server
    from zehanx_runtime.settings import ServiceSettings

    class Catalog(rpc.CrawlerServiceServicer):
        async def ListCatalog(self, request: Any, context: Any) -> Any:
            return pb.ListCatalogResponse()

    configure_logging("warning", json=True)
    server = await start_server(
        ServiceSettings(port=0, service_token=TOKEN),
        [(rpc.add_CrawlerServiceServicer_to_server, Catalog(), NAME)],
        service_name="crawler",
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = rpc.CrawlerServiceStub(channel)
            request = pb.ListCatalogRequest()
            off = await _phase(stub, request, args.calls)
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider

            trace.set_tracer_provider(TracerProvider())
            on = await _phase(stub, request, args.calls)
    finally:
        await server.stop(None)
    p50_off, p50_on = statistics.median(off), statistics.median(on)
    print(
        f"unary call p50: traces off (no-op) {p50_off * 1e6:7.0f} us, on (SDK spans) {p50_on * 1e6:7.0f} us, "
        f"ratio {p50_on / p50_off:.3f}x ({(p50_on - p50_off) * 1e6:+.0f} us per call, {args.calls} calls each)"
    )
    _export_cost()


def _export_cost(batch: int = 512, rounds: int = 7) -> None:
    """What sending spans costs the thread that exports them (the batch processor's, under the GIL): batches
    of server spans as the interceptor makes them, sent with OTLP/gRPC to a receiver on loopback (in this
    process, its threads not counted), by OpenTelemetry's exporter and by the runtime's (the same
    messages, zehanx_runtime.otlp); thread CPU per span, the best of alternating rounds."""
    from concurrent import futures

    import grpc
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from zehanx_runtime import otlp, tracing

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    kept = InMemorySpanExporter()
    # The resource as configure_tracing makes it (its hash cached, which spares the stock encoder a JSON dump a span).
    provider = TracerProvider(resource=otlp.HashedOnce(Resource.create({"service.name": "zehanx-bench"})))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    trace._TRACER_PROVIDER = provider  # type: ignore[attr-defined]
    caller = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    for i in range(batch):
        with tracing.server_span(f"/{NAME}/ListCatalog", caller if i % 2 else {}) as span:
            tracing.end_status(span, "OK")
    spans = list(kept.get_finished_spans())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        exporters = {
            "OpenTelemetry's OTLPSpanExporter": OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
            "zehanx_runtime.otlp.SpanExporter": otlp.SpanExporter(
                endpoint=f"127.0.0.1:{port}", insecure=True
            ),
        }
        best = dict.fromkeys(exporters, float("inf"))
        for _ in range(rounds):
            for name, exporter in exporters.items():
                started = time.thread_time()
                for _ in range(4):
                    exporter.export(spans)
                best[name] = min(best[name], (time.thread_time() - started) / (4 * batch))
    finally:
        server.stop(None)
    for name, cost in best.items():
        print(
            f"export, batches of {batch} server spans over OTLP/gRPC: {name:34} {cost * 1e6:5.1f} us per span"
        )


if __name__ == "__main__":
    asyncio.run(main())
