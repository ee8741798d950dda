"""zxrt: the runtime helper a Zehanx program imports (program contract, version 1).

It is the only protocol between a training program and the platform. Every call prints one line to
stdout: the reserved prefix ``@@zx:`` followed by one flat JSON object with ``"v": 1`` and a ``"kind"``
(values are numbers, null, booleans or short strings; named metrics are spread into keys such as
``"val.accuracy"``). The platform treats these lines as untrusted input (schema-checked, size- and
rate-capped), so this module checks what it sends as early as possible: a program that reports nonsense
fails here, where the traceback points at its own line.

Outside the platform the same program runs unchanged: ``ZX_DATA`` defaults to ``./data``, ``ZX_OUTPUT``
to ``./output`` and the device to ``cuda`` when torch sees a GPU, else ``cpu``. The lines then simply
appear on the terminal.

The full contract is ``docs/program_contract.md``. Standard library only at import time; torch and
safetensors are imported when a checkpoint or model is saved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1
#: The protocol's record prefix and line limit (``zehanx_runtime.program_output``, which this file
#: cannot import: it runs alone in the sandbox); tests/runtime/test_program_output.py holds them equal.
PREFIX = "@@zx:"
#: Longest line the platform accepts; longer ones are refused here.
MAX_LINE_BYTES = 64 * 1024
#: Metric lines without validation metrics are sent at most this often (the latest values win).
#: The executor drops lines beyond 200/s; throttling here keeps the ones that matter.
MAX_METRIC_LINES_PER_S = 20.0
#: Metric names: a letter, then letters, digits, ``_ . - /``; at most 64 characters.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,63}$")
MAX_MAP_ENTRIES = 32
MAX_TEXT_CHARS = 1000
LOG_LEVELS = ("debug", "info", "warning", "error")
#: What a program can say it is doing (``phase()``); error reports carry the latest one.
PHASES = ("setup", "data_loading", "model_building", "training", "validation", "saving", "prediction")

__all__ = [
    "MAX_LINE_BYTES",
    "PHASES",
    "PREFIX",
    "VERSION",
    "Config",
    "env",
    "log",
    "log_metrics",
    "phase",
    "report_final",
    "save_checkpoint",
    "save_model",
]


@dataclass(frozen=True)
class Config:
    """What the platform tells a program, read from the environment by :func:`env`."""

    data_dir: Path
    output_dir: Path
    smoke: bool
    device: str
    time_budget_s: float | None
    seed: int
    #: Distributed runs (torchrun): this process's rank, local rank and the number of processes.
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True in the process that reports and saves (rank 0); always True without torchrun."""
        return self.rank == 0


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"zxrt: {name}={raw!r} is not an integer") from None


def _default_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def env() -> Config:
    """Read the run's settings from ``ZX_*`` variables (defaults make a local run work)."""
    budget_raw = os.environ.get("ZX_TIME_BUDGET_S", "").strip()
    try:
        budget = float(budget_raw) if budget_raw else None
    except ValueError:
        raise ValueError(f"zxrt: ZX_TIME_BUDGET_S={budget_raw!r} is not a number") from None
    output_dir = Path(os.environ.get("ZX_OUTPUT") or "output")
    output_dir.mkdir(parents=True, exist_ok=True)
    return Config(
        data_dir=Path(os.environ.get("ZX_DATA") or "data"),
        output_dir=output_dir,
        smoke=os.environ.get("ZX_SMOKE", "0").strip() not in ("", "0", "false", "False"),
        device=os.environ.get("ZX_DEVICE") or _default_device(),
        time_budget_s=budget,
        seed=_int_env("ZX_SEED", 0),
        rank=_int_env("RANK", 0),
        local_rank=_int_env("LOCAL_RANK", 0),
        world_size=_int_env("WORLD_SIZE", 1),
    )


# -- checking values --------------------------------------------------------------------------------


def _number(name: str, value: Any) -> float | None:
    """A finite float, or None for NaN/inf (sent as JSON null: a diverged loss is news, not a crash)."""
    if isinstance(value, bool) or isinstance(value, str | bytes) or not hasattr(value, "__float__"):
        raise TypeError(f"zxrt: {name} must be a number, got {type(value).__name__}")
    number = float(value)
    return number if math.isfinite(number) else None


def _non_negative(name: str, value: Any) -> float | None:
    number = _number(name, value)
    if number is not None and number < 0:
        raise ValueError(f"zxrt: {name} must be >= 0, got {number}")
    return number


def _count(name: str, value: Any, limit: int = 2**53) -> int:
    if isinstance(value, bool) or (not isinstance(value, int) and not hasattr(value, "__index__")):
        raise TypeError(f"zxrt: {name} must be an integer, got {type(value).__name__}")
    count = int(value)
    if count < 0 or count > limit:
        raise ValueError(f"zxrt: {name} must be between 0 and {limit}, got {count}")
    return count


def _spread(prefix: str, values: Any) -> dict[str, float | None]:
    """``{"accuracy": 0.9}`` -> ``{"val.accuracy": 0.9}`` after checking names and numbers."""
    what = prefix.rstrip(".")
    if not isinstance(values, dict):
        raise TypeError(f"zxrt: {what} must be a dict of name -> number, got {type(values).__name__}")
    if len(values) > MAX_MAP_ENTRIES:
        raise ValueError(f"zxrt: {what} has {len(values)} entries; at most {MAX_MAP_ENTRIES}")
    spread: dict[str, float | None] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not NAME_PATTERN.match(key):
            raise ValueError(
                f"zxrt: {what} name {key!r} must start with a letter and use letters, digits, _ . - / "
                "(at most 64 characters)"
            )
        spread[prefix + key] = _number(f"{what}[{key!r}]", value)
    return spread


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


# -- emitting lines -----------------------------------------------------------------------------------


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0").strip() in ("", "0")


def _emit(record: dict[str, Any]) -> None:
    line = PREFIX + json.dumps({"v": VERSION, **record}, separators=(",", ":"), allow_nan=False)
    if len(line.encode("utf-8")) > MAX_LINE_BYTES:
        raise ValueError(f"zxrt: a {record.get('kind')} record is longer than {MAX_LINE_BYTES} bytes")
    # One write per line, flushed: the platform reads stdout as a stream of lines.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _MetricThrottle:
    """Sends at most MAX_METRIC_LINES_PER_S plain metric lines; the latest skipped one is kept."""

    def __init__(self) -> None:
        self.last_sent = -math.inf
        self.pending: dict[str, Any] | None = None
        self.last_epoch: Any = None

    def offer(self, record: dict[str, Any], *, important: bool) -> None:
        now = time.monotonic()
        epoch = record.get("epoch")
        new_epoch = epoch is not None and epoch != self.last_epoch
        if important or new_epoch or now - self.last_sent >= 1.0 / MAX_METRIC_LINES_PER_S:
            if important and self.pending is not None:
                # The held-back progress line goes first: a validation line must not swallow the
                # training loss of the steps before it (a fast run would chart almost no loss).
                _emit(self.pending)
            self.pending = None
            self.last_sent = now
            if epoch is not None:
                self.last_epoch = epoch
            _emit(record)
        else:
            self.pending = record

    def flush(self) -> None:
        if self.pending is not None:
            record, self.pending = self.pending, None
            self.last_sent = time.monotonic()
            _emit(record)


_throttle = _MetricThrottle()
_state = {"phase": "setup"}


def log_metrics(
    step: int | None = None,
    *,
    epoch: int | None = None,
    loss: float | None = None,
    lr: float | None = None,
    samples_per_s: float | None = None,
    val: dict[str, float] | None = None,
    eta_s: float | None = None,
    total_steps: int | None = None,
    force: bool = False,
) -> None:
    """Report training progress. Any subset of the fields; numbers only (NaN/inf are sent as null).

    ``step`` counts optimizer steps from 0, ``epoch`` counts completed epochs, ``val`` holds validation
    metrics by name, ``total_steps`` is the planned number of steps when known.

    Lines that carry ``val`` or start a new epoch are always sent; others at most
    MAX_METRIC_LINES_PER_S per second (the newest values win, and the last one is sent before the
    model is saved). ``force=True`` sends this one regardless. Only rank 0 reports under torchrun.
    """
    record: dict[str, Any] = {"kind": "metric"}
    if step is not None:
        record["step"] = _count("step", step)
    if epoch is not None:
        record["epoch"] = _count("epoch", epoch, 2**31 - 1)
    if loss is not None:
        record["loss"] = _number("loss", loss)
    if lr is not None:
        record["lr"] = _non_negative("lr", lr)
    if samples_per_s is not None:
        record["samples_per_s"] = _non_negative("samples_per_s", samples_per_s)
    if eta_s is not None:
        record["eta_s"] = _non_negative("eta_s", eta_s)
    if total_steps is not None:
        record["total_steps"] = _count("total_steps", total_steps)
    if val is not None:
        record.update(_spread("val.", val))
    if len(record) == 1:
        raise ValueError("zxrt: log_metrics needs at least one field")
    if _is_main_process():
        _throttle.offer(record, important=force or val is not None)


def log(message: str, level: str = "info") -> None:
    """A log line for the user watching the run (cut to MAX_TEXT_CHARS characters)."""
    if level not in LOG_LEVELS:
        raise ValueError(f"zxrt: level must be one of {LOG_LEVELS}, got {level!r}")
    if _is_main_process():
        _emit({"kind": "log", "level": level, "message": _short(message)})


def phase(name: str) -> None:
    """Say what the program is doing now (one of PHASES), so a failure report names the phase."""
    if name not in PHASES:
        raise ValueError(f"zxrt: phase must be one of {PHASES}, got {name!r}")
    _state["phase"] = name
    if _is_main_process():
        _emit({"kind": "phase", "phase": name})


def report_final(metrics: dict[str, float]) -> None:
    """What the program claims about its own model. The platform recomputes its own figures."""
    spread = _spread("metrics.", metrics)
    if _is_main_process():
        _throttle.flush()
        _emit({"kind": "final", **spread})


# -- saving tensors -----------------------------------------------------------------------------------


def _sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_safetensors(tensors: Any, path: Path, metadata: dict[str, str] | None) -> None:
    """Write a torch module, a dict of torch tensors or a dict of numpy arrays as safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if hasattr(tensors, "state_dict") and callable(tensors.state_dict):
        from safetensors.torch import save_model as _save_module

        # save_model handles tied (shared) weights, which save_file refuses. A DDP wrapper's
        # .module is the model itself.
        _save_module(getattr(tensors, "module", tensors), str(tmp), metadata=metadata)
    elif isinstance(tensors, dict) and tensors:
        sample = next(iter(tensors.values()))
        if type(sample).__module__.startswith("numpy"):
            from safetensors.numpy import save_file as _save_numpy

            _save_numpy(tensors, str(tmp), metadata=metadata)
        else:
            from safetensors.torch import save_file as _save_torch

            cpu = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
            _save_torch(cpu, str(tmp), metadata=metadata)
    else:
        raise TypeError("zxrt: tensors must be a torch module or a non-empty dict of name -> tensor/array")
    os.replace(tmp, path)


def save_checkpoint(step: int, tensors: Any) -> Path:
    """Save ``tensors`` as ``$ZX_OUTPUT/checkpoints/step-<step>.safetensors`` and report it."""
    step = _count("step", step)
    if not _is_main_process():
        return Path()
    out = env().output_dir
    relative = Path("checkpoints") / f"step-{step:09d}.safetensors"
    _write_safetensors(tensors, out / relative, {"step": str(step)})
    sha256, size = _sha256_of(out / relative)
    _emit({"kind": "checkpoint", "step": step, "path": relative.as_posix(), "sha256": sha256, "bytes": size})
    return out / relative


def save_model(tensors: Any, config: dict[str, Any]) -> Path:
    """Save the final model: ``model.safetensors`` plus ``model_config.json`` (what predict.py needs
    to rebuild it: architecture sizes, label names, vocabulary, normalisation constants)."""
    if not isinstance(config, dict):
        raise TypeError(f"zxrt: config must be a dict, got {type(config).__name__}")
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"zxrt: config must be JSON-serialisable with finite numbers: {exc}") from None
    if not _is_main_process():
        return Path()
    if _state["phase"] != "saving":
        phase("saving")
    out = env().output_dir
    weights = out / "model.safetensors"
    _write_safetensors(tensors, weights, {"format": "pt", "zxrt": str(VERSION)})
    config_path = out / "model_config.json"
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(config_text + "\n", encoding="utf-8")
    os.replace(tmp, config_path)
    sha256, size = _sha256_of(weights)
    _throttle.flush()
    _emit(
        {
            "kind": "model",
            "path": "model.safetensors",
            "sha256": sha256,
            "bytes": size,
            "config_path": "model_config.json",
        }
    )
    return weights


# -- errors -------------------------------------------------------------------------------------------


def _qualified_name(exc_type: type[BaseException]) -> str:
    module = getattr(exc_type, "__module__", "builtins")
    name = exc_type.__qualname__
    return name if module in ("builtins", "__main__") else f"{module}.{name}"


def _program_frame(tb: Any) -> tuple[str, int]:
    """The innermost frame in a file of the program's folder: (relative path, line) or ("", 0)."""
    root = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else Path.cwd()
    found = ("", 0)
    for frame in traceback.extract_tb(tb):
        try:
            relative = Path(frame.filename).resolve().relative_to(root)
        except (ValueError, OSError):
            continue
        if "site-packages" not in relative.parts and relative.name != "zxrt.py":
            found = (relative.as_posix(), frame.lineno or 0)
    return found


def _report_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """Turn an uncaught exception into one ``error`` record (the platform hands it to the repairer;
    the full traceback follows on stderr as usual)."""
    try:
        path, line = _program_frame(tb)
        _emit(
            {
                "kind": "error",
                "phase": _state["phase"],
                "type": _short(_qualified_name(exc_type))[:200],
                "message": _short(exc),
                "file": path[:200],
                "line": line,
            }
        )
    except Exception:  # pragma: no cover - reporting must never hide the original error
        pass


def _install_excepthook() -> None:
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if not issubclass(exc_type, KeyboardInterrupt):
            _report_uncaught(exc_type, exc, tb)
        previous(exc_type, exc, tb)

    sys.excepthook = hook


_install_excepthook()
