"""zehanx_runtime.tracing through the one interceptor, on a real gRPC server on port 0, with the
OpenTelemetry SDK recording spans in memory: a call continues the caller's W3C trace context from its
metadata, its span is current in the handler (its trace id in the log context, and in the traceparent
sent on outbound calls), a call without one starts a trace, a server-side failure marks its span, and
health checks make no span. And a process that configures tracing from the standard OTEL_* variables
exports its spans with OTLP to the endpoint they name."""

# The spans fixture comes from support.tracing; pytest sees it by import.
# ruff: noqa: F811

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support.tracing import CALLER_SPAN, TRACE_ID, spans  # noqa: F401
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as pb_grpc
from zehanx_runtime import errors, tracing
from zehanx_runtime.server import start_server
from zehanx_runtime.settings import ServiceSettings

NAME = "zehanx.crawler.v1.CrawlerService"
TOKEN = "tracing-token"


class Seen(pb_grpc.CrawlerServiceServicer):
    """Records what a handler sees of the trace."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def ListCatalog(self, request: Any, context: Any) -> Any:
        outbound: list[tuple[str, str]] = []
        tracing.inject(outbound)
        self.seen.append(
            {
                "trace_id": tracing.trace_id_of(),
                "log_trace_id": structlog.contextvars.get_contextvars().get("trace_id", ""),
                "outbound": dict(outbound).get("traceparent", ""),
            }
        )
        return pb.ListCatalogResponse()

    async def BuildDataset(self, request: Any, context: Any) -> Any:
        yield pb.BuildDatasetResponse(sequence=1)
        raise errors.Unavailable("the store went away", reason="STORE_UNAVAILABLE")


async def test_a_call_continues_the_callers_trace_and_carries_it_on(spans: InMemorySpanExporter) -> None:
    servicer = Seen()
    server = await start_server(
        ServiceSettings(port=0, service_token=TOKEN),
        [(pb_grpc.add_CrawlerServiceServicer_to_server, servicer, NAME)],
        service_name="crawler",
    )
    auth = [("x-zx-service-token", TOKEN)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.CrawlerServiceStub(channel)
            traced = [*auth, ("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01")]
            await stub.ListCatalog(pb.ListCatalogRequest(), metadata=traced)
            await stub.ListCatalog(pb.ListCatalogRequest(), metadata=auth)
            stream = stub.BuildDataset(pb.BuildDatasetRequest(prompt="p"), metadata=traced)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                _ = [m async for m in stream]
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(None)

    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == [
        f"{NAME}/ListCatalog",
        f"{NAME}/ListCatalog",
        f"{NAME}/BuildDataset",
    ]
    continued, fresh, stream_span = finished
    assert all(s.kind is SpanKind.SERVER and s.attributes["rpc.system"] == "grpc" for s in finished)
    assert continued.attributes["rpc.service"] == NAME and continued.attributes["rpc.method"] == "ListCatalog"
    # Continued: the caller's trace, under the caller's span.
    assert format(continued.context.trace_id, "032x") == TRACE_ID
    assert continued.parent is not None and format(continued.parent.span_id, "016x") == CALLER_SPAN
    assert continued.status.status_code is StatusCode.UNSET
    assert continued.attributes["rpc.grpc.status_code"] == "OK"
    # In the handler: the span is current, its trace id is in the log context, and an outbound call
    # would carry this span as its parent.
    inside, inside_fresh = servicer.seen
    span_id = format(continued.context.span_id, "016x")
    assert inside == {
        "trace_id": TRACE_ID,
        "log_trace_id": TRACE_ID,
        "outbound": f"00-{TRACE_ID}-{span_id}-01",
    }
    # Without a traceparent: a trace of its own.
    assert fresh.parent is None and format(fresh.context.trace_id, "032x") not in ("", TRACE_ID)
    assert inside_fresh["trace_id"] == format(fresh.context.trace_id, "032x")
    # A stream failing on the server side: marked as an error, with its status code.
    assert format(stream_span.context.trace_id, "032x") == TRACE_ID
    assert stream_span.status.status_code is StatusCode.ERROR
    assert stream_span.attributes["rpc.grpc.status_code"] == "UNAVAILABLE"


class _Collector:
    """A stand-in OTLP/gRPC collector (opentelemetry-proto's TraceService): (service.name, span name)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        with self.lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.got += [(attributes["service.name"], span.name) for span in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


def test_a_process_with_the_otlp_variables_exports_its_spans_to_that_endpoint() -> None:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    program = (
        "from zehanx_runtime import tracing\n"
        "tracing.configure_tracing('crawler')\n"
        "for name in ('first', 'second'):\n"
        "    with tracing.span(name):\n"
        "        pass\n"
        "tracing.shutdown_tracing()\n"
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        server.stop(None)
    assert done.returncode == 0, done.stderr
    assert collector.got == [("zehanx-crawler", "first"), ("zehanx-crawler", "second")]
