"""zehanx_runtime.otlp: the exporter's encoder gives the very messages OpenTelemetry's own encoder gives,
for the spans a service makes (server spans continuing a remote caller, internal spans, errors with a
description) and the rarer ones it hands to the stock encoder (events, links, a trace state, attributes
that are lists or mappings), across two resources and scopes, and reuses what it encoded before."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from zehanx_runtime.otlp import SpanEncoder

CALLER = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "zx=1,other=b",
}


def _spans(service: str) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("zehanx")
    remote = TraceContextTextMapPropagator().extract({"traceparent": CALLER["traceparent"]})
    with_state = TraceContextTextMapPropagator().extract(CALLER)
    server = {"rpc.system": "grpc", "rpc.service": "zehanx.x.v1.X", "rpc.method": "Get"}
    for code in ("OK", "OK", "NOT_FOUND"):
        span = tracer.start_span("zehanx.x.v1.X/Get", context=remote, kind=SpanKind.SERVER, attributes=server)
        span.set_attribute("rpc.grpc.status_code", code)
        span.end()
    with tracer.start_as_current_span(
        "job", attributes={"job.id": "j-1", "n": 3, "ok": True, "x": 0.5}
    ) as job:
        with tracer.start_as_current_span("crawl") as crawl:
            crawl.set_status(Status(StatusCode.ERROR, "ROBOTS_DISALLOWED: no"))
        with tracer.start_as_current_span("train", attributes={"sizes": [1, 2], "names": ("a", "b")}):
            pass
        with tracer.start_as_current_span("execute") as execute:
            execute.add_event("sandbox.end", {"reason": "completed", "exit_code": 0})
        tracer.start_span("linked", links=[Link(job.get_span_context(), {"why": "retry"})]).end()
        tracer.start_span("mapping", attributes={"m": {"a": 1}}).end()  # type: ignore[dict-item]
        # Equal as keys, different on the wire: a bool, an int, a float, and in a list.
        for value in (True, 1, 1.0, (True,), (1,)):
            tracer.start_span("typed", attributes={"x": value}).end()
    tracer.start_span("stated", context=with_state).end()
    provider.get_tracer("other-scope").start_span("elsewhere", kind=SpanKind.CLIENT).end()
    return list(exporter.get_finished_spans())


def test_the_encoder_gives_the_messages_the_stock_encoder_gives() -> None:
    batch = _spans("zehanx-gateway") + _spans("zehanx-crawler")
    encoder = SpanEncoder()
    ours = encoder.encode(batch)
    assert ours == encode_spans(batch)
    # Two resources, two scopes in each; every span is there once.
    assert len(ours.resource_spans) == 2
    assert [len(r.scope_spans) for r in ours.resource_spans] == [2, 2]
    assert sum(len(s.spans) for r in ours.resource_spans for s in r.scope_spans) == len(batch) == 32
    # Encoded again from what it keeps: the same request.
    assert encoder.encode(batch) == encode_spans(batch)
    # The status code attribute varies, so a server span's attribute sets are two, not one per span.
    server = [s for s in batch if s.kind is SpanKind.SERVER]
    assert len({tuple(s.attributes.items()) for s in server}) == 2
    assert len([k for k in encoder._attributes if ("rpc.method", "Get") in k]) == 2
