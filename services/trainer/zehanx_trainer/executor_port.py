"""The trainer's port to the sandbox: what it asks of an executor and the events it gets back.

Plain dataclasses and a ``typing.Protocol``; the gRPC adapter (:mod:`zehanx_trainer.clients.executor`)
implements it over ``ExecutorService.Execute``, tests may implement it in memory.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ExecFile:
    """A file written into the sandbox's working folder before the command starts."""

    path: str
    content: bytes
    executable: bool = False


@dataclass(frozen=True, slots=True)
class ExecLimits:
    """Limits asked of the executor; ``None`` takes the executor's default."""

    wall_s: float
    memory_bytes: int | None = None
    max_processes: int | None = None
    disk_bytes: int | None = None
    output_bytes: int | None = None
    file_size_bytes: int | None = None
    gpu: bool = False


@dataclass(frozen=True)
class ExecRequest:
    """One sandboxed command over a folder of files."""

    files: tuple[ExecFile, ...]
    argv: tuple[str, ...]
    limits: ExecLimits
    env: Mapping[str, str] = field(default_factory=dict)
    #: Glob patterns (relative to the working folder) of produced files to send back with content.
    collect: tuple[str, ...] = ()
    collect_max_bytes: int = 0
    job_id: str = ""


class ExitReason(enum.Enum):
    """Why a sandboxed command ended (mirrors ``zehanx.executor.v1.ExitReason``)."""

    UNSPECIFIED = "unspecified"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    OUTPUT_LIMIT = "output_limit"
    DISK_LIMIT = "disk_limit"
    CANCELLED = "cancelled"
    SANDBOX_ERROR = "sandbox_error"
    NODE_LOST = "node_lost"


@dataclass(frozen=True, slots=True)
class ExecStarted:
    execution_id: str
    backend: str
    description: str


@dataclass(frozen=True, slots=True)
class ExecOutput:
    """A chunk of stdout or stderr (arbitrary byte ranges, not lines)."""

    stream: str  # "stdout" | "stderr"
    data: bytes


@dataclass(frozen=True, slots=True)
class ExecMetric:
    """One ``@@zx:`` object as the executor parsed it: still untrusted."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExecProducedFile:
    """A produced file that matched ``collect``; ``content`` is None when it was over the byte cap."""

    path: str
    size_bytes: int
    sha256: str
    content: bytes | None


@dataclass(frozen=True, slots=True)
class ExecUsage:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_bytes: int = 0
    output_bytes: int = 0
    disk_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ExecResult:
    """The outcome; always the last event."""

    reason: ExitReason
    exit_code: int
    signal: int
    message: str
    usage: ExecUsage
    dropped_metrics: int = 0

    @property
    def succeeded(self) -> bool:
        return self.reason is ExitReason.COMPLETED and self.exit_code == 0


ExecEvent = ExecStarted | ExecOutput | ExecMetric | ExecProducedFile | ExecResult


class Executor(Protocol):
    """Runs one command in a sandbox and streams its events, ``ExecResult`` last.

    Closing the iterator early (cancellation) must stop the command. ``timeout_s`` bounds the whole
    call, sandbox start and file transfer included. Failures of the executor itself (unreachable,
    refused) raise :class:`zehanx_runtime.errors.DomainError` subclasses.
    """

    def execute(self, request: ExecRequest, *, timeout_s: float) -> AsyncIterator[ExecEvent]: ...


# -- sessions: one sandboxed process kept alive, fed one line per call -----------------------------------


@dataclass(frozen=True)
class SessionSpec:
    """A process to keep alive in a sandbox (``ExecutorService.Session``'s start)."""

    files: tuple[ExecFile, ...]
    argv: tuple[str, ...]
    limits: ExecLimits
    idle_timeout_s: float
    env: Mapping[str, str] = field(default_factory=dict)
    job_id: str = ""


class SessionEnded(Exception):
    """The session's process ended (exited, crashed, was killed or hit a limit) before answering."""

    def __init__(self, result: ExecResult, stderr_tail: str) -> None:
        super().__init__(result.message or result.reason.value)
        self.result = result
        self.stderr_tail = stderr_tail


class ExecSession(Protocol):
    """A started session. ``call`` sends one line and returns the process's one-line answer; it raises
    :class:`SessionEnded` when the process ends first and ``TimeoutError`` after ``timeout_s``."""

    execution_id: str
    backend: str
    start_s: float

    @property
    def ended(self) -> ExecResult | None: ...

    def stderr_tail(self) -> str: ...

    async def call(self, payload: bytes, *, timeout_s: float) -> bytes: ...

    async def close(self, *, kill: bool = False) -> ExecResult | None: ...


class SessionExecutor(Protocol):
    """An executor that can also keep a process alive. Failures to start raise
    :class:`zehanx_runtime.errors.DomainError` subclasses with the executor's reason (``SESSION_CAPACITY``,
    ``SESSIONS_UNSUPPORTED``, ...); a process that ends before it is ready raises :class:`SessionEnded`."""

    async def open_session(self, spec: SessionSpec, *, timeout_s: float) -> ExecSession: ...
