"""The OTLP/gRPC span exporter every service uses when traces are on: OpenTelemetry's own, with a cheaper
encoder of the same messages.

The stock encoder (``opentelemetry.exporter.otlp.proto.common``) builds every attribute of every span
as new protobuf ``KeyValue``/``AnyValue`` messages through a chain of Python calls, and hashes each
span's resource and scope to group them; with the sending, 35-52 us a server span on this 2-core
machine (``bench/bench_tracing.py``), in the batch processor's thread and under the GIL, so taken from
the service's own calls. This exporter takes 18-24 us in the same runs. A service's spans repeat a few
attribute sets (a server span's are its method and status code), so :class:`SpanEncoder` encodes each
distinct set of string attributes once and reuses it, and groups spans by the identity of their
resource and scope (one of each per process). Spans with events or links (the executor's sandbox
events, a few a job) go through the stock encoder, unchanged. Imported only when traces are exported
(:func:`zehanx_runtime.tracing.configure_tracing`).

The messages are the same as the stock encoder's, built with its own helpers (private to
opentelemetry-exporter-otlp-proto-common, whose version requirements.txt pins): ``tests/runtime/test_otlp.py``
compares the two on every kind of span a service makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_attributes,
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

# As the stock encoder passes them: None for an unset field (the stubs type every field as set).
PbSpan: Any = trace_pb2.Span
ResourceSpans: Any = trace_pb2.ResourceSpans
ScopeSpans: Any = trace_pb2.ScopeSpans
Status: Any = trace_pb2.Status
SpanFlags = trace_pb2.SpanFlags

_KINDS = {
    SpanKind.INTERNAL: PbSpan.SpanKind.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: PbSpan.SpanKind.SPAN_KIND_SERVER,
    SpanKind.CLIENT: PbSpan.SpanKind.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: PbSpan.SpanKind.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: PbSpan.SpanKind.SPAN_KIND_CONSUMER,
}
_LOCAL = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE = _LOCAL | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_UNSET = Status(code=StatusCode.UNSET.value)
_STRINGS = {str}

#: Distinct attribute sets kept encoded; past it the cache starts again (spans whose attributes carry
#: ids, like a job's, would otherwise grow it without end).
ATTRIBUTE_SETS = 4096


class SpanEncoder:
    """Encodes batches of finished spans as the stock encoder does, reusing the encoding of attribute
    sets, resources and scopes seen before."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[tuple[str, str], ...], list[KeyValue]] = {}
        #: id -> (the object, kept so that its id is not reused, and its encoding).
        self._resources: dict[int, tuple[Resource, Any]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, Any]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        groups: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, list[Any]]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope or None
            key = (id(resource), id(scope))
            group = groups.get(key)
            if group is None:
                group = groups[key] = (resource, scope, [])
            group[2].append(self.span(span))
        by_resource: dict[int, tuple[Resource, list[Any]]] = {}
        for resource, scope, encoded in groups.values():
            scopes = by_resource.setdefault(id(resource), (resource, []))[1]
            scopes.append(
                ScopeSpans(
                    scope=self._scope(scope),
                    spans=encoded,
                    schema_url=scope.schema_url if scope else None,
                )
            )
        return ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=self._resource(resource), scope_spans=scopes, schema_url=resource.schema_url
                )
                for resource, scopes in by_resource.values()
            ]
        )

    def span(self, span: ReadableSpan) -> Any:
        """One span (the stock encoder's own function for a span with events or links)."""
        context = span.context
        if (
            span.events
            or span.links
            or context is None
            or span.dropped_attributes
            or span.dropped_events
            or span.dropped_links
        ):
            return _encode_span(span)
        parent = span.parent
        status = span.status
        return PbSpan(
            trace_id=context.trace_id.to_bytes(16, "big"),
            span_id=context.span_id.to_bytes(8, "big"),
            trace_state=",".join(f"{k}={v}" for k, v in context.trace_state.items()) or None,
            parent_span_id=parent.span_id.to_bytes(8, "big") if parent else None,
            name=span.name,
            kind=_KINDS[span.kind],
            start_time_unix_nano=span.start_time,
            end_time_unix_nano=span.end_time,
            attributes=self._attribute_set(span.attributes),
            status=_UNSET
            if status.status_code is StatusCode.UNSET and status.description is None
            else Status(code=status.status_code.value, message=status.description),
            flags=_REMOTE if parent is not None and parent.is_remote else _LOCAL,
        )

    def _attribute_set(self, attributes: Any) -> list[KeyValue]:
        if not attributes:
            return []
        # Only sets of strings are kept: True == 1 == 1.0 as dictionary keys, yet they encode differently.
        if _STRINGS != set(map(type, attributes.values())):
            return _encode_attributes(attributes)
        key = tuple(attributes.items())
        encoded = self._attributes.get(key)
        if encoded is None:
            if len(self._attributes) >= ATTRIBUTE_SETS:
                self._attributes.clear()
            encoded = self._attributes[key] = _encode_attributes(attributes)
        return encoded

    def _resource(self, resource: Resource) -> Any:
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            cached = self._resources[id(resource)] = (resource, _encode_resource(resource))
        return cached[1]

    def _scope(self, scope: InstrumentationScope | None) -> Any:
        cached = self._scopes.get(id(scope))
        if cached is None or cached[0] is not scope:
            cached = self._scopes[id(scope)] = (scope, _encode_instrumentation_scope(scope))  # type: ignore[arg-type]
        return cached[1]


class HashedOnce(Resource):
    """A process's resource, its hash computed once: a Resource hashes by dumping its attributes to JSON
    each time, and OpenTelemetry's encoder (and its batch grouping) hash every exported span's resource.
    It is immutable, so the hash never changes."""

    def __init__(self, base: Resource) -> None:
        super().__init__(base.attributes, base.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class SpanExporter(OTLPSpanExporter):
    """OpenTelemetry's OTLP/gRPC span exporter (configured by the standard ``OTEL_EXPORTER_OTLP_*``
    variables, retries and all) with :class:`SpanEncoder` as its encoder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return self._encoder.encode(data)
