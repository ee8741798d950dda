"""Checking ``@@zx:`` records: untrusted objects a sandboxed program printed, into typed records.

The executor has already parsed each line as one flat JSON object (size- and rate-capped, values
numbers, null, booleans or short strings). Here every record is held to the program contract,
version 1 (``docs/program_contract.md``): known kind, known keys, right types and ranges. Anything
else raises :class:`RecordError`; the caller drops and counts it. Nothing a program prints can make
the trainer raise anything else.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

CONTRACT_VERSION = 1
MAX_MAP_ENTRIES = 32
MAX_TEXT_CHARS = 1024
LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})
PHASES = frozenset(
    {"setup", "data_loading", "model_building", "training", "validation", "saving", "prediction"}
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHECKPOINT_PATH = re.compile(r"^checkpoints/[A-Za-z0-9_][A-Za-z0-9._-]{0,199}\.safetensors$")
_INT_LIMIT = 2**53


class RecordError(ValueError):
    """A record that does not follow the contract; ``reason`` is a short UPPER_SNAKE code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MetricRecord:
    """Progress of a run. ``None`` means not reported; NaN means reported but not finite."""

    step: int | None = None
    epoch: int | None = None
    loss: float | None = None
    lr: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    total_steps: int | None = None
    val: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    step: int
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ModelRecord:
    path: str
    sha256: str
    size_bytes: int
    config_path: str


@dataclass(frozen=True, slots=True)
class FinalRecord:
    """What the program claims about its model (never used as the platform's own figure)."""

    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class LogRecord:
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    """What the program says it is doing now (one of PHASES)."""

    phase: str


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """An uncaught exception, reported by zxrt's excepthook (the traceback itself is on stderr)."""

    phase: str
    type: str
    message: str
    file: str
    line: int


Record = MetricRecord | CheckpointRecord | ModelRecord | FinalRecord | LogRecord | PhaseRecord | ErrorRecord

_METRIC_KEYS = frozenset({"step", "epoch", "loss", "lr", "samples_per_s", "eta_s", "total_steps"})
_FIELDS: dict[str, frozenset[str]] = {
    "metric": _METRIC_KEYS,
    "checkpoint": frozenset({"step", "path", "sha256", "bytes"}),
    "model": frozenset({"path", "sha256", "bytes", "config_path"}),
    "final": frozenset(),
    "log": frozenset({"level", "message"}),
    "phase": frozenset({"phase"}),
    "error": frozenset({"phase", "type", "message", "file", "line"}),
}
#: Kinds whose named metrics are spread into prefixed keys.
_SPREAD_PREFIX = {"metric": "val.", "final": "metrics."}


def _number(kind: str, name: str, value: Any, *, non_negative: bool = False) -> float:
    """A JSON number (null = a non-finite value the program reported) as a float."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError("BAD_TYPE", f"{kind}.{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        return math.nan
    if non_negative and number < 0:
        raise RecordError("OUT_OF_RANGE", f"{kind}.{name} must be >= 0, got {number}")
    return number


def _integer(kind: str, name: str, value: Any, *, limit: int = _INT_LIMIT) -> int:
    # JSON numbers may arrive as floats (through google.protobuf.Struct): 10.0 is the integer 10.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError("BAD_TYPE", f"{kind}.{name} must be an integer, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise RecordError("BAD_TYPE", f"{kind}.{name} must be an integer, got {value}")
    number = int(value)
    if not 0 <= number <= limit:
        raise RecordError("OUT_OF_RANGE", f"{kind}.{name} must be between 0 and {limit}, got {number}")
    return number


def _text(kind: str, name: str, value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        raise RecordError("BAD_TYPE", f"{kind}.{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise RecordError("TOO_LONG", f"{kind}.{name} is longer than {limit} characters")
    return value


def _sha256(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise RecordError("BAD_SHA256", f"{kind}.sha256 must be 64 lowercase hex digits")
    return value


def _phase(kind: str, value: Any) -> str:
    if not isinstance(value, str) or value not in PHASES:
        raise RecordError("BAD_PHASE", f"{kind}.phase must be one of {sorted(PHASES)}")
    return value


def _require(obj: dict[str, Any], kind: str, names: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in obj]
    if missing:
        raise RecordError("MISSING_FIELD", f"{kind} record lacks {', '.join(missing)}")


def _gather(kind: str, obj: dict[str, Any]) -> dict[str, float]:
    """Collect the prefixed named metrics (``val.accuracy``) and reject every other unknown key."""
    prefix = _SPREAD_PREFIX.get(kind)
    named: dict[str, float] = {}
    unknown: list[str] = []
    for key, value in obj.items():
        if key in ("v", "kind") or key in _FIELDS[kind]:
            continue
        if prefix and isinstance(key, str) and key.startswith(prefix):
            name = key[len(prefix) :]
            if not _NAME.match(name):
                raise RecordError("BAD_NAME", f"{kind} has a bad metric name {name!r:.80}")
            named[name] = _number(kind, key, value)
        else:
            unknown.append(str(key)[:40])
    if unknown:
        raise RecordError(
            "UNKNOWN_FIELD", f"{kind} record has unknown keys: {', '.join(sorted(unknown)[:5])}"
        )
    if len(named) > MAX_MAP_ENTRIES:
        raise RecordError("TOO_MANY", f"{kind} record has more than {MAX_MAP_ENTRIES} named metrics")
    return named


def parse_record(obj: Any) -> Record:
    """Check one ``@@zx:`` object against contract version 1 and return its typed record."""
    if not isinstance(obj, dict):
        raise RecordError("NOT_AN_OBJECT", "a record must be a JSON object")
    version = obj.get("v")
    if isinstance(version, bool) or version not in (CONTRACT_VERSION, float(CONTRACT_VERSION)):
        raise RecordError("UNSUPPORTED_VERSION", f"record version {version!r:.20} is not {CONTRACT_VERSION}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise RecordError("UNKNOWN_KIND", f"unknown record kind {kind!r:.40}")
    named = _gather(kind, obj)

    if kind == "metric":
        if len(obj) == 2:
            raise RecordError("EMPTY", "metric record carries no values")
        return MetricRecord(
            step=_integer(kind, "step", obj["step"]) if "step" in obj else None,
            epoch=_integer(kind, "epoch", obj["epoch"], limit=2**31 - 1) if "epoch" in obj else None,
            loss=_number(kind, "loss", obj["loss"]) if "loss" in obj else None,
            lr=_number(kind, "lr", obj["lr"], non_negative=True) if "lr" in obj else None,
            samples_per_s=(
                _number(kind, "samples_per_s", obj["samples_per_s"], non_negative=True)
                if "samples_per_s" in obj
                else None
            ),
            eta_s=_number(kind, "eta_s", obj["eta_s"], non_negative=True) if "eta_s" in obj else None,
            total_steps=_integer(kind, "total_steps", obj["total_steps"]) if "total_steps" in obj else None,
            val=named,
        )
    if kind == "final":
        return FinalRecord(metrics=named)
    if kind == "checkpoint":
        _require(obj, kind, ("step", "path", "sha256", "bytes"))
        path = _text(kind, "path", obj["path"], 256)
        if not _CHECKPOINT_PATH.match(path) or ".." in path:
            raise RecordError("BAD_PATH", "checkpoint.path must be checkpoints/<name>.safetensors")
        return CheckpointRecord(
            step=_integer(kind, "step", obj["step"]),
            path=path,
            sha256=_sha256(kind, obj["sha256"]),
            size_bytes=_integer(kind, "bytes", obj["bytes"]),
        )
    if kind == "model":
        _require(obj, kind, ("path", "sha256", "bytes", "config_path"))
        if obj["path"] != "model.safetensors" or obj["config_path"] != "model_config.json":
            raise RecordError("BAD_PATH", "model paths must be model.safetensors and model_config.json")
        return ModelRecord(
            path="model.safetensors",
            sha256=_sha256(kind, obj["sha256"]),
            size_bytes=_integer(kind, "bytes", obj["bytes"]),
            config_path="model_config.json",
        )
    if kind == "log":
        _require(obj, kind, ("level", "message"))
        level = _text(kind, "level", obj["level"], 16)
        if level not in LOG_LEVELS:
            raise RecordError("BAD_LEVEL", f"log.level must be one of {sorted(LOG_LEVELS)}")
        return LogRecord(level=level, message=_text(kind, "message", obj["message"]))
    if kind == "phase":
        _require(obj, kind, ("phase",))
        return PhaseRecord(phase=_phase(kind, obj["phase"]))
    _require(obj, kind, ("phase", "type", "message"))
    return ErrorRecord(
        phase=_phase(kind, obj["phase"]),
        type=_text(kind, "type", obj["type"], 256),
        message=_text(kind, "message", obj["message"]),
        file=_text(kind, "file", obj.get("file", ""), 512),
        line=_integer(kind, "line", obj.get("line", 0), limit=2**31 - 1),
    )
