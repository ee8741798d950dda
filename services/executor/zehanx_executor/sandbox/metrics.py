"""Metric lines: ``@@zx:`` followed by one JSON object, printed by the program on stdout.

The prefix and the limits are the program-output protocol's (:mod:`zehanx_runtime.program_output`,
documented at ``MetricRecord`` in the executor's proto).

The program is untrusted, so a metric line is untrusted input: it is size-capped (64 KiB including the
prefix), rate-capped (200 lines per second, token bucket, with a counter of what was dropped), parsed
without NaN/Infinity, and checked against a structural schema: a JSON object whose keys are 1-128
printable characters; values are finite numbers, booleans, null, strings of at most 1024 characters,
or lists/objects of those nested at most 4 deep, 1024 values in all. Anything else is counted as
dropped and never reaches the caller. What the keys mean is the trainer's business.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zehanx_runtime.program_output import MAX_RECORD_LINE_BYTES, MAX_RECORD_LINES_PER_SECOND, RECORD_PREFIX

PREFIX = RECORD_PREFIX
MAX_LINE_BYTES = MAX_RECORD_LINE_BYTES
MAX_LINES_PER_SECOND = MAX_RECORD_LINES_PER_SECOND
MAX_DEPTH = 4
MAX_VALUES = 1024
MAX_STRING_CHARS = 1024
MAX_KEY_CHARS = 128


class MetricError(ValueError):
    """Why a metric line was rejected."""


def _no_constants(name: str) -> Any:
    raise MetricError(f"{name} is not allowed")


def parse_metric(payload: bytes) -> dict[str, Any]:
    """Parse and check the JSON after the prefix. Raises :class:`MetricError`."""
    if len(payload) + len(PREFIX) > MAX_LINE_BYTES:
        raise MetricError("line too long")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetricError("not UTF-8") from exc
    stripped = text.strip()
    if not stripped.startswith("{"):
        raise MetricError("not a JSON object")
    # Deep nesting ('{' * 65536) stops at the interpreter's recursion limit: RecursionError, caught.
    try:
        value = json.loads(stripped, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise MetricError(f"not valid JSON: {str(exc)[:80]}") from exc
    if not isinstance(value, dict):
        raise MetricError("not a JSON object")
    _check(value, depth=1, budget=[MAX_VALUES])
    return value


def _check(value: Any, *, depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise MetricError(f"more than {MAX_VALUES} values")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > 2**63:
            raise MetricError("integer out of range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MetricError("number not finite")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise MetricError(f"string longer than {MAX_STRING_CHARS}")
        return
    if depth > MAX_DEPTH:
        raise MetricError(f"nested deeper than {MAX_DEPTH}")
    if isinstance(value, list):
        for item in value:
            _check(item, depth=depth + 1, budget=budget)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable():
                raise MetricError(f"bad key {key[:40]!r}")
            _check(item, depth=depth + 1, budget=budget)
        return
    raise MetricError(f"unexpected value type {type(value).__name__}")


@dataclass
class MetricGate:
    """Rate cap and counters for one run: a token bucket of ``rate`` lines per second."""

    rate: float = MAX_LINES_PER_SECOND
    clock: Callable[[], float] = time.monotonic
    accepted: int = 0
    dropped: int = 0
    """Every metric line not passed on: malformed, too long or over the rate."""
    rejected: int = 0
    """Of those, the malformed ones."""

    def __post_init__(self) -> None:
        self._tokens = float(self.rate)
        self._last = self.clock()

    def admit(self, payload: bytes) -> dict[str, Any] | None:
        """The parsed metric, or ``None`` when the line is malformed or over the rate."""
        try:
            value = parse_metric(payload)
        except MetricError:
            self.rejected += 1
            self.dropped += 1
            return None
        now = self.clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            self.dropped += 1
            return None
        self._tokens -= 1.0
        self.accepted += 1
        return value
