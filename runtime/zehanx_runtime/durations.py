"""Seconds as floats in the domain, ``google.protobuf.Duration`` on the wire: the two converters."""

from __future__ import annotations

from google.protobuf import duration_pb2


def to_duration(seconds: float) -> duration_pb2.Duration:
    """A span of time as a Duration, to the nanosecond; a negative span (a clock stepped back) is zero."""
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return duration


def to_seconds(duration: duration_pb2.Duration) -> float:
    """A Duration as seconds (negative stays negative: validating it is the caller's business)."""
    return duration.seconds + duration.nanos / 1e9
