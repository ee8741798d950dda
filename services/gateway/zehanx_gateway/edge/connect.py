"""GatewayService over the Connect protocol: a thin adapter around the very servicer gRPC serves.

Per call it does what the runtime's gRPC interceptor does, in the same order and with the same code:
bind the log context, authenticate with the gateway's :class:`~zehanx_gateway.auth.Authenticator`
(``authorization: Bearer …`` or ``x-api-key``, as HTTP headers), validate the request against its
protovalidate rules, call the :class:`~zehanx_gateway.servicer.GatewayServicer` method, and turn a typed
domain error into the status the interceptor would send, through the same
:func:`~zehanx_runtime.status.to_grpc_status`: the Connect error carries the same code, message and
details (``google.rpc.ErrorInfo`` and ``google.rpc.BadRequest`` with the field violations).

The endpoints are built from the service descriptor, so an RPC added to the proto is served here as
soon as the servicer implements it. No generated Connect stubs: the messages are the ``*_pb2`` classes
gRPC uses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import structlog
from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import descriptor, descriptor_pb2, message_factory
from google.rpc import status_pb2
from protobuf.wkt import Any as WireAny
from zehanx_runtime import errors
from zehanx_runtime.interceptors import JOB_ID_KEY, REQUEST_ID_KEY
from zehanx_runtime.logging import get_logger
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


class _Decoding(Codec[Any, Any]):
    """A codec whose undecodable input answers INVALID_ARGUMENT (connectrpc would answer UNKNOWN)."""

    def __init__(self, inner: Codec[Any, Any]) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Any) -> bytes:
        return self._inner.encode(message)

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


class ConnectAdapter:
    """Builds the Connect endpoints of one gRPC service from its descriptor and its servicer."""

    def __init__(
        self,
        service: descriptor.ServiceDescriptor,
        servicer: Any,
        *,
        check: CallCheck | None,
        service_name: str,
    ) -> None:
        self._service = service
        self._servicer = servicer
        self._check = check
        self._domain = error_domain(service_name)
        self._log = get_logger("zehanx.rpc")

    @property
    def path(self) -> str:
        return f"/{self._service.full_name}"

    def endpoints(self) -> dict[str, Any]:
        """``{"/pkg.v1.Service/Method": Endpoint}`` for every method of the service."""
        found: dict[str, Any] = {}
        for method in self._service.methods:
            if method.client_streaming:
                raise RuntimeError(
                    f"{method.full_name} streams requests: Connect over HTTP/1.1 cannot serve it"
                )
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

    # -- per call -----------------------------------------------------------------------------

    def _unary(self, method: str, handler: Callable[[Any, Any], Awaitable[Any]]) -> Any:
        async def call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
            started = time.perf_counter()
            outcome = "OK"
            try:
                await self._admit(method, request, ctx)
                return await handler(request, _Context(ctx))
            except BaseException as exc:
                outcome, mapped = self._outcome(exc)
                if mapped is None:
                    raise
                raise mapped from None
            finally:
                self._log_call(outcome, started)

        return call

    def _streaming(self, method: str, handler: Callable[[Any, Any], AsyncIterator[Any]]) -> Any:
        async def call(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            outcome = "OK"
            sent = 0
            inner: AsyncIterator[Any] | None = None
            try:
                await self._admit(method, request, ctx)
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
                self._log_call(outcome, started, messages=sent)

        return call

    async def _admit(self, method: str, request: Any, ctx: RequestContext[Any, Any]) -> None:
        metadata = _metadata(ctx.request_headers)
        request_id = metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex
        job_id = metadata.get(JOB_ID_KEY) or _field(request, "job_id")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method, request_id=request_id, protocol="connect")
        if job_id:
            structlog.contextvars.bind_contextvars(job_id=job_id)
        if self._check is not None:
            await self._check(method, metadata, request)
        validate(request)

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
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        log = self._log.info if outcome in ("OK", "CANCELLED", "NOT_FOUND") else self._log.warning
        log("rpc", code=outcome, duration_ms=duration_ms, **extra)
        structlog.contextvars.clear_contextvars()


class ConnectService(ConnectASGIApplication[Any]):
    """The ASGI application answering one service's Connect (and gRPC-Web) calls."""

    def __init__(self, adapter: ConnectAdapter, *, read_max_bytes: int) -> None:
        super().__init__(
            service=adapter,
            endpoints=lambda svc: svc.endpoints(),
            read_max_bytes=read_max_bytes,
            codecs=codecs(),
        )
        self._path = adapter.path

    @property
    def path(self) -> str:
        return self._path


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """HTTP headers as gRPC metadata: lower-case names, one value each."""
    return {name.lower(): value for name, value in headers.items()}


def _field(request: Any, name: str) -> str | None:
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    return (getattr(request, name) or None) if name in fields else None
