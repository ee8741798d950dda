"""The :class:`~zehanx_trainer.executor_port.Executor` port over gRPC (``ExecutorService.Execute``).

Converts the request out and the events in, reassembles chunked produced files (checking size and
sha256); the executor's RPC errors become the trainer's domain errors by
:func:`zehanx_runtime.client.to_domain_error`, worded here. Closing the event
iterator cancels the call, which makes the executor kill the sandbox.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import json_format
from zehanx.common.v1 import log_pb2
from zehanx.executor.v1 import executor_service_pb2 as pb
from zehanx.executor.v1 import executor_service_pb2_grpc as rpc
from zehanx_runtime import provider_keys
from zehanx_runtime.client import Wording, call_metadata, internal_channel, to_domain_error
from zehanx_runtime.durations import to_duration, to_seconds
from zehanx_runtime.errors import DomainError, Internal

from zehanx_trainer.executor_port import (
    ExecEvent,
    ExecFile,
    ExecLimits,
    ExecMetric,
    ExecOutput,
    ExecProducedFile,
    ExecRequest,
    ExecResult,
    ExecStarted,
    ExecUsage,
    ExitReason,
    SessionEnded,
    SessionSpec,
)

#: The job owner's own E2B key for the Train call being handled (set by the servicer in that call's
#: task): passed on to the executor as call metadata only, never in the request's env or files.
sandbox_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("zx_sandbox_key", default=None)

_REASONS = {
    pb.EXIT_REASON_COMPLETED: ExitReason.COMPLETED,
    pb.EXIT_REASON_FAILED: ExitReason.FAILED,
    pb.EXIT_REASON_TIMEOUT: ExitReason.TIMEOUT,
    pb.EXIT_REASON_MEMORY: ExitReason.MEMORY,
    pb.EXIT_REASON_OUTPUT_LIMIT: ExitReason.OUTPUT_LIMIT,
    pb.EXIT_REASON_DISK_LIMIT: ExitReason.DISK_LIMIT,
    pb.EXIT_REASON_CANCELLED: ExitReason.CANCELLED,
    pb.EXIT_REASON_SANDBOX_ERROR: ExitReason.SANDBOX_ERROR,
    pb.EXIT_REASON_NODE_LOST: ExitReason.NODE_LOST,
}


_CODE = grpc.StatusCode
#: How the executor's failures read in a training run; the rest is ``to_domain_error``'s policy.
_WORDING = {
    _CODE.UNAVAILABLE: Wording("the executor at {address} is unavailable: {detail}", "EXECUTOR_UNAVAILABLE"),
    _CODE.RESOURCE_EXHAUSTED: Wording("the executor has no free sandbox: {detail}", "EXECUTOR_BUSY"),
    _CODE.DEADLINE_EXCEEDED: Wording("the executor call ran out of time: {detail}", "DEADLINE_EXCEEDED"),
    _CODE.FAILED_PRECONDITION: Wording("the executor cannot run this: {detail}", "EXECUTOR_PRECONDITION"),
    # The trainer built a request the executor rejects: a bug here, not the caller's input.
    _CODE.INVALID_ARGUMENT: Wording("the executor refused the request: {detail}", "EXECUTOR_ERROR", Internal),
}


def _limits(limits: ExecLimits) -> pb.Limits:
    return pb.Limits(
        max_wall_duration=to_duration(limits.wall_s),
        max_memory_bytes=limits.memory_bytes or 0,
        max_processes=limits.max_processes or 0,
        max_disk_bytes=limits.disk_bytes or 0,
        max_output_bytes=limits.output_bytes or 0,
        max_file_size_bytes=limits.file_size_bytes or 0,
        gpu=limits.gpu,
    )


def _files(files: Iterable[ExecFile]) -> list[pb.ExecutionFile]:
    return [pb.ExecutionFile(path=f.path, content=f.content, executable=f.executable) for f in files]


def _program(request: ExecRequest | SessionSpec) -> dict[str, Any]:
    """The fields an Execute request and a Session's start share (same numbers, same meaning)."""
    return {
        "job_id": request.job_id,
        "files": _files(request.files),
        "argv": list(request.argv),
        "env": dict(request.env),
        "limits": _limits(request.limits),
    }


def to_request(request: ExecRequest) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(
        **_program(request), collect=list(request.collect), collect_max_bytes=request.collect_max_bytes
    )


def to_session_start(spec: SessionSpec) -> pb.SessionRequest:
    return pb.SessionRequest(
        start=pb.SessionStart(**_program(spec), max_idle_duration=to_duration(spec.idle_timeout_s))
    )


def _error(exc: grpc.aio.AioRpcError, address: str) -> DomainError:
    return to_domain_error(
        exc,
        service="executor",
        address=address,
        token_variable="ZX_TRAINER_EXECUTOR_TOKEN (unset: ZX_TRAINER_SERVICE_TOKEN)",
        wording=_WORDING,
    )


class GrpcExecutor:
    """Calls a remote ExecutorService with the service token."""

    def __init__(self, address: str, token: str | None, *, channel: grpc.aio.Channel | None = None) -> None:
        self.address = address
        self._token = token
        self._channel = channel or internal_channel(address)
        self._stub = rpc.ExecutorServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def execute(self, request: ExecRequest, *, timeout_s: float) -> AsyncIterator[ExecEvent]:
        metadata = list(call_metadata(self._token, job_id=request.job_id or None))
        key = sandbox_key.get()
        if key:
            metadata.append((provider_keys.E2B_KEY, key))
        call = self._stub.Execute(to_request(request), metadata=metadata, timeout=timeout_s)
        chunks: dict[str, bytearray] = {}
        try:
            async for response in call:
                event = _convert(response, chunks)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address) from None
        finally:
            call.cancel()

    async def open_session(self, spec: SessionSpec, *, timeout_s: float) -> GrpcSession:
        """Starts a session and waits for its ``ready`` (at most ``timeout_s``)."""
        metadata = list(call_metadata(self._token, job_id=spec.job_id or None))
        key = sandbox_key.get()
        if key:
            metadata.append((provider_keys.E2B_KEY, key))
        call = self._stub.Session(metadata=metadata)
        session = GrpcSession(call, self.address)
        try:
            await asyncio.wait_for(session.start(spec), timeout_s)
        except BaseException:
            call.cancel()
            raise
        return session


class GrpcSession:
    """One ``ExecutorService.Session`` stream: calls go out with ids, replies are matched back to them.

    A reader task owns the stream's responses: replies resolve their call's future, stderr is kept as a
    tail (32 KiB), ``ended`` fails every waiting call with :class:`SessionEnded`. A failure of the
    stream itself (the executor went away) fails them with the executor's domain error.
    """

    def __init__(self, call: grpc.aio.StreamStreamCall, address: str) -> None:
        self._call = call
        self._address = address
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._stderr = bytearray()
        self._ended: ExecResult | None = None
        self._failure: BaseException | None = None
        self._reader: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self.execution_id = ""
        self.backend = ""
        self.start_s = 0.0

    @property
    def ended(self) -> ExecResult | None:
        return self._ended

    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    async def start(self, spec: SessionSpec) -> None:
        started = time.monotonic()
        try:
            await self._call.write(to_session_start(spec))
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    raise Internal("the executor ended the session stream without an answer")
                kind = response.WhichOneof("event")
                if kind == "ready":
                    r = response.ready
                    self.execution_id, self.backend = r.execution_id, r.backend
                    self.start_s = to_seconds(r.start_duration) if r.HasField("start_duration") else 0.0
                    break
                if kind == "output":
                    self._keep_output(response)
                elif kind == "ended":
                    self._ended = _result(response.ended)
                    raise SessionEnded(self._ended, self.stderr_tail())
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self._address) from None
        self.start_s = self.start_s or time.monotonic() - started
        self._reader = asyncio.create_task(self._read(), name=f"session-{self.execution_id}")

    def _keep_output(self, response: pb.SessionResponse) -> None:
        self._stderr += response.output.data
        del self._stderr[:-32768]

    async def _read(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                kind = response.WhichOneof("event")
                if kind == "reply":
                    future = self._pending.pop(response.reply.call_id, None)
                    if future is not None and not future.done():
                        future.set_result(response.reply.payload)
                elif kind == "output":
                    self._keep_output(response)
                elif kind == "ended":
                    self._ended = _result(response.ended)
                    break
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self._failure = _error(exc, self._address)
        except asyncio.CancelledError:
            pass
        finally:
            if self._ended is None:
                self._ended = ExecResult(
                    ExitReason.SANDBOX_ERROR,
                    -1,
                    0,
                    str(self._failure or "the session stream ended"),
                    ExecUsage(),
                )
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self._failure or SessionEnded(self._ended, self.stderr_tail()))
            self._pending.clear()
            self._done.set()

    async def call(self, payload: bytes, *, timeout_s: float) -> bytes:
        if self._ended is not None:
            raise self._failure or SessionEnded(self._ended, self.stderr_tail())
        self._next_id += 1
        call_id = self._next_id
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            await self._call.write(pb.SessionRequest(call=pb.SessionCall(call_id=call_id, payload=payload)))
        except grpc.aio.AioRpcError as exc:
            self._pending.pop(call_id, None)
            raise _error(exc, self._address) from None
        except asyncio.InvalidStateError:
            self._pending.pop(call_id, None)
            await self._done.wait()
            raise self._failure or SessionEnded(
                self._ended or ExecResult(ExitReason.SANDBOX_ERROR, -1, 0, "", ExecUsage()),
                self.stderr_tail(),
            ) from None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        finally:
            self._pending.pop(call_id, None)

    async def close(self, *, kill: bool = False) -> ExecResult | None:
        """Ends the session: half-closes stdin and waits up to 5 s for the process to exit, or kills it."""
        if not kill and self._ended is None:
            try:
                await self._call.done_writing()
                await asyncio.wait_for(self._done.wait(), 5.0)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
                pass
        self._call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        return self._ended


def _result(r: pb.ExecutionResult) -> ExecResult:
    u = r.usage
    return ExecResult(
        reason=_REASONS.get(r.reason, ExitReason.UNSPECIFIED),
        exit_code=r.exit_code,
        signal=r.signal,
        message=r.message,
        usage=ExecUsage(
            wall_s=to_seconds(u.wall_duration),
            cpu_s=to_seconds(u.cpu_duration),
            max_rss_bytes=u.max_rss_bytes,
            output_bytes=u.output_bytes,
            disk_bytes=u.disk_bytes,
        ),
        dropped_metrics=r.dropped_metric_count,
    )


def _convert(response: pb.ExecuteResponse, chunks: dict[str, bytearray]) -> ExecEvent | None:
    kind = response.WhichOneof("event")
    if kind == "started":
        s = response.started
        return ExecStarted(s.execution_id, s.backend, s.sandbox_description)
    if kind == "output":
        stream = "stderr" if response.output.stream == log_pb2.OUTPUT_STREAM_STDERR else "stdout"
        return ExecOutput(stream, response.output.data)
    if kind == "metric":
        return ExecMetric(json_format.MessageToDict(response.metric.payload))
    if kind == "file":
        f = response.file
        if not f.content_included:
            return ExecProducedFile(f.path, f.size_bytes, f.sha256, None)
        buffer = chunks.setdefault(f.path, bytearray())
        if f.offset != len(buffer):
            raise Internal(f"the executor sent {f.path} out of order (offset {f.offset}, have {len(buffer)})")
        buffer += f.data
        if not f.last_chunk:
            return None
        content = bytes(chunks.pop(f.path))
        if len(content) != f.size_bytes or hashlib.sha256(content).hexdigest() != f.sha256:
            raise Internal(
                f"the executor sent {f.path} with a size or sha256 that does not match its content"
            )
        return ExecProducedFile(f.path, f.size_bytes, f.sha256, content)
    if kind == "result":
        return _result(response.result)
    return None
