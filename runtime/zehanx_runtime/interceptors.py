"""The one server interceptor every service runs.

Per call, in order: bind the RPC name, request id and job id to the log context; check the internal
service token (internal services; health and reflection exempt); decode the request without ever
answering INTERNAL for bad bytes; validate it against its protovalidate rules; run the handler; map
typed domain errors to status codes (with ErrorInfo) in one place; write one log line and count the
call in the gRPC server metrics (:mod:`zehanx_runtime.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import structlog

from zehanx_runtime import errors, metrics, tracing
from zehanx_runtime.logging import get_logger
from zehanx_runtime.status import error_domain, to_grpc_status
from zehanx_runtime.validation import validate

REQUEST_ID_KEY = "x-request-id"
JOB_ID_KEY = "x-zx-job-id"
SERVICE_TOKEN_KEY = "x-zx-service-token"

#: Methods any caller may use without a service token.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

#: Extra per-call check (e.g. the gateway's user auth). Returns nothing or raises a DomainError.
CallCheck = Callable[[str, dict[str, str], Any], Awaitable[None]]


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Logging context, auth, decoding, validation and error mapping for every RPC."""

    def __init__(
        self,
        *,
        service_name: str,
        service_token: str | None,
        validate_requests: bool = True,
        extra_check: CallCheck | None = None,
    ) -> None:
        self._service = service_name
        self._domain = error_domain(service_name)
        self._token = service_token.encode() if service_token else None
        self._validate = validate_requests
        self._extra_check = extra_check
        self._log = get_logger("zehanx.rpc")
        #: method -> (the servicer's handler, ours around it): wrapped once per method, not per call.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cast("grpc.RpcMethodHandler[Any, Any]", cached[1])
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        exempt = method.startswith(EXEMPT_PREFIXES)
        deserialize = _safe(handler.request_deserializer)
        rpc = metrics.rpc_of(
            method, client_streaming=handler.request_streaming, server_streaming=handler.response_streaming
        )

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await self._run_unary(method, rpc, exempt, request, context, inner_uu)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
            )
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async for item in self._run_stream(method, rpc, exempt, request, context, inner_us):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await self._run_unary(
                    method, rpc, exempt, self._checked(requests, rpc), context, inner_su
                )

            return grpc.stream_unary_rpc_method_handler(
                stream_unary,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for item in self._run_stream(
                method, rpc, exempt, self._checked(requests, rpc), context, inner_ss
            ):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )

    # -- per-call steps -------------------------------------------------------------------------

    def _bind(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        request_id = metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex
        job_id = metadata.get(JOB_ID_KEY) or _field(request, "job_id")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method, request_id=request_id)
        if job_id:
            structlog.contextvars.bind_contextvars(job_id=job_id)
        return metadata

    async def _admit(self, method: str, exempt: bool, request: Any, metadata: dict[str, str]) -> None:
        if not exempt and self._token is not None:
            given = metadata.get(SERVICE_TOKEN_KEY)
            if not given:
                raise errors.Unauthenticated(
                    f"{self._service} is an internal service: send the service token in {SERVICE_TOKEN_KEY}",
                    reason="SERVICE_TOKEN_MISSING",
                )
            if not hmac.compare_digest(given.encode(), self._token):
                raise errors.Unauthenticated("service token not accepted", reason="SERVICE_TOKEN_INVALID")
        if not exempt and self._extra_check is not None:
            await self._extra_check(method, metadata, request)
        if isinstance(request, _Undecodable):
            raise errors.InvalidArgument(
                f"request could not be decoded: {request.error}", reason="UNDECODABLE_REQUEST"
            )
        if self._validate and not exempt and request is not None and not _is_iterator(request):
            validate(request)

    async def _checked(self, requests: AsyncIterator[Any], rpc: metrics.Rpc) -> AsyncIterator[Any]:
        async for request in requests:
            rpc.received.inc()
            if isinstance(request, _Undecodable):
                raise errors.InvalidArgument(
                    f"request could not be decoded: {request.error}", reason="UNDECODABLE_REQUEST"
                )
            if self._validate:
                validate(request)
            yield request

    async def _run_unary(
        self,
        method: str,
        rpc: metrics.Rpc,
        exempt: bool,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        inner: Any,
    ) -> Any:
        metadata = self._bind(method, request, context)
        started = time.perf_counter()
        call = metrics.CallMetrics(rpc, started)
        outcome = "OK"
        with self._span(method, exempt, metadata) as span:
            try:
                await self._admit(method, exempt, request, metadata)
                return await inner(request, context)
            except errors.DomainError as err:
                outcome = err.code
                await self._abort(context, err)
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except Exception as exc:
                outcome = self._outcome_of(context, exc)
                await self._abort_unexpected(context, outcome)
                raise
            finally:
                call.done(outcome, time.perf_counter())
                if span is not None:
                    tracing.end_status(span, outcome)
                self._log_call(exempt, outcome, started)

    async def _run_stream(
        self,
        method: str,
        rpc: metrics.Rpc,
        exempt: bool,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        inner: Any,
    ) -> AsyncIterator[Any]:
        metadata = self._bind(method, request, context)
        started = time.perf_counter()
        call = metrics.CallMetrics(rpc, started)
        outcome = "OK"
        sent = 0
        result: Any = None
        with self._span(method, exempt, metadata) as span:
            try:
                await self._admit(method, exempt, request, metadata)
                result = inner(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        sent += 1
                        call.sent()
                        yield item
                else:
                    await result
            except errors.DomainError as err:
                outcome = err.code
                await self._abort(context, err)
            except (asyncio.CancelledError, GeneratorExit):
                outcome = "CANCELLED"
                raise
            except Exception as exc:
                outcome = self._outcome_of(context, exc)
                await self._abort_unexpected(context, outcome)
                raise
            finally:
                # Close the handler's stream now (its finally blocks: a WatchJob unsubscribes), not
                # whenever the garbage collector gets to it.
                aclose = getattr(result, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
                call.done(outcome, time.perf_counter())
                if span is not None:
                    tracing.end_status(span, outcome)
                self._log_call(exempt, outcome, started, messages=sent)

    @staticmethod
    def _span(method: str, exempt: bool, metadata: dict[str, str]) -> Any:
        """The call's SERVER span (none for health checks and reflection: probes every second)."""
        return contextlib.nullcontext(None) if exempt else tracing.server_span(method, metadata)

    @staticmethod
    def _outcome_of(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> str:
        # context.abort() raises AbortError after setting the code: that is a deliberate answer.
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            return code.name if isinstance(code, grpc.StatusCode) else str(code or "ABORTED")
        if isinstance(exc, NotImplementedError):
            return "UNIMPLEMENTED"
        return "INTERNAL"

    async def _abort_unexpected(self, context: grpc.aio.ServicerContext[Any, Any], outcome: str) -> None:
        if outcome == "UNIMPLEMENTED":
            await self._abort(
                context, errors.Unimplemented("method not implemented", reason="NOT_IMPLEMENTED")
            )
        if outcome == "INTERNAL":
            self._log.exception("unhandled error in handler")
            await self._abort(context, errors.Internal("internal error; see the service log"))

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], err: errors.DomainError) -> None:
        status = to_grpc_status(err, domain=self._domain)
        await context.abort(status.code, status.details, status.trailing_metadata)

    def _log_call(self, exempt: bool, outcome: str, started: float, **extra: Any) -> None:
        if exempt and outcome == "OK":
            return  # health probes every second would drown the log
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        log = self._log.info if outcome in ("OK", "CANCELLED", "NOT_FOUND") else self._log.warning
        log("rpc", code=outcome, duration_ms=duration_ms, **extra)
        structlog.contextvars.clear_contextvars()


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so bad bytes become INVALID_ARGUMENT instead of INTERNAL."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Undecodable(exc)

    return decode


def _field(request: Any, name: str) -> str | None:
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is not None and name in descriptor.fields_by_name:
        value = getattr(request, name)
        return value or None
    return None


def _is_iterator(request: Any) -> bool:
    return hasattr(request, "__aiter__")
