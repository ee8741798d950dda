"""Turning a failed program run into a structured error the code generator can repair from.

Sources, best first: the ``error`` record zxrt's excepthook printed (exception type, message, phase,
innermost program frame), the Python traceback on stderr (also covers programs that failed before
importing zxrt, e.g. a SyntaxError), and the executor's verdict (timeout, memory, output limit).

A module the sandbox's Python lacks (``ModuleNotFoundError`` for anything but the program's own files,
or a library that cannot load) is an *environment* error: the sandbox image is at fault, not the
program or its data, so it is said plainly and never sent to repair (:func:`is_repairable`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zehanx_trainer.executor_port import ExecResult, ExitReason
from zehanx_trainer.records import ErrorRecord

MAX_TAIL_BYTES = 16 * 1024
MAX_MESSAGE_CHARS = 8192
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)', re.MULTILINE)
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)(?::\s?(.*))?$")
_NO_MODULE = re.compile(r"No module named '([^']+)'")
# ImportErrors of a broken install (a shared library missing or built against another version).
_BROKEN_INSTALL = re.compile(r"cannot open shared object file|undefined symbol|DLL load failed")
ENVIRONMENT_ADVICE = (
    "the executor's sandbox lacks it; on E2B build the template with `zx e2b build-template` and set "
    "ZX_EXECUTOR_E2B_TEMPLATE to it, on the local sandbox install it into the executor's Python"
)


@dataclass(frozen=True)
class StructuredError:
    """Mirrors ``zehanx.common.v1.StructuredError``; ``phase`` is a zxrt phase name or ""."""

    phase: str
    exception_type: str
    message: str
    traceback_tail: str
    file_path: str = ""
    line: int = 0
    environment: bool = False
    """The sandbox's environment is at fault (a missing module), not the program: never repairable. Not
    in the proto; the message says it."""


@dataclass(frozen=True)
class ParsedTraceback:
    exception_type: str
    message: str
    tail: str
    file_path: str
    line: int


def _program_path(filename: str, program_paths: set[str]) -> str:
    """Map a sandbox path (``/job/train.py``) to the program's own relative path, or ""."""
    normalized = filename.replace("\\", "/")
    for path in sorted(program_paths, key=len, reverse=True):
        if normalized == path or normalized.endswith("/" + path):
            return path
    return ""


def parse_traceback(stderr: str, program_paths: set[str]) -> ParsedTraceback | None:
    """The last Python traceback in ``stderr`` (or a bare SyntaxError report), if there is one."""
    start = stderr.rfind(_TRACEBACK_HEAD)
    if start < 0:
        # A SyntaxError raised while compiling the main script has no "Traceback" header.
        frames = list(_FRAME.finditer(stderr))
        if not frames:
            return None
        start = frames[-1].start()
    tail = stderr[start:]
    exception_type, message = "", ""
    for raw in reversed(tail.splitlines()):
        if not raw.strip() or raw[0].isspace():
            continue
        match = _EXCEPTION_LINE.match(raw.strip())
        if match and not raw.startswith(_TRACEBACK_HEAD) and not raw.startswith("During handling"):
            exception_type, message = match.group(1), (match.group(2) or "").strip()
            break
    file_path, line = "", 0
    for frame in _FRAME.finditer(tail):
        path = _program_path(frame.group(1), program_paths)
        if path:
            file_path, line = path, int(frame.group(2))
    if not exception_type:
        return None
    return ParsedTraceback(exception_type, message, tail[-MAX_TAIL_BYTES:], file_path, line)


def environment_problem(exception_type: str, message: str, program_paths: set[str]) -> str | None:
    """What the sandbox's environment lacks, when an import failure is its fault; else None.

    ``No module named 'x'`` is the environment's unless ``x`` is one of the program's own modules (a
    program importing a file it did not ship is the program's bug); an ImportError of a library that
    cannot load is the environment's; ``cannot import name`` (an API the program made up) is not."""
    kind = exception_type.rsplit(".", 1)[-1]
    if kind not in ("ModuleNotFoundError", "ImportError"):
        return None
    missing = _NO_MODULE.search(message)
    if missing:
        top = missing.group(1).split(".", 1)[0]
        own = {p.removesuffix(".py").split("/", 1)[0] for p in program_paths}
        return None if top in own else f"the Python module {missing.group(1)!r}"
    if _BROKEN_INSTALL.search(message):
        return f"a working install ({message[:300]})"
    return None


def is_repairable(result: ExecResult, error: StructuredError, asked: bool | None) -> bool:
    """Whether sending ``error`` to the code generator may help. ``asked``: the stage's own answer (the
    smoke run: True), or None to decide from the run (the full run and evaluation: the program's own
    crash may be repaired, a limit hit may not). An environment error never is."""
    if error.environment:
        return False
    if asked is not None:
        return asked
    return result.reason is ExitReason.FAILED or (
        result.reason is ExitReason.COMPLETED and result.exit_code != 0
    )


def _limit_message(result: ExecResult, what: str) -> str:
    base = result.message or result.reason.value
    if result.reason is ExitReason.TIMEOUT:
        return f"{what} was stopped at its time limit: {base}"
    if result.reason is ExitReason.MEMORY:
        return f"{what} was killed at its memory limit: {base}"
    if result.reason is ExitReason.OUTPUT_LIMIT:
        return f"{what} was stopped for writing too much output: {base}"
    if result.reason is ExitReason.DISK_LIMIT:
        return f"{what} hit the disk limit of its working folder: {base}"
    if result.signal:
        return f"{what} was killed by signal {result.signal}: {base}"
    return f"{what} exited with status {result.exit_code}: {base}"


def build_error(
    *,
    result: ExecResult,
    record: ErrorRecord | None,
    stderr_tail: str,
    program_paths: set[str],
    phase: str,
    what: str,
) -> StructuredError:
    """The structured error of a failed run of ``what`` ("train.py (smoke run)", "predict.py")."""
    parsed = parse_traceback(stderr_tail, program_paths)
    tail = parsed.tail if parsed else stderr_tail[-4096:]
    limit_hit = result.reason in (
        ExitReason.TIMEOUT,
        ExitReason.MEMORY,
        ExitReason.OUTPUT_LIMIT,
        ExitReason.DISK_LIMIT,
    )
    if record is not None:
        exception_type, message = record.type, record.message
        file_path, line = (
            record.file or (parsed.file_path if parsed else ""),
            record.line or (parsed.line if parsed else 0),
        )
        phase = record.phase or phase
    elif parsed is not None:
        exception_type, message, file_path, line = (
            parsed.exception_type,
            parsed.message,
            parsed.file_path,
            parsed.line,
        )
    else:
        exception_type, message, file_path, line = "", _limit_message(result, what), "", 0
    if limit_hit and record is None:
        # The platform's verdict explains a kill better than whatever the process printed last.
        message = _limit_message(result, what) + (
            f" (last exception: {exception_type}: {message})" if exception_type else ""
        )
        exception_type = (
            exception_type if result.reason is ExitReason.MEMORY and exception_type == "MemoryError" else ""
        )
    if not message and not exception_type:
        message = _limit_message(result, what)
    lacking = environment_problem(exception_type, message, program_paths)
    if lacking is not None:
        message = (
            f"environment error, not a fault of the program or its data: {what} could not start because "
            f"the sandbox has no {lacking} ({exception_type}: {message}); {ENVIRONMENT_ADVICE}"
        )
        phase = "setup"
    return StructuredError(
        phase=phase,
        exception_type=exception_type[:256],
        message=message[:MAX_MESSAGE_CHARS],
        traceback_tail=tail.encode("utf-8")[-MAX_TAIL_BYTES:].decode("utf-8", "ignore"),
        file_path=file_path[:512],
        line=max(0, line),
        environment=lacking is not None,
    )


def failure_error(
    message: str, *, phase: str, file_path: str = "", exception_type: str = ""
) -> StructuredError:
    """A failure the trainer found itself (a missing model file, unreadable predictions)."""
    return StructuredError(
        phase=phase,
        exception_type=exception_type,
        message=message[:MAX_MESSAGE_CHARS],
        traceback_tail="",
        file_path=file_path,
        line=0,
    )
