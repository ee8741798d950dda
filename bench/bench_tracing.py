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


if __name__ == "__main__":
    asyncio.run(main())
