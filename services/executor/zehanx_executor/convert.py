"""Protobuf (``zehanx.executor.v1``) ↔ the executor's domain values (:mod:`zehanx_executor.domain`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from zehanx.common.v1 import log_pb2
from zehanx.executor.v1 import executor_service_pb2 as pb
from zehanx_runtime.durations import to_duration, to_seconds
from zehanx_runtime.enums import proto_numbers

from zehanx_executor.domain import (
    Event,
    ExitReason,
    FileChunk,
    Finished,
    JobFile,
    Limits,
    Metric,
    Output,
    Reply,
    SessionEvent,
    Started,
    Stream,
)
from zehanx_executor.service import ExecuteInput, LimitRequest, Ready, SessionInput

_REASONS = proto_numbers(ExitReason, pb.ExitReason, "EXIT_REASON_")
_STREAMS = {Stream.STDOUT: log_pb2.OUTPUT_STREAM_STDOUT, Stream.STDERR: log_pb2.OUTPUT_STREAM_STDERR}


def _now() -> timestamp_pb2.Timestamp:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    return now


def _files(files: Iterable[pb.ExecutionFile]) -> tuple[JobFile, ...]:
    return tuple(JobFile(f.path, f.content, f.executable) for f in files)


def to_limits(lim: pb.Limits) -> LimitRequest:
    return LimitRequest(
        wall_time_s=to_seconds(lim.max_wall_duration) if lim.HasField("max_wall_duration") else None,
        cpu_time_s=to_seconds(lim.max_cpu_duration) if lim.HasField("max_cpu_duration") else None,
        memory_bytes=lim.max_memory_bytes or None,
        max_processes=lim.max_processes or None,
        disk_bytes=lim.max_disk_bytes or None,
        output_bytes=lim.max_output_bytes or None,
        file_size_bytes=lim.max_file_size_bytes or None,
        gpu=lim.gpu,
        cpus=lim.max_cpus or None,
    )


def _program(message: pb.ExecuteRequest | pb.SessionStart) -> dict[str, Any]:
    """The fields an Execute request and a Session's start share (same numbers, same meaning)."""
    return {
        "execution_id": message.execution_id or str(uuid.uuid4()),
        "job_id": message.job_id,
        "argv": tuple(message.argv),
        "files": _files(message.files),
        "env": dict(message.env),
        "limits": to_limits(message.limits),
    }


def to_input(request: pb.ExecuteRequest, *, sandbox_api_key: str | None = None) -> ExecuteInput:
    return ExecuteInput(
        **_program(request),
        collect=tuple(request.collect),
        collect_max_bytes=request.collect_max_bytes,
        sandbox_api_key=sandbox_api_key,
    )


def limits_pb(limits: Limits) -> pb.Limits:
    return pb.Limits(
        max_wall_duration=to_duration(limits.wall_time_s),
        max_cpu_duration=to_duration(limits.cpu_time_s),
        max_memory_bytes=limits.memory_bytes,
        max_processes=limits.max_processes,
        max_disk_bytes=limits.disk_bytes,
        max_output_bytes=limits.output_bytes,
        max_file_size_bytes=limits.file_size_bytes,
        gpu=limits.gpu,
        max_cpus=limits.cpus,
    )


def to_session_input(start: pb.SessionStart) -> SessionInput:
    return SessionInput(
        **_program(start),
        idle_s=to_seconds(start.max_idle_duration) if start.HasField("max_idle_duration") else None,
    )


def result_pb(event: Finished) -> pb.ExecutionResult:
    u = event.usage
    return pb.ExecutionResult(
        reason=_REASONS[event.reason],
        exit_code=event.exit_code,
        signal=event.signal,
        message=event.message,
        usage=pb.ResourceUsage(
            wall_duration=to_duration(u.wall_time_s),
            cpu_duration=to_duration(u.cpu_time_s),
            max_rss_bytes=u.max_rss_bytes,
            output_bytes=u.output_bytes,
            disk_bytes=u.disk_bytes,
        ),
        dropped_metric_count=u.metric_lines_dropped,
    )


def to_session_response(event: Ready | SessionEvent, sequence: int) -> pb.SessionResponse:
    out = pb.SessionResponse(sequence=sequence, event_time=_now())
    if isinstance(event, Ready):
        s = event.started
        out.ready.CopyFrom(
            pb.SessionReady(
                execution_id=s.execution_id,
                backend=s.backend,
                sandbox_description=s.description,
                effective_limits=limits_pb(s.limits),
                max_idle_duration=to_duration(event.idle_s),
                start_duration=to_duration(event.start_s),
            )
        )
    elif isinstance(event, Reply):
        out.reply.CopyFrom(
            pb.SessionReply(
                call_id=event.call_id, payload=event.payload, call_duration=to_duration(event.duration_s)
            )
        )
    elif isinstance(event, Output):
        out.output.CopyFrom(pb.OutputChunk(stream=_STREAMS[event.stream], data=event.data))
    elif isinstance(event, Finished):
        out.ended.CopyFrom(result_pb(event))
    else:  # pragma: no cover - a session yields no other events
        raise TypeError(f"unexpected session event {event!r}")
    return out


def to_response(event: Event, sequence: int) -> pb.ExecuteResponse:
    out = pb.ExecuteResponse(sequence=sequence, event_time=_now())
    if isinstance(event, Started):
        out.started.CopyFrom(
            pb.ExecutionStarted(
                execution_id=event.execution_id,
                backend=event.backend,
                sandbox_description=event.description,
                effective_limits=limits_pb(event.limits),
            )
        )
    elif isinstance(event, Output):
        out.output.CopyFrom(pb.OutputChunk(stream=_STREAMS[event.stream], data=event.data))
    elif isinstance(event, Metric):
        payload = struct_pb2.Struct()
        payload.update(event.payload)
        out.metric.CopyFrom(pb.MetricRecord(payload=payload, raw_line_bytes=event.raw_line_bytes))
    elif isinstance(event, FileChunk):
        out.file.CopyFrom(
            pb.ProducedFile(
                path=event.path,
                size_bytes=event.size,
                sha256=event.sha256,
                content_included=event.content_included,
                offset=event.offset,
                data=event.data,
                last_chunk=event.last_chunk,
            )
        )
    elif isinstance(event, Finished):
        out.result.CopyFrom(result_pb(event))
    else:  # pragma: no cover - the event union is closed
        raise TypeError(f"unknown event {event!r}")
    return out
