"""OpenTelemetry traces: one trace follows a request, and a job, through every service it touches.

- :func:`configure_tracing` (once per service process, by ``zehanx_runtime.server.serve``): when the
  standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, an SDK
  tracer provider whose batch processor sends spans with OTLP/gRPC, configured by the standard
  ``OTEL_*`` variables (the exporter reads them itself; it is OpenTelemetry's, with a cheaper encoder of
  the same messages, :mod:`zehanx_runtime.otlp`). Unset, nothing is installed: OpenTelemetry's
  no-op tracer makes spans that cost nothing and carry no ids (a trace id nobody can look up is no use;
  ``bench/bench_tracing.py`` measures what spans cost: 23-80 us a unary call on this machine).
- Server side, the one interceptor calls :func:`server_span`: it continues the caller's W3C trace
  context (``traceparent`` in the gRPC metadata), opens one SERVER span per call, and binds its trace id
  to every log line of the call (structlog ``trace_id``).
- Client side, :func:`inject` adds the current span's ``traceparent`` to every outbound call's metadata
  (``zehanx_runtime.client.call_metadata`` does it for every internal client).

A process without the variables (the default, and tests running services in process) uses the no-op
tracer: jobs then carry no trace id and log lines no ``trace_id``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator, Mapping

import structlog
from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_PARENT = context.Context()
_TRACER_NAME = "zehanx"
_configured = False


def exporting() -> bool:
    """Whether the standard OTLP variables ask for spans to be exported."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service_name: str) -> None:
    """Install the SDK tracer provider for this process (``service.name`` = ``zehanx-<service>``)."""
    global _configured
    if _configured or not exporting():
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from zehanx_runtime.otlp import HashedOnce, SpanExporter

    resource = HashedOnce(Resource.create({"service.name": f"zehanx-{service_name}"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(SpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def shutdown_tracing() -> None:
    """Flush spans still buffered (at a graceful stop)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown()


_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The tracer of the current provider (made once per provider: the SDK's ``get_tracer`` builds a
    new tracer and instrumentation scope each time, a third of a server span's cost)."""
    global _tracer
    provider = trace.get_tracer_provider()
    cached = _tracer
    if cached is None or cached[0] is not provider:
        cached = _tracer = (provider, provider.get_tracer(_TRACER_NAME))
    return cached[1]


def trace_id_of(span: trace.Span | None = None) -> str:
    """The 32-hex trace id of ``span`` (default: the current one), or "" when it has none."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def traceparent() -> str:
    """The current span's W3C ``traceparent`` ("" when there is none), to store or send on."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def inject(metadata: list[tuple[str, str]]) -> None:
    """Append the current trace context to outbound gRPC metadata."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    metadata.extend(carrier.items())


def context_of(carrier: Mapping[str, str]) -> context.Context:
    """The trace context in ``carrier`` (gRPC metadata, or ``{"traceparent": stored}``)."""
    return _PROPAGATOR.extract(carrier=carrier)


@functools.lru_cache(maxsize=1024)
def _server_shape(method: str, system: str) -> tuple[str, Mapping[str, str]]:
    """A method's span name and attributes, made once (the method names of a server are a fixed set)."""
    service, _, name = method.lstrip("/").partition("/")
    return method.lstrip("/"), {"rpc.system": system, "rpc.service": service, "rpc.method": name}


class _ServerSpan:
    """:func:`server_span`'s context manager (a class: a generator-based one costs more per call)."""

    __slots__ = ("_current", "_span", "_token")

    def __init__(self, method: str, metadata: Mapping[str, str], system: str) -> None:
        name, attributes = _server_shape(method, system)
        # No traceparent: a new trace (what extracting from an empty carrier gives, without the work).
        parent = context_of(metadata) if "traceparent" in metadata else _NO_PARENT
        self._span = tracer().start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        self._current: context.Context | None = None
        self._token: contextvars.Token[context.Context] | None = None

    def __enter__(self) -> trace.Span:
        span = self._span
        ids = span.get_span_context()
        if ids.is_valid:  # traces off and no caller's trace: nothing to carry
            self._current = trace.set_span_in_context(span)
            self._token = context.attach(self._current)
            structlog.contextvars.bind_contextvars(trace_id=format(ids.trace_id, "032x"))
        return span

    def __exit__(self, *exc_info: object) -> None:
        # A stream whose caller went away may be closed from another context (grpc's clean-up): that
        # context never held ours, and the call's own context is discarded with its task.
        if self._token is not None and context.get_current() is self._current:
            context.detach(self._token)
        self._span.end()


def server_span(
    method: str, metadata: Mapping[str, str], *, system: str = "grpc"
) -> contextlib.AbstractContextManager[trace.Span]:
    """A SERVER span for one call (``system``: ``grpc``, or ``connect_rpc`` on the web edge), continuing
    the caller's W3C trace context (``traceparent``, ``tracestate`` in ``metadata``), current while the
    call runs, its trace id bound to the call's log lines."""
    return _ServerSpan(method, metadata, system)


def end_status(span: trace.Span, code: str) -> None:
    """Record a call's gRPC status on its span (an error status for server-side failures)."""
    span.set_attribute("rpc.grpc.status_code", code)
    if code not in ("OK", "CANCELLED", "NOT_FOUND", "INVALID_ARGUMENT", "ALREADY_EXISTS"):
        span.set_status(Status(StatusCode.ERROR, code))


def mark_error(description: str) -> None:
    """Mark the current span as failed (a job that ends FAILED without an exception crossing its span)."""
    trace.get_current_span().set_status(Status(StatusCode.ERROR, description))


@contextlib.contextmanager
def span(
    name: str, *, parent: str | None = None, **attributes: str | int | float | bool
) -> Iterator[trace.Span]:
    """An internal span, current inside the block; ``parent``: a stored ``traceparent`` to continue."""
    ctx = context_of({"traceparent": parent}) if parent else None
    with tracer().start_as_current_span(name, context=ctx, attributes=attributes) as current:
        yield current
