"""Turning a program's raw stdout/stderr bytes into events: line-buffered output chunks, metric lines
(``@@zx:`` on stdout, parsed as untrusted input), and a shared output byte budget.

Pure and synchronous, so every backend (local pipes, E2B callbacks, the development runner) uses the
same rules: chunks end at line ends (a line longer than 64 KiB is cut; a partial line may be flushed
after a pause), a metric line never also appears as output, and bytes beyond the budget are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from zehanx_executor.domain import Event, Metric, Output, Stream
from zehanx_executor.sandbox.metrics import MAX_LINE_BYTES, PREFIX, MetricGate

CHUNK_BYTES = 64 * 1024


@dataclass
class OutputBudget:
    """stdout + stderr bytes of one run."""

    limit: int
    used: int = 0
    capped: bool = False

    def take(self, data: bytes) -> bytes:
        room = self.limit - self.used
        if len(data) > room:
            data = data[: max(room, 0)]
            self.capped = True
        self.used += len(data)
        return data


class OutputParser:
    """One stream's parser. ``feed`` raw bytes, get events; ``finish`` at EOF."""

    def __init__(self, stream: Stream, gate: MetricGate, budget: OutputBudget) -> None:
        self.stream, self.gate, self.budget = stream, gate, budget
        self._metrics = stream is Stream.STDOUT
        self._pending = bytearray()
        self._discarding = False  # inside an oversized metric line: drop until its newline

    def _maybe_metric(self) -> bool:
        p = self._pending
        return self._metrics and (p.startswith(PREFIX) or PREFIX.startswith(bytes(p)))

    def can_flush_partial(self) -> bool:
        """Whether a partial line is waiting that may be sent without its newline (not a metric)."""
        return bool(self._pending) and not self._discarding and not self._maybe_metric()

    def flush_partial(self) -> list[Event]:
        if not self.can_flush_partial():
            return []
        data = bytes(self._pending)
        self._pending.clear()
        return [Output(self.stream, data)]

    def feed(self, data: bytes) -> list[Event]:
        if self.budget.capped:
            return []
        data = self.budget.take(data)
        self._pending += data
        events: list[Event] = []
        out = bytearray()
        pending = self._pending
        start = 0
        while (nl := pending.find(b"\n", start)) >= 0:
            line = pending[start : nl + 1]
            start = nl + 1
            if self._discarding:
                self._discarding = False
                continue
            if self._metrics and line.startswith(PREFIX):
                if out:  # keep the order the program wrote in
                    events.append(Output(self.stream, bytes(out)))
                    out = bytearray()
                events += self._metric(bytes(line))
                continue
            out += line
            if len(out) >= CHUNK_BYTES:
                events.append(Output(self.stream, bytes(out)))
                out = bytearray()
        del pending[:start]
        if len(pending) > MAX_LINE_BYTES:
            if self._discarding or (self._metrics and pending.startswith(PREFIX)):
                if not self._discarding:
                    self.gate.dropped += 1  # an oversized metric line
                self._discarding = True
            else:
                out += pending
            pending.clear()
        if out:
            events.append(Output(self.stream, bytes(out)))
        if self.budget.capped and pending:
            if not self._discarding and not (self._metrics and pending.startswith(PREFIX)):
                events.append(Output(self.stream, bytes(pending)))
            pending.clear()
        return events

    def finish(self) -> list[Event]:
        """EOF: the last bytes, without a newline, as output (or as a metric line)."""
        pending, self._pending = bytes(self._pending), bytearray()
        if not pending or self._discarding:
            return []
        if self._metrics and pending.startswith(PREFIX):
            return self._metric(pending)
        return [Output(self.stream, pending)]

    def _metric(self, line: bytes) -> list[Event]:
        line = line.rstrip(b"\r\n")
        value = self.gate.admit(line[len(PREFIX) :])
        return [] if value is None else [Metric(value, len(line))]
