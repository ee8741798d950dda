"""What a sandboxed program prints, turned into a run's events: log lines, metrics, checkpoints.

The executor streams a run as byte chunks of stdout and stderr, the program's ``zxrt`` records
(``@@zx:`` lines, already parsed by the executor) and the files it produced. :func:`read_output` reads
that stream once: it forwards whole output lines as :class:`LogLine` events, validates each record
(``records.parse_record``) into metrics, checkpoints and the run's final report, and fills a
:class:`ProgramRun` with what the caller judges afterwards (the result, the files, the stderr tail).

Why the trainer splits lines and caps their rate again, after the executor: the executor is a port
(local sandbox, Ray, E2B, or a third party speaking the proto) and its ``ExecOutput`` messages are
chunks, not lines. The run's event stream, stored by the gateway for every watcher, needs whole lines
of bounded length at a bounded rate whatever the backend did: defence in depth, at the cost of one pass
over the bytes.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from zehanx_runtime.program_output import RECORD_PREFIX

from zehanx_trainer.domain import CheckpointSaved, LogLine, MetricsReported, TrainEvent
from zehanx_trainer.executor_port import ExecEvent, ExecMetric, ExecOutput, ExecProducedFile, ExecResult
from zehanx_trainer.model_card import CurveSummary
from zehanx_trainer.records import (
    CheckpointRecord,
    ErrorRecord,
    FinalRecord,
    LogRecord,
    MetricRecord,
    ModelRecord,
    PhaseRecord,
    RecordError,
    parse_record,
)
from zehanx_trainer.weights import WeightsSummary

MAX_LOG_LINE_BYTES = 16 * 1024
STDERR_TAIL_BYTES = 32 * 1024


@dataclass
class ProgramRun:
    """What one execution of train.py or predict.py left behind."""

    result: ExecResult | None = None
    files: dict[str, ExecProducedFile] = field(default_factory=dict)
    stderr_tail: bytearray = field(default_factory=bytearray)
    error: ErrorRecord | None = None
    phase: str = ""
    final: FinalRecord | None = None
    model: ModelRecord | None = None
    curve: CurveSummary = field(default_factory=CurveSummary)
    invalid_records: int = 0
    dropped_lines: int = 0
    #: What ``_train_failure`` found in a valid model (set only when it returned None).
    weights: WeightsSummary | None = None
    model_config: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.succeeded

    def stderr_text(self) -> str:
        return bytes(self.stderr_tail).decode("utf-8", "replace")


class LineSplitter:
    """Chunks of one stream into lines; a line longer than MAX_LOG_LINE_BYTES is cut and flagged."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.skipping = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        self.buffer += data
        lines: list[tuple[bytes, bool]] = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LOG_LINE_BYTES:
                    if not self.skipping:
                        lines.append((bytes(self.buffer[:MAX_LOG_LINE_BYTES]), True))
                    self.skipping = True
                    self.buffer.clear()
                return lines
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if self.skipping:
                self.skipping = False
                continue
            if len(line) > MAX_LOG_LINE_BYTES:
                lines.append((line[:MAX_LOG_LINE_BYTES], True))
            else:
                lines.append((line, False))

    def flush(self) -> list[tuple[bytes, bool]]:
        rest, self.buffer = bytes(self.buffer), bytearray()
        if rest and not self.skipping:
            return [(rest[:MAX_LOG_LINE_BYTES], len(rest) > MAX_LOG_LINE_BYTES)]
        return []


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _platform(text: str) -> LogLine:
    return LogLine("platform", "", text)


async def read_output(
    events: AsyncIterator[ExecEvent],
    run: ProgramRun,
    *,
    smoke: bool,
    metrics: bool,
    lines_per_s: float,
    burst: int,
) -> AsyncIterator[TrainEvent]:
    """The events of one program run as they come; ``run`` holds what it left behind at the end."""
    splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
    bucket = TokenBucket(lines_per_s, burst)
    warned_invalid = 0
    warned_nan = False
    last_epoch = 0

    def lines_of(stream: str, pieces: list[tuple[bytes, bool]]) -> list[LogLine]:
        out = []
        for raw, truncated in pieces:
            if stream == "stdout" and raw.startswith(RECORD_PREFIX):
                continue
            if bucket.take():
                out.append(LogLine("program", stream, raw.decode("utf-8", "replace").rstrip("\r"), truncated))
            else:
                run.dropped_lines += 1
        return out

    async for event in events:
        if isinstance(event, ExecOutput):
            if event.stream == "stderr":
                run.stderr_tail += event.data
                del run.stderr_tail[:-STDERR_TAIL_BYTES]
            for line in lines_of(event.stream, splitters[event.stream].feed(event.data)):
                yield line
        elif isinstance(event, ExecMetric):
            try:
                record = parse_record(event.payload)
            except RecordError as exc:
                run.invalid_records += 1
                if warned_invalid < 3:
                    warned_invalid += 1
                    yield _platform(f"ignored a zxrt record that breaks the contract ({exc.reason}): {exc}")
                continue
            if isinstance(record, MetricRecord):
                if record.epoch is not None:
                    last_epoch = record.epoch
                run.curve.add(record)
                if record.loss is not None and math.isnan(record.loss) and not warned_nan:
                    warned_nan = True
                    yield _platform(f"warning: the training loss is not finite (step {record.step})")
                if metrics:
                    yield MetricsReported(record, smoke)
            elif isinstance(record, CheckpointRecord):
                yield CheckpointSaved(record.step, last_epoch, record.path, record.sha256, record.size_bytes)
            elif isinstance(record, LogRecord):
                # Under the same bucket as stdout and stderr lines: the metric channel's own cap
                # (200/s) would otherwise store ~17 M log events in a 24 h run.
                if bucket.take():
                    yield LogLine("program", "stdout", f"[{record.level}] {record.message}")
                else:
                    run.dropped_lines += 1
            elif isinstance(record, PhaseRecord):
                run.phase = record.phase
            elif isinstance(record, ErrorRecord):
                run.error = record
            elif isinstance(record, FinalRecord):
                run.final = record
            elif isinstance(record, ModelRecord):
                run.model = record
        elif isinstance(event, ExecProducedFile):
            run.files[event.path] = event
        elif isinstance(event, ExecResult):
            run.result = event
    for stream, splitter in splitters.items():
        for line in lines_of(stream, splitter.flush()):
            yield line
    if run.dropped_lines:
        yield _platform(
            f"{run.dropped_lines} output lines and zxrt log records were not forwarded "
            f"(over {lines_per_s:.0f} lines/s)"
        )
    if run.invalid_records > warned_invalid:
        yield _platform(f"{run.invalid_records} zxrt records in all broke the contract and were ignored")
    if run.result is not None and run.result.dropped_metrics:
        yield _platform(
            f"the executor dropped {run.result.dropped_metrics} metric lines (malformed or over its rate)"
        )
