"""GatewayService over the Connect protocol: a thin adapter around the very servicer gRPC serves.

Per call it does what the runtime's gRPC interceptor does, in the same order and with the same code:
bind the log context, authenticate with the gateway's :class:`~zehanx_gateway.auth.Authenticator`
(``authorization: Bearer …`` or ``x-api-key``, as HTTP headers), validate the request against its
protovalidate rules, call the :class:`~zehanx_gateway.servicer.GatewayServicer` method, and turn a typed
domain error into the status the interceptor would send, through the same
:func:`~zehanx_runtime.status.to_grpc_status`: the Connect error carries the same code, message and
details (``google.rpc.ErrorInfo`` and ``google.rpc.BadRequest`` with the field violations).

The body of a call is untrusted until its caller is known, and the edge shares the gateway's one event
loop with the gRPC API, the orchestrator's workers and the event hub. So:

- Authentication reads the headers only, before any byte of the body is read: it is a connectrpc
  metadata interceptor, which connectrpc runs before it reads or decodes a request, and whose refusal it
  answers in the shape of the call's protocol (an ``unauthenticated`` Connect error, or the end of
  stream of a streaming call). The same applies to a ``Content-Length`` beyond the method's limit.
- Every method has a body limit (:class:`BodyLimits`): a small one (``ZX_GATEWAY_EDGE_MAX_REQUEST_BYTES``),
  plus, for a method whose request declares ``bytes`` fields with a size rule (UploadFile's file), room
  for those. It is enforced on the declared length and again while the body streams in (chunked).
- connectrpc would gunzip and decode a request on the loop, before the handler runs. Here its gzip and
  its codecs hand the bytes over undecoded (:class:`Undecoded`), and the handler decompresses (capped at
  the method's limit and at ``ZX_GATEWAY_EDGE_MAX_COMPRESSION_RATIO`` times the compressed size) and
  decodes them in a worker thread, after authentication (a body of 1 KiB or less, not compressed, on
  the loop: cheaper than the hand-over).

The endpoints are built from the service descriptor, so an RPC added to the proto is served here as
soon as the servicer implements it; one that streams requests (PredictStream) is left to gRPC, as
Connect over HTTP/1.1 cannot stream a request. No generated Connect stubs: the messages are the
``*_pb2`` classes gRPC uses.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import structlog
from buf.validate import validate_pb2
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.compression.gzip import GzipCompression
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import descriptor, descriptor_pb2, message_factory
from google.rpc import status_pb2
from prometheus_client import Counter, Histogram
from protobuf.wkt import Any as WireAny
from zehanx_runtime import errors, tracing
from zehanx_runtime.interceptors import JOB_ID_KEY, REQUEST_ID_KEY
from zehanx_runtime.logging import get_logger
from zehanx_runtime.metrics import LATENCY_BUCKETS
from zehanx_runtime.status import error_domain, to_grpc_status
from zehanx_runtime.validation import validate

#: The gateway's per-call authentication (``Authenticator.check``): raises a DomainError or returns.
CallCheck = Callable[[str, dict[str, str], Any], Awaitable[None]]

_IDEMPOTENCY = {
    descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN: IdempotencyLevel.UNKNOWN,
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: IdempotencyLevel.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT: IdempotencyLevel.IDEMPOTENT,
}

_DETAILS_KEY = "grpc-status-details-bin"

#: Longest credential header looked at; a JWT or an API key is far shorter. Longer: refused unparsed.
MAX_CREDENTIAL_CHARS = 8192
#: Bodies up to this size, not compressed, are decoded on the loop: at most ~1.5 ms of JSON (1.5 µs a
#: byte at worst, measured), less than handing them to a thread and back costs on a busy loop.
INLINE_DECODE_BYTES = 1024
#: Threads that decompress and decode request bodies. Few on purpose: a thread decoding a large JSON
#: body holds the GIL in turns with the event loop, so two at most compete with it; further bodies wait.
DECODE_THREADS = 2

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def connect_code(grpc_code_name: str) -> Code:
    """The Connect code of a gRPC status code name (Connect spells CANCELLED with one L)."""
    return Code.CANCELED if grpc_code_name == "CANCELLED" else Code(grpc_code_name.lower())


def connect_error(err: errors.DomainError, *, domain: str) -> ConnectError:
    """The Connect error for a domain error: the status gRPC callers get, detail for detail."""
    status = to_grpc_status(err, domain=domain)
    packed = dict(status.trailing_metadata).get(_DETAILS_KEY)
    proto = status_pb2.Status.FromString(packed) if packed else status_pb2.Status(message=err.message)
    details = [ErrorDetail(WireAny(type_url=d.type_url, value=d.value)) for d in proto.details]
    return ConnectError(connect_code(err.code), proto.message, details)


# -- body limits -----------------------------------------------------------------------------------


def _declared_bytes_room(method: descriptor.MethodDescriptor) -> int:
    """Room a request needs for its top-level ``bytes`` fields with a ``max_len`` rule, base64 in JSON."""
    room = 0
    for item in method.input_type.fields:
        if item.type != descriptor.FieldDescriptor.TYPE_BYTES:
            continue
        rules = item.GetOptions().Extensions[validate_pb2.field]
        if rules.HasField("bytes") and rules.bytes.HasField("max_len"):
            room += 4 * math.ceil(rules.bytes.max_len / 3)
    return room


@dataclass(frozen=True)
class BodyLimits:
    """The largest request body of each method of a service (and of its decompressed message).

    ``default_bytes`` for every method; a method whose request has ``bytes`` fields with a ``max_len``
    rule (UploadFile's ``content``, 32 MiB) gets room for them on top, as JSON would carry them (base64).
    A compressed body may expand ``max_compression_ratio`` times, and never beyond its method's limit.
    """

    default_bytes: int
    max_compression_ratio: int
    per_method: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of_service(
        cls, service: descriptor.ServiceDescriptor, *, default_bytes: int, max_compression_ratio: int
    ) -> BodyLimits:
        per_method = {}
        for method in service.methods:
            room = _declared_bytes_room(method)
            if room:
                per_method[f"/{service.full_name}/{method.name}"] = default_bytes + room
        return cls(default_bytes, max_compression_ratio, per_method)

    def of(self, path: str) -> int:
        """The limit of the method at ``path`` (``/pkg.Service/Method``)."""
        return self.per_method.get(path, self.default_bytes)

    @property
    def largest(self) -> int:
        return max([self.default_bytes, *self.per_method.values()])


def _too_large(what: str, size: int | str, limit: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED,
        f"{what} of {size} bytes is larger than this method accepts ({limit} bytes)",
    )


class _BodyGuard:
    """The request body as connectrpc reads it, refused once it passes ``limit`` bytes (chunked bodies
    included), and the response, told to close the connection when the body was left unread (so the
    server does not go on reading what nobody will use)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self._limit = limit
        self._read = 0
        self._pending = _declares_body(scope)

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message["type"] == "http.request":
            self._read += len(message.get("body", b""))
            if not message.get("more_body", False):
                self._pending = False
            if self._read > self._limit:
                raise _too_large("the request body", f"more than {self._limit}", self._limit)
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and self._pending:
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await self._send(message)


def _declares_body(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        name = bytes(key).lower()
        if name == b"transfer-encoding" or (name == b"content-length" and bytes(value).strip() != b"0"):
            return True
    return False


# -- decoding off the loop -------------------------------------------------------------------------


class _Gzipped(bytes):
    """A gzip'd request message, not yet decompressed (see :class:`DeferredGzip`)."""


class DeferredGzip(GzipCompression):
    """connectrpc's gzip, except that decompressing a request only marks its bytes as gzip'd: the
    handler decompresses them, capped, in a thread (:meth:`Undecoded.decode`). Responses compress as
    connectrpc's do."""

    def decompress(self, data: bytes | bytearray | memoryview, read_max_bytes: int | None = None) -> bytes:
        return _Gzipped(data)


@dataclass(frozen=True)
class Undecoded:
    """A request message as connectrpc read it: its (maybe gzip'd) bytes, the codec and class to
    decode it with. The handler decodes it in a thread, after authentication."""

    data: bytes | bytearray
    message_class: type[Any]
    codec: Codec[Any, Any]

    @property
    def inline(self) -> bool:
        """Small enough, and not compressed, to decode on the loop (:data:`INLINE_DECODE_BYTES`)."""
        return not isinstance(self.data, _Gzipped) and len(self.data) <= INLINE_DECODE_BYTES

    def decode(self, limit: int, max_ratio: int) -> Any:
        data = bytes(self.data)
        if isinstance(self.data, _Gzipped):
            data = _gunzip(data, min(limit, len(data) * max_ratio), limit=limit, ratio=max_ratio)
        elif len(data) > limit:
            raise _too_large("the request message", len(data), limit)
        return self.codec.decode(data, self.message_class)


def _gunzip(data: bytes, cap: int, *, limit: int, ratio: int) -> bytes:
    """``data`` gunzip'd (every member), refused as soon as the output passes ``cap`` bytes."""
    parts: list[bytes] = []
    total = 0
    rest = data
    try:
        while rest:
            inflater = zlib.decompressobj(wbits=31)
            out = inflater.decompress(rest, cap + 1 - total)
            total += len(out)
            parts.append(out)
            if total > cap:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"the gzip'd request expands beyond {cap} bytes: a request may expand at most "
                    f"{ratio} times its {len(data)} bytes, and to at most {limit} bytes for this method",
                )
            if not inflater.eof:
                raise ConnectError(Code.INVALID_ARGUMENT, "the gzip'd request is truncated")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise ConnectError(Code.INVALID_ARGUMENT, f"the request is not valid gzip: {exc}") from None
    return b"".join(parts)


@functools.cache
def _decoder() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="zx-edge-decode")


class _Wrapped(Codec[Any, Any]):
    """``inner`` with its name and encoding; subclasses change how it decodes."""

    def __init__(self, inner: Codec[Any, Any]) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Any) -> bytes:
        return self._inner.encode(message)


class _Decoding(_Wrapped):
    """A codec that leaves decoding to the handler (:class:`Undecoded`), whose undecodable input
    answers INVALID_ARGUMENT (connectrpc would answer UNKNOWN)."""

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        return Undecoded(data, message_class, _Strict(self._inner))


class _Strict(_Wrapped):
    """``inner``, its decoding failures turned into INVALID_ARGUMENT naming the message."""

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return self._inner.decode(data, message_class)
        except Exception as exc:
            raise ConnectError(
                Code.INVALID_ARGUMENT,
                f"request could not be decoded as {message_class.DESCRIPTOR.full_name} "
                f"({self.name()}): {exc}",
            ) from None


def codecs() -> list[Codec[Any, Any]]:
    """Protobuf binary and JSON over the ``google.protobuf`` classes, decoding failures made clear.

    JSON with a field the message does not have is refused (INVALID_ARGUMENT naming it) rather than
    ignored: a typo in a hand-written request (``"source"`` for ``"sources"``) must not silently drop
    what the caller meant. The page's client is generated from the protos this gateway serves."""
    return [
        _Decoding(google_protobuf_binary_codec()),
        _Decoding(google_protobuf_json_codec(ignore_unknown_fields=False)),
    ]


class _Context:
    """What a servicer method may ask of its gRPC context, answered from the Connect request."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx

    def time_remaining(self) -> float | None:
        remaining_ms = self._ctx.timeout_ms
        return None if remaining_ms is None else max(0.0, remaining_ms / 1000)


# -- the adapter -----------------------------------------------------------------------------------


@dataclass
class _Call:
    """One admitted call: its method, when it started, and whether its handler ran (and logged)."""

    method: str
    started: float
    handled: bool = False


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("zx_connect_call", default=None)

# Prometheus, beside the gRPC port's grpc_server_* (zehanx_runtime.metrics): the same calls made over
# Connect / gRPC-Web on the edge. The method label is one of the service's own methods.
_EDGE_LABELS = ["grpc_service", "grpc_method"]
EDGE_HANDLED = Counter(
    "zx_edge_handled_total",
    "Connect and gRPC-Web calls completed on the web edge, by code.",
    [*_EDGE_LABELS, "grpc_code"],
)
EDGE_HANDLING = Histogram(
    "zx_edge_handling_seconds",
    "Time from a call's headers to its end on the web edge.",
    _EDGE_LABELS,
    buckets=LATENCY_BUCKETS,
)
EDGE_MSG_SENT = Counter("zx_edge_msg_sent_total", "Stream messages sent on the web edge.", _EDGE_LABELS)


class ConnectAdapter:
    """Builds the Connect endpoints of one gRPC service from its descriptor and its servicer."""

    def __init__(
        self,
        service: descriptor.ServiceDescriptor,
        servicer: Any,
        *,
        check: CallCheck | None,
        service_name: str,
        limits: BodyLimits | None = None,
    ) -> None:
        self._service = service
        self._servicer = servicer
        self._check = check
        self._domain = error_domain(service_name)
        self._limits = limits or BodyLimits.of_service(
            service, default_bytes=1024 * 1024, max_compression_ratio=100
        )
        self._log = get_logger("zehanx.rpc")

    @property
    def path(self) -> str:
        return f"/{self._service.full_name}"

    @property
    def limits(self) -> BodyLimits:
        return self._limits

    def endpoints(self) -> dict[str, Any]:
        """``{"/pkg.v1.Service/Method": Endpoint}`` for every method of the service."""
        found: dict[str, Any] = {}
        for method in self._service.methods:
            if method.client_streaming:
                continue  # Connect over HTTP/1.1 cannot stream requests: gRPC only (PredictStream)
            info = MethodInfo(
                name=method.name,
                service_name=self._service.full_name,
                input=message_factory.GetMessageClass(method.input_type),
                output=message_factory.GetMessageClass(method.output_type),
                idempotency_level=_IDEMPOTENCY[method.GetOptions().idempotency_level],
            )
            handler = getattr(self._servicer, method.name)
            full = f"{self.path}/{method.name}"
            if method.server_streaming:
                found[full] = Endpoint.server_stream(info, self._streaming(full, handler))
            else:
                found[full] = Endpoint.unary(info, self._unary(full, handler))
        return found

    # -- before the body: connectrpc's metadata interceptor ---------------------------------------

    async def on_start(self, ctx: RequestContext[Any, Any]) -> _Call:
        """Admit a call on its headers alone: log context, credentials, declared body size."""
        method = f"/{ctx.method.service_name}/{ctx.method.name}"
        call = _Call(method, time.perf_counter())
        _CALL.set(call)
        metadata = _metadata(ctx.request_headers)
        request_id = metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method, request_id=request_id[:128], protocol="connect")
        if job_id := metadata.get(JOB_ID_KEY):
            structlog.contextvars.bind_contextvars(job_id=job_id[:128])
        try:
            if self._check is not None:
                for name in ("authorization", "x-api-key"):
                    if len(metadata.get(name, "")) > MAX_CREDENTIAL_CHARS:
                        raise errors.Unauthenticated(
                            f"the {name} header is longer than any credential ({MAX_CREDENTIAL_CHARS} "
                            "characters at most)",
                            reason="CREDENTIALS_MALFORMED",
                        )
                await self._check(method, metadata, None)
            declared = metadata.get("content-length", "").strip()
            limit = self._limits.of(method)
            if declared and (not declared.isdigit() or len(declared) > 18 or int(declared) > limit):
                raise _too_large("the request body", declared[:20], limit)
        except BaseException as exc:
            outcome, mapped = self._outcome(exc)
            self._log_call(outcome, call.started)
            if mapped is None:
                raise
            raise mapped from None
        return call

    async def on_end(self, call: _Call, ctx: RequestContext[Any, Any], error: Exception | None) -> None:
        """Log a call refused after admission but before its handler (body too large, bad gzip…)."""
        if error is not None and not call.handled:
            outcome, _ = self._outcome(error)
            self._log_call(outcome, call.started)

    # -- per call -----------------------------------------------------------------------------

    def _unary(self, method: str, handler: Callable[[Any, Any], Awaitable[Any]]) -> Any:
        async def call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
            started = await self._enter(method, ctx)
            outcome = "OK"
            with _span(method, ctx) as span:
                try:
                    request = await self._admit(method, request)
                    return await handler(request, _Context(ctx))
                except BaseException as exc:
                    outcome, mapped = self._outcome(exc)
                    if mapped is None:
                        raise
                    raise mapped from None
                finally:
                    tracing.end_status(span, outcome)
                    self._log_call(outcome, started)

        return call

    def _streaming(self, method: str, handler: Callable[[Any, Any], AsyncIterator[Any]]) -> Any:
        async def call(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
            started = await self._enter(method, ctx)
            outcome = "OK"
            sent = 0
            inner: AsyncIterator[Any] | None = None
            with _span(method, ctx) as span:
                try:
                    request = await self._admit(method, request)
                    inner = handler(request, _Context(ctx))
                    async for item in inner:
                        sent += 1
                        yield item
                except BaseException as exc:
                    outcome, mapped = self._outcome(exc)
                    if mapped is None:
                        raise
                    raise mapped from None
                finally:
                    # Close the servicer's stream now (its finally blocks unsubscribe), not at GC time.
                    aclose = getattr(inner, "aclose", None)
                    if aclose is not None:
                        await aclose()
                    tracing.end_status(span, outcome)
                    self._log_call(outcome, started, messages=sent)

        return call

    async def _enter(self, method: str, ctx: RequestContext[Any, Any]) -> float:
        """The handler's start: the call admitted on its headers (admitted here when it was not)."""
        call = _CALL.get()
        if call is None or call.method != method:
            call = await self.on_start(ctx)
        call.handled = True
        return call.started

    async def _admit(self, method: str, request: Any) -> Any:
        """The request decoded (in a thread), its job id logged, validated."""
        if isinstance(request, Undecoded):
            limit = self._limits.of(method)
            ratio = self._limits.max_compression_ratio
            if request.inline:
                request = request.decode(limit, ratio)
            else:
                loop = asyncio.get_running_loop()
                request = await loop.run_in_executor(_decoder(), request.decode, limit, ratio)
        if job_id := _field(request, "job_id"):
            structlog.contextvars.bind_contextvars(job_id=job_id)
        validate(request)
        return request

    def _outcome(self, exc: BaseException) -> tuple[str, ConnectError | None]:
        """The outcome to log and the Connect error to raise instead (None: re-raise as is)."""
        if isinstance(exc, errors.DomainError):
            return exc.code, connect_error(exc, domain=self._domain)
        if isinstance(exc, ConnectError):
            return exc.code.name, None
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            return "CANCELLED", None
        if isinstance(exc, NotImplementedError):
            unimplemented = errors.Unimplemented("method not implemented", reason="NOT_IMPLEMENTED")
            return "UNIMPLEMENTED", connect_error(unimplemented, domain=self._domain)
        if isinstance(exc, Exception):
            self._log.exception("unhandled error in handler")
            internal = errors.Internal("internal error; see the service log")
            return "INTERNAL", connect_error(internal, domain=self._domain)
        return "CANCELLED", None

    def _log_call(self, outcome: str, started: float, **extra: Any) -> None:
        call = _CALL.get()
        service, _, name = (call.method if call else "/unknown/unknown").lstrip("/").partition("/")
        EDGE_HANDLED.labels(service, name, outcome).inc()
        EDGE_HANDLING.labels(service, name).observe(time.perf_counter() - started)
        if extra.get("messages"):
            EDGE_MSG_SENT.labels(service, name).inc(int(extra["messages"]))
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        log = self._log.info if outcome in ("OK", "CANCELLED", "NOT_FOUND") else self._log.warning
        log("rpc", code=outcome, duration_ms=duration_ms, **extra)
        structlog.contextvars.clear_contextvars()


class ConnectService(ConnectASGIApplication[Any]):
    """The ASGI application answering one service's Connect (and gRPC-Web) calls.

    The adapter is its leading metadata interceptor (it authenticates before any body is read), its
    gzip and codecs leave decoding to the handler, and each method's body is held to its limit."""

    def __init__(self, adapter: ConnectAdapter) -> None:
        super().__init__(
            service=adapter,
            endpoints=lambda svc: svc.endpoints(),
            interceptors=[adapter],
            # Each method's own limit is enforced by _BodyGuard; this is connectrpc's outer bound.
            read_max_bytes=adapter.limits.largest,
            compressions=[DeferredGzip()],
            codecs=codecs(),
        )
        self._path = adapter.path
        self._limits = adapter.limits

    @property
    def path(self) -> str:
        return self._path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        guard = _BodyGuard(scope, receive, send, self._limits.of(scope["path"]))
        await super().__call__(scope, guard.receive, guard.send)


def _span(method: str, ctx: RequestContext[Any, Any]) -> AbstractContextManager[Any]:
    """The call's SERVER span on the edge, continuing the W3C trace context of the HTTP request
    (``traceparent``, ``tracestate``), as the gRPC port's interceptor continues gRPC metadata's."""
    headers = ctx.request_headers
    carrier = {name: headers[name] for name in ("traceparent", "tracestate") if name in headers}
    return tracing.server_span(method, carrier, system="connect_rpc")


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """HTTP headers as gRPC metadata: lower-case names, one value each."""
    return {name.lower(): value for name, value in headers.items()}


def _field(request: Any, name: str) -> str | None:
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    return (getattr(request, name) or None) if name in fields else None
