"""The Connect edge carries the W3C trace context of the HTTP request: a call with a ``traceparent``
header gets the edge's SERVER span in that trace, under the caller's span, and a job it creates keeps
the trace; a call without one starts its own trace. Against a real gateway and edge on PostgreSQL, with
the OpenTelemetry SDK recording spans in memory."""

# ruff: noqa: F811

from __future__ import annotations

from edge_support import ConnectError, Edge, stream_error
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.tracing import CALLER_SPAN, TRACE_ID, spans  # noqa: F401

CREATE = "zehanx.gateway.v1.GatewayService/CreateJob"


def _edge_spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name == name and s.kind is trace.SpanKind.SERVER and s.attributes["rpc.system"] == "connect_rpc"
    ]


async def test_a_connect_call_continues_the_callers_trace(edge: Edge, spans: InMemorySpanExporter) -> None:
    token = await edge.api_key("alice")
    response = await edge.http.post(
        "/zehanx.gateway.v1.GatewayService/CreateJob",
        json={"job": {"prompt": "Create a sentiment analysis model"}},
        headers={
            "authorization": f"Bearer {token}",
            "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01",
            "tracestate": "vendor=opaque",
        },
    )
    assert response.status_code == 200, response.text
    (span,) = _edge_spans(spans, CREATE)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == CALLER_SPAN
    assert span.parent.is_remote and span.context.trace_state.get("vendor") == "opaque"
    assert span.attributes["rpc.grpc.status_code"] == "OK" and span.status.is_ok
    # The job keeps the trace: its worker's spans continue it (zx job ID shows the trace id).
    assert response.json()["traceId"] == TRACE_ID

    # Without a traceparent, the call starts a trace of its own; a failing stream's span is in it too.
    job_id = response.json()["id"]
    got = await edge.call("GetJob", {"jobId": job_id}, token)
    assert not isinstance(got, ConnectError), got
    (get_span,) = _edge_spans(spans, "zehanx.gateway.v1.GatewayService/GetJob")
    assert get_span.parent is None and format(get_span.context.trace_id, "032x") != TRACE_ID
    assert get_span.attributes["rpc.method"] == "GetJob"
    other = "0af7651916cd43dd8448eb211c80319c"
    edge.http.headers["traceparent"] = f"00-{other}-b7ad6b7169203331-01"
    try:
        _, end = await edge.stream("WatchJob", {"jobId": "00000000-0000-4000-8000-000000000000"}, token)
    finally:
        del edge.http.headers["traceparent"]
    assert stream_error(end) is not None and stream_error(end).code == "not_found"  # type: ignore[union-attr]
    (watch_span,) = _edge_spans(spans, "zehanx.gateway.v1.GatewayService/WatchJob")
    assert format(watch_span.context.trace_id, "032x") == other
    assert watch_span.attributes["rpc.grpc.status_code"] == "NOT_FOUND"
