"""What a sandbox run is given and what it reports: limits, the job, and the events of a run.

Plain dataclasses shared by every backend (local, E2B, the development runner), converted to and from
protobuf only in :mod:`zehanx_executor.convert`. They mirror ``zehanx.executor.v1`` (ExecuteRequest / ExecuteResponse).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zehanx_runtime.errors import FieldViolation, InvalidArgument

MiB = 1024 * 1024
GiB = 1024 * MiB

# Processes of the sandbox itself in the job's pids cgroup (bwrap's monitor and its pid-1 init): the
# pids limit is the program's own budget plus these.
SANDBOX_OWN_PROCESSES = 2


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one run, after defaults and ceilings (see ``service.LimitPolicy``)."""

    wall_time_s: float = 600.0
    """Wall-clock deadline; the whole process tree is killed when it passes (reason TIMEOUT)."""
    cpu_time_s: float = 1200.0
    """CPU time over all processes (cgroup accounting), checked while it runs (reason TIMEOUT)."""
    memory_bytes: int = 2 * GiB
    """cgroup memory limit (memory + swap); the kernel's OOM killer acts at it (reason MEMORY)."""
    max_processes: int = 64
    """Processes and threads of the program (pids cgroup)."""
    disk_bytes: int = 512 * MiB
    """Size of the job folder (a tmpfs): ENOSPC beyond it (reason DISK_LIMIT when the program fails)."""
    output_bytes: int = 10 * MiB
    """stdout + stderr bytes; the job is killed when it writes more (reason OUTPUT_LIMIT)."""
    file_size_bytes: int = 512 * MiB
    """Largest single file (RLIMIT_FSIZE: EFBIG beyond it)."""
    gpu: bool = False
    """Expose the host's NVIDIA device nodes (and set no address-space limit, which breaks CUDA)."""
    open_files: int = 256
    """RLIMIT_NOFILE (server setting, not part of the request)."""
    tmp_bytes: int = 64 * MiB
    """Size of the sandbox's private ``/tmp`` (server setting; charged to the memory limit too)."""
    cpus: float = 0.0
    """CPU quota in cores (cgroup ``cpu.max``): the whole tree gets at most this much CPU time per unit
    of wall time, however many threads it runs. 0: no quota (the executor's policy always sets one)."""

    def violations(self) -> list[FieldViolation]:
        out: list[FieldViolation] = []

        def need(ok: bool, name: str, text: str) -> None:
            if not ok:
                out.append(FieldViolation(f"limits.{name}", text))

        need(0 < self.wall_time_s <= 86400, "max_wall_duration", "must be > 0 and at most 24 h")
        need(0 < self.cpu_time_s <= 86400 * 64, "max_cpu_duration", "must be > 0")
        need(self.memory_bytes >= 16 * MiB, "max_memory_bytes", "must be at least 16 MiB")
        need(1 <= self.max_processes <= 4096, "max_processes", "must be between 1 and 4096")
        need(self.disk_bytes >= MiB, "max_disk_bytes", "must be at least 1 MiB")
        need(self.output_bytes >= 1024, "max_output_bytes", "must be at least 1 KiB")
        need(self.file_size_bytes >= 1024, "max_file_size_bytes", "must be at least 1 KiB")
        need(0 <= self.cpus <= 1024, "max_cpus", "must be between 0 and 1024 cores")
        return out


@dataclass(frozen=True, slots=True)
class JobFile:
    """One file of the job, written into the job folder before the program starts."""

    path: str
    data: bytes
    executable: bool = False


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PATH = re.compile(r"^[A-Za-z0-9_.+=@,~-]+(/[A-Za-z0-9_.+=@,~-]+)*$")
_COLLECT = re.compile(r"^[A-Za-z0-9_.+=@,~*?\[\]{}-]+(/[A-Za-z0-9_.+=@,~*?\[\]{}-]+)*$")
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


def path_violations(path: str, field_name: str, *, pattern: re.Pattern[str] = _PATH) -> list[FieldViolation]:
    """A path inside the job folder: relative, portable characters, no empty, '.' or '..' segments."""
    if not path or len(path) > 512 or not pattern.match(path) or _DOT_SEGMENT.search(path):
        return [
            FieldViolation(
                field_name, "must be a relative path of portable characters without '.' or '..' segments"
            )
        ]
    if path.count("/") >= 32:
        return [FieldViolation(field_name, "must have at most 32 segments")]
    return []


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One run: the job's files, the command, its environment and its limits."""

    execution_id: str
    command: tuple[str, ...]
    files: tuple[JobFile, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    collect: tuple[str, ...] = ()
    """Glob patterns (``**`` crosses folders) of produced files to send back after the run."""
    collect_max_bytes: int = 256 * MiB
    """Total content bytes of collected files; files beyond it are reported without content."""
    job_id: str = ""
    sandbox_api_key: str | None = field(default=None, repr=False, compare=False)
    """A job owner's own key for a cloud sandbox (E2B), used to create it instead of the configured key.
    It creates the sandbox and never enters it (not in ``env``, not in any file)."""

    def violations(self) -> list[FieldViolation]:
        out = list(self.limits.violations())
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.execution_id):
            out.append(FieldViolation("execution_id", "must be 1-64 of [A-Za-z0-9_.-]"))
        if not self.command or not self.command[0]:
            out.append(FieldViolation("argv", "argv[0] must not be empty"))
        for i, arg in enumerate(self.command):
            if "\x00" in arg or len(arg) > 4096:
                out.append(FieldViolation(f"argv[{i}]", "must be at most 4096 characters without NUL"))
        seen: set[str] = set()
        for i, f in enumerate(self.files):
            out += path_violations(f.path, f"files[{i}].path")
            if f.path in seen:
                out.append(FieldViolation(f"files[{i}].path", "file paths must be unique"))
            seen.add(f.path)
        # A file may not also be a folder of another file ("a" and "a/b").
        for p in seen:
            parts = p.split("/")
            for k in range(1, len(parts)):
                if "/".join(parts[:k]) in seen:
                    out.append(
                        FieldViolation("files", f"{'/'.join(parts[:k])!r} is both a file and a folder")
                    )
        for name, value in self.env.items():
            if not _ENV_NAME.match(name):
                out.append(FieldViolation(f"env[{name[:64]}]", "name must match [A-Za-z_][A-Za-z0-9_]*"))
            if "\x00" in value or len(value) > 32768:
                out.append(FieldViolation(f"env[{name[:64]}]", "value must be at most 32 KiB without NUL"))
        for i, pattern in enumerate(self.collect):
            out += path_violations(pattern, f"collect[{i}]", pattern=_COLLECT)
        if self.collect_max_bytes < 0:
            out.append(FieldViolation("collect_max_bytes", "must be >= 0"))
        return out

    def validate(self) -> None:
        bad = self.violations()
        if bad:
            raise InvalidArgument("invalid execution request", violations=bad)


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


class ExitReason(enum.Enum):
    """Why a run ended (``zehanx.executor.v1.ExitReason``)."""

    COMPLETED = "completed"
    """The program exited with status 0."""
    FAILED = "failed"
    """The program exited non-zero, or a signal it caused itself killed it."""
    TIMEOUT = "timeout"
    """The wall-clock or CPU-time limit passed and the tree was killed."""
    MEMORY = "memory"
    """The cgroup memory limit was hit and the kernel's OOM killer killed a process of the job."""
    OUTPUT_LIMIT = "output_limit"
    """The job wrote more stdout + stderr than its output limit and was killed."""
    DISK_LIMIT = "disk_limit"
    """The program failed after filling its job folder or hitting the file-size limit."""
    CANCELLED = "cancelled"
    """The caller cancelled the run (or its gRPC deadline passed)."""
    SANDBOX_ERROR = "sandbox_error"
    """The sandbox itself failed (launch error, backend error); the message says what."""
    NODE_LOST = "node_lost"
    """The cluster node (or its worker process) running the run was lost; the run may have run in part."""


@dataclass(frozen=True, slots=True)
class Started:
    """The sandbox is ready and the program is starting."""

    execution_id: str
    backend: str
    description: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Output:
    """A chunk of stdout or stderr. The local backend cuts chunks at line ends, except a line longer
    than 64 KiB, a partial line flushed after a 100 ms pause, and the last bytes before exit."""

    stream: Stream
    data: bytes


@dataclass(frozen=True, slots=True)
class Metric:
    """One parsed, checked metric line (``@@zx:{...}`` on stdout)."""

    payload: dict[str, Any]
    raw_line_bytes: int


@dataclass(frozen=True, slots=True)
class FileChunk:
    """A produced file that matched ``collect``, or one chunk of it (same path/size/sha256 on each)."""

    path: str
    size: int
    sha256: str
    content_included: bool
    offset: int = 0
    data: bytes = b""
    last_chunk: bool = True


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0
    max_rss_bytes: int = 0
    """Peak memory of the job's cgroup (rss + page cache + tmpfs), not one process's RSS."""
    output_bytes: int = 0
    disk_bytes: int = 0
    """Peak bytes used in the job folder, sampled while it runs and at exit."""
    metric_lines: int = 0
    metric_lines_dropped: int = 0
    """Metric lines that were too long, malformed, or over the rate cap."""
    pids_limit_hits: int = 0
    """Forks the pids limit refused."""
    files_rejected: int = 0
    """Entries the collector refused: symlinks, hard links, devices, FIFOs, sockets, over the cap."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of every run."""

    reason: ExitReason
    exit_code: int
    """The main process's exit status; -1 when a signal killed it or it never started."""
    signal: int
    """The signal that killed the main process; 0 when none did."""
    usage: ResourceUsage
    message: str = ""


Event = Started | Output | Metric | FileChunk | Finished


@dataclass(frozen=True, slots=True)
class Reply:
    """A session's answer to one call: the stdout line the process wrote, without its newline."""

    call_id: int
    payload: bytes
    duration_s: float
    """From the call being written to the process to its reply being read (queueing included)."""


SessionEvent = Started | Output | Reply | Finished
"""A session yields Started (the process is running), then Output and Reply events, then Finished."""
