"""The local sandbox: bubblewrap started as an unprivileged uid, inside per-job cgroups, with rlimits, a
seccomp deny list, an empty environment plus an allow-list, a size-capped ``nosymfollow`` job folder and
no network. The recipe was measured against 29 attack programs, none of which escaped (a plain
subprocess with a timeout let 24 of 28 through); tests/executor/test_attacks.py runs them against it.

One run, step by step (all from the multi-threaded gRPC process without ``preexec_fn``: the child is
started with exec only):

1. mount a tmpfs of ``disk_bytes`` at ``<work_dir>/jobs/<instance>/<run>`` (``nosymfollow,nosuid,nodev``,
   mode 0700, owned by the job uid) and write the job's files into it;
2. create the job's cgroups under the executor's own cgroup (memory + swap, pids, a CPU quota, a v2
   leaf for ``cgroup.kill``);
3. exec ``[unshare --mount --propagation private] sh -c '...'`` with ``env={PATH}``, ``close_fds`` and
   stdin from /dev/null (a warm session's stdin is a pipe: ``sandbox/session.py``). The shell writes its
   pid into the job's cgroups before anything else runs,
   bind-mounts read-only sources the sandbox uid cannot reach (the pyenv interpreter under /root, 0700)
   onto stage directories in its private mount namespace, then
   ``exec setpriv --reuid=U --regid=U --clear-groups -- prlimit ... -- bwrap ... -- COMMAND``;
4. bwrap: new user, pid, net, ipc, uts (and cgroup) namespaces, ``--disable-userns``, only /usr, the
   interpreter, the optional runtime folder (read-only) and the job folder (read-write) visible,
   ``--remount-ro /``, ``--clearenv`` plus the allow-list, ``--new-session``, ``--die-with-parent`` and the
   seccomp filter on an fd;
5. stdout and stderr are read with a byte cap into line-buffered chunks; ``@@zx:`` lines on stdout
   become metric events; a wall-clock deadline, the output cap, and cancellation all lift the CPU
   quota and write ``cgroup.kill`` (the whole tree at once, synchronously, from the caller's callback),
   then wait on inotify for ``cgroup.events`` to say the cgroup is empty;
6. produced files are collected without following links, then the tmpfs is unmounted and the cgroups
   removed. A sandbox process whose parent died first (bwrap's inner process when the tree is killed
   at once) is orphaned: the executor service makes itself the child subreaper
   (:func:`become_subreaper`), so the orphan becomes its child, and reaps it here at once instead of
   leaving a zombie for the host's init to reap whenever it gets to it (about a second later on some
   hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import shlex
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from zehanx_executor.domain import (
    SANDBOX_OWN_PROCESSES,
    Event,
    ExitReason,
    FileChunk,
    Finished,
    JobSpec,
    Limits,
    Output,
    ResourceUsage,
    Started,
    Stream,
)
from zehanx_executor.sandbox import jobdir as jobdir_mod
from zehanx_executor.sandbox.cgroups import CgroupLayout, JobCgroup, remove_stale
from zehanx_executor.sandbox.globs import compile_globs
from zehanx_executor.sandbox.jobdir import FoundFile, JobDir
from zehanx_executor.sandbox.metrics import MetricGate
from zehanx_executor.sandbox.output import CHUNK_BYTES, OutputBudget, OutputParser
from zehanx_executor.sandbox.probe import Capabilities, lib_links, world_traversable
from zehanx_executor.sandbox.seccomp import build_filter_bpf, filter_fd
from zehanx_runtime.errors import FailedPrecondition
from zehanx_runtime.logging import get_logger

if TYPE_CHECKING:
    from zehanx_executor.sandbox.session import LocalSession

log = get_logger("zehanx.executor.local")
T = TypeVar("T")

FILE_CHUNK_BYTES = 1024 * 1024
PARTIAL_FLUSH_S = 0.1
WATCH_INTERVAL_S = 0.25
DISK_FULL_SLACK = 64 * 1024
KILL_WAIT_S = 1.0
QUEUE_EVENTS = 256
JOB_MOUNT = "/job"
RUNTIME_MOUNT = "/zx/runtime"
LAUNCHER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class LocalSandboxConfig:
    """How the local backend lays out a sandbox. Built once from the settings."""

    work_dir: Path
    uid_base: int = 60600
    python_roots: tuple[Path, ...] = ()
    """Read-only binds at their real paths so the interpreter (and its site-packages) work inside."""
    path_dirs: tuple[str, ...] = ()
    """Directories put first on the sandbox's PATH (e.g. the venv's bin)."""
    runtime_dir: Path | None = None
    """Optional read-only folder visible at /zx/runtime (the trainer's helpers)."""
    extra_ro_binds: tuple[Path, ...] = ()
    base_env: Mapping[str, str] = field(default_factory=dict)


_instances = itertools.count()


def _proc_start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _etc_files(uid: int) -> dict[str, bytes]:
    return {
        "passwd": (
            f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
            f"sandbox:x:{uid}:{uid}:zehanx sandbox:{JOB_MOUNT}:/usr/sbin/nologin\n"
            f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "group": f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n".encode(),
        "hosts": b"127.0.0.1 localhost\n::1 localhost\n",
    }


def _data_fd(data: bytes) -> int:
    fd = os.memfd_create("zx-data", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class LocalSandbox:
    """The hardened local backend. Construct with a successful :class:`Capabilities` probe."""

    name = "local"

    def __init__(self, config: LocalSandboxConfig, caps: Capabilities) -> None:
        if not caps.ok or caps.cgroups is None:
            raise FailedPrecondition(
                "this host cannot run the local sandbox: " + "; ".join(caps.missing or ["no cgroups"]),
                reason="SANDBOX_UNAVAILABLE",
            )
        self.config = config
        self.caps = caps
        self.tools = caps.tools
        self.layout: CgroupLayout = caps.cgroups
        self.gpu_devices = list(caps.gpu_devices)
        # <pid>-<start time>-<n>: a later executor tells a dead one's leftovers from a live one's, and two
        # sandboxes in one process (tests) never share (or clean up) each other's jobs and cgroups.
        self.instance = f"{os.getpid()}-{_proc_start_time(os.getpid())}-{next(_instances)}"
        self.jobs_root = config.work_dir / "jobs" / self.instance
        self.stage_root = config.work_dir / "stage"
        self._bpf = build_filter_bpf()
        self._ro_binds: list[tuple[Path, Path]] = []  # (source as seen by bwrap, destination)
        self._staged: list[tuple[Path, Path]] = []  # (host source, stage mountpoint)
        self._setup_dirs()

    # -- setup ---------------------------------------------------------------------------------

    def _setup_dirs(self) -> None:
        for d in (self.config.work_dir, self.config.work_dir / "jobs", self.stage_root):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o711)
        self._clean_stale_instances()
        self.jobs_root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.jobs_root, 0o711)
        binds: list[tuple[Path, Path]] = []
        for root in self.config.python_roots:
            binds.append((root, root))
        if self.config.runtime_dir is not None:
            binds.append((self.config.runtime_dir, Path(RUNTIME_MOUNT)))
        for extra in self.config.extra_ro_binds:
            binds.append((extra, extra))
        for src, dst in binds:
            if not src.exists():
                raise FailedPrecondition(f"read-only bind source {src} does not exist")
            if src.is_dir() and os.stat(src).st_mode & 0o005 != 0o005:
                raise FailedPrecondition(
                    f"{src} is not readable by the sandbox uids: it needs o+rx (chmod o+rx {src})"
                )
            if world_traversable(src):
                self._ro_binds.append((src, dst))
            else:
                stage = self.stage_root / str(len(self._staged))
                stage.mkdir(mode=0o755, exist_ok=True)
                self._staged.append((src, stage))
                self._ro_binds.append((stage, dst))

    def _clean_stale_instances(self) -> None:
        """Unmount job folders and remove cgroups left by executor processes that died."""
        jobs = self.config.work_dir / "jobs"
        for inst in jobs.iterdir():
            if inst.name == self.instance or not inst.is_dir():
                continue
            pid_text, _, rest = inst.name.partition("-")
            start = rest.partition("-")[0]
            with contextlib.suppress(ValueError):
                if _proc_start_time(int(pid_text)) == start and start:
                    continue  # that executor is alive
            for job in inst.iterdir():
                with contextlib.suppress(OSError):
                    jobdir_mod.unmount(job)
                    job.rmdir()
            with contextlib.suppress(OSError):
                remove_stale(self.layout, inst.name)
                inst.rmdir()
            log.warning("cleaned a dead executor's leftovers", instance=inst.name)

    def description(self, limits: Limits) -> str:
        cg = f"cgroup v{self.layout.version} memory/pids" + (" + cgroup.kill" if self.layout.has_kill else "")
        if limits.cpus and self.layout.has_cpu:
            cg += f"; CPU quota {limits.cpus:g} cores"
        gpu = f"; GPU devices {' '.join(self.gpu_devices)}" if limits.gpu else ""
        return (
            "bwrap as an unprivileged uid: user, pid, net, ipc, uts namespaces; seccomp deny list; "
            f"{cg}; rlimits; read-only runtime; size-capped nosymfollow job folder{gpu}"
        )

    def uid_for_slot(self, slot: int) -> int:
        return self.config.uid_base + slot

    def check(self, spec: JobSpec) -> None:
        """Refuse what this backend cannot honour (before a slot is taken)."""
        if spec.limits.gpu and not self.gpu_devices:
            raise FailedPrecondition(
                "the job asks for a GPU but this host has no NVIDIA device nodes (/dev/nvidia*)",
                reason="GPU_UNAVAILABLE",
            )

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self.jobs_root.rmdir()
        with contextlib.suppress(OSError):
            remove_stale(self.layout, self.instance)

    # -- one run -------------------------------------------------------------------------------

    def start(self, spec: JobSpec, slot: int) -> _LocalRun:
        return _LocalRun(self, spec, slot)

    def start_session(self, spec: JobSpec, slot: int, idle_s: float) -> LocalSession:
        """Prepare a warm session (one process fed calls on stdin) in slot ``slot``, with the same
        isolation and cleanup as :meth:`start`; nothing runs until its events are iterated."""
        from zehanx_executor.sandbox.session import LocalSession

        return LocalSession(self, spec, slot, idle_s)

    def _env(self, spec: JobSpec, uid: int) -> dict[str, str]:
        path = ":".join([*self.config.path_dirs, "/usr/local/bin", "/usr/bin", "/bin"])
        env = {
            "PATH": path,
            "HOME": JOB_MOUNT,
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "USER": "sandbox",
            "LOGNAME": "sandbox",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "ZX_JOB_DIR": JOB_MOUNT,
        }
        if self.config.runtime_dir is not None:
            env["ZX_RUNTIME"] = RUNTIME_MOUNT
        env.update(self.config.base_env)
        threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        if spec.limits.cpus and not any(name in spec.env for name in threads):
            # torch and BLAS start one thread per host core; under a CPU quota of fewer cores those threads
            # are throttled in turn each period, slower than as many threads as the quota holds. A request
            # that sets its own thread count keeps it.
            env.update(dict.fromkeys(threads, str(max(1, int(spec.limits.cpus)))))
        env.update(spec.env)
        return env

    def build_argv(
        self, spec: JobSpec, *, uid: int, job_path: Path, cgroup: JobCgroup, fds: dict[str, int]
    ) -> list[str]:
        """The launcher command line (a shell that joins the cgroups and execs the chain)."""
        limits = spec.limits
        # RLIMIT_CPU is per process: a backstop a little above the tree-wide limit the watchdog enforces.
        cpu = int(limits.cpu_time_s) + 2
        prlimit = [
            self.tools["prlimit"],
            f"--fsize={limits.file_size_bytes}",
            f"--nofile={limits.open_files}",
            "--core=0",
            f"--cpu={cpu}",
            # per real uid, so it counts only this slot's processes; the pids cgroup is the real limit
            f"--nproc={limits.max_processes + 64}",
        ]
        if not limits.gpu:
            # An address-space backstop well above the cgroup limit; never for CUDA (it breaks init).
            prlimit.append(f"--as={max(4 * limits.memory_bytes, 8 * 1024**3)}")
        bwrap = [
            self.tools["bwrap"],
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "zx-sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
            *lib_links(),
        ]
        if os.path.exists("/etc/ld.so.cache"):
            bwrap += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        for dest, key in (("/etc/passwd", "passwd"), ("/etc/group", "group"), ("/etc/hosts", "hosts")):
            bwrap += ["--perms", "0444", "--ro-bind-data", str(fds[key]), dest]
        # /tmp comes before the read-only binds: a checkout (and its .venv) under /tmp stays visible.
        bwrap += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
        for src, dst in self._ro_binds:
            bwrap += ["--ro-bind", str(src), str(dst)]
        if limits.gpu:
            for dev in self.gpu_devices:
                bwrap += ["--dev-bind", dev, dev]
        bwrap += ["--bind", str(job_path), JOB_MOUNT, "--chdir", JOB_MOUNT, "--remount-ro", "/"]
        bwrap += ["--clearenv"]
        for k, v in self._env(spec, uid).items():
            bwrap += ["--setenv", k, v]
        bwrap += ["--seccomp", str(fds["seccomp"]), "--json-status-fd", str(fds["status"]), "--"]
        bwrap += list(spec.command)
        chain = [
            self.tools["setpriv"],
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--",
            *prlimit,
            "--",
            *bwrap,
        ]
        q = shlex.quote
        lines = ["set -e"]
        lines += [f"echo $$ > {q(str(f))}" for f in cgroup.procs_files]
        lines += [f"{q(self.tools['mount'])} --bind {q(str(s))} {q(str(d))}" for s, d in self._staged]
        lines.append("exec " + " ".join(q(a) for a in chain))
        script = "\n".join(lines)
        prefix = [self.tools["unshare"], "--mount", "--propagation", "private", "--"] if self._staged else []
        return [*prefix, self.tools["sh"], "-c", script]


#: How much of the end of a run's stderr its Finished message may quote.
STDERR_TAIL_BYTES = 2048


class _LocalRun:
    """State of one run; :meth:`events` is the async generator the caller iterates."""

    def __init__(self, box: LocalSandbox, spec: JobSpec, slot: int) -> None:
        self.box, self.spec, self.slot = box, spec, slot
        self.uid = box.uid_for_slot(slot)
        self.run_id = f"{spec.execution_id[:64]}-{uuid.uuid4().hex[:6]}"
        self.jobdir = JobDir(
            box.jobs_root / self.run_id, uid=self.uid, gid=self.uid, size_bytes=spec.limits.disk_bytes
        )
        self.cgroup = box.layout.job(box.instance, self.run_id)
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_EVENTS)
        self.gate = MetricGate()
        self.proc: asyncio.subprocess.Process | None = None
        self.reason: ExitReason | None = None
        self.reason_message = ""
        self.budget = OutputBudget(spec.limits.output_bytes)
        self.peak_disk = 0
        self.killed_at: float | None = None
        self.finished = False

    # -- killing -------------------------------------------------------------------------------

    def abort(self) -> None:
        if not self.finished:
            self.kill(ExitReason.CANCELLED, "the caller cancelled the execution")

    def kill(self, reason: ExitReason | None = None, message: str = "") -> None:
        """Kill the whole tree now (``cgroup.kill``); the first reason given is the one reported."""
        if reason is not None and self.reason is None:
            self.reason, self.reason_message = reason, message
        if self.killed_at is None:
            self.killed_at = time.monotonic()
        with contextlib.suppress(OSError):
            self.cgroup.kill()
        if self.proc is not None and self.proc.returncode is None:
            # Backstop for a launcher killed before it joined the cgroup: bwrap --die-with-parent
            # takes the sandbox down with it.
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait_empty(self, limit_s: float = KILL_WAIT_S) -> bool:
        return await self.cgroup.wait_empty(limit_s)

    async def _watch(self) -> None:
        """Every 250 ms: CPU time over all processes (cgroup accounting) and the job folder's size."""
        limit_us = self.spec.limits.cpu_time_s * 1e6
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            with contextlib.suppress(OSError):
                self.peak_disk = max(self.peak_disk, self.jobdir.disk_used())
            used = self.cgroup.usage()
            if used["cpu_user_us"] + used["cpu_system_us"] > limit_us:
                self.kill(ExitReason.TIMEOUT, f"CPU-time limit of {self.spec.limits.cpu_time_s:g} s reached")
                return

    # -- output --------------------------------------------------------------------------------

    async def _pump(self, stream: Stream, reader: asyncio.StreamReader) -> None:
        parser = OutputParser(stream, self.gate, self.budget)
        try:
            while True:
                try:
                    if parser.can_flush_partial():
                        data = await asyncio.wait_for(reader.read(CHUNK_BYTES), PARTIAL_FLUSH_S)
                    else:
                        data = await reader.read(CHUNK_BYTES)
                except TimeoutError:
                    for event in parser.flush_partial():
                        await self.queue.put(event)
                    continue
                if not data:
                    break
                for event in parser.feed(data):
                    await self.queue.put(event)
                if self.budget.capped:
                    self.kill(
                        ExitReason.OUTPUT_LIMIT,
                        f"output limit of {self.spec.limits.output_bytes} bytes reached",
                    )
            for event in parser.finish():
                await self.queue.put(event)
        finally:
            await self.queue.put(None)

    # -- the run -------------------------------------------------------------------------------

    async def _spawn(
        self, *, interactive: bool = False, line_limit: int = 2**16
    ) -> tuple[asyncio.subprocess.Process, int]:
        """Launch the chain. ``interactive`` (a session): stdin is a pipe the caller writes calls to,
        and ``line_limit`` bounds one stdout line (a reply) the session reads with ``readuntil``."""
        fds: dict[str, int] = {}
        status_r, status_w = os.pipe()
        try:
            fds["seccomp"] = filter_fd(self.box._bpf)
            for key, data in _etc_files(self.uid).items():
                fds[key] = _data_fd(data)
            fds["status"] = status_w
            argv = self.box.build_argv(
                self.spec, uid=self.uid, job_path=self.jobdir.path, cgroup=self.cgroup, fds=fds
            )
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if interactive else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=line_limit,
                env={"PATH": LAUNCHER_PATH},
                pass_fds=tuple(fds.values()),
                close_fds=True,
                start_new_session=True,
                cwd="/",
            )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            for fd in fds.values():
                os.close(fd)
            if "status" not in fds:
                os.close(status_w)
        return proc, status_r

    async def _stage(self) -> None:
        """Write the job's files into its folder and create its cgroup with the run's limits."""
        limits = self.spec.limits
        await _finish_even_if_cancelled(asyncio.to_thread(self.jobdir.prepare, self.spec.files))
        self.cgroup.create(limits.memory_bytes, limits.max_processes + SANDBOX_OWN_PROCESSES, limits.cpus)

    def _arm_wall_clock(self, scope: str) -> tuple[float, asyncio.TimerHandle]:
        """Right after the spawn: when the program started, and the timer that kills it at its wall-clock
        limit (``scope`` ends the message). A run aborted while it was being spawned is killed now."""
        limit_s = self.spec.limits.wall_time_s
        started_at = time.monotonic()
        if self.killed_at is not None:
            self.kill()
        handle = asyncio.get_running_loop().call_later(
            limit_s, self.kill, ExitReason.TIMEOUT, f"wall-clock limit of {limit_s:g} s reached{scope}"
        )
        return started_at, handle

    async def _relay(self, stderr_tail: bytearray) -> AsyncIterator[Event]:
        """The pumps' output until both streams closed; the end of stderr is kept in ``stderr_tail``."""
        open_streams = 2
        while open_streams:
            item = await self.queue.get()
            if item is None:
                open_streams -= 1
                continue
            if isinstance(item, Output) and item.stream is Stream.STDERR:
                stderr_tail += item.data
                del stderr_tail[:-STDERR_TAIL_BYTES]
            yield item

    async def events(self) -> AsyncIterator[Event]:
        spec, limits = self.spec, self.spec.limits
        tasks: list[asyncio.Task[None]] = []
        deadline_handle: asyncio.TimerHandle | None = None
        status_r = -1
        try:
            await self._stage()
            yield Started(spec.execution_id, self.box.name, self.box.description(limits), limits)
            if self.reason is not None:  # aborted before the program started
                self.finished = True
                yield Finished(self.reason, -1, 0, ResourceUsage(), self.reason_message)
                return
            self.proc, status_r = await self._spawn()
            started_at, deadline_handle = self._arm_wall_clock("")
            assert self.proc.stdout is not None and self.proc.stderr is not None
            tasks = [
                asyncio.create_task(self._pump(Stream.STDOUT, self.proc.stdout)),
                asyncio.create_task(self._pump(Stream.STDERR, self.proc.stderr)),
                asyncio.create_task(self._watch()),
            ]
            stderr_tail = bytearray()
            async for item in self._relay(stderr_tail):
                yield item
            rc = await self.proc.wait()
            wall = time.monotonic() - started_at
            deadline_handle.cancel()
            # The main process is gone; nothing of the job may outlive it.
            self.cgroup.kill()
            await self.wait_empty()
            with contextlib.suppress(OSError):
                self.peak_disk = max(self.peak_disk, self.jobdir.disk_used())
            status = _read_status(status_r)
            found, rejected = await _finish_even_if_cancelled(
                asyncio.to_thread(self.jobdir.scan, compile_globs(spec.collect))
            )
            budget = spec.collect_max_bytes
            for f in found:
                include = f.size <= budget
                if not include:
                    yield FileChunk(f.path, f.size, f.sha256, content_included=False)
                    continue
                budget -= f.size
                async for chunk in _file_chunks(self.jobdir, f):
                    yield chunk
            finished = self._finish(rc, status, wall, rejected, bytes(stderr_tail))
            self.finished = True
            yield finished
        finally:
            if deadline_handle is not None:
                deadline_handle.cancel()
            if not self.finished:
                self.kill(ExitReason.CANCELLED, "the caller cancelled the execution")
            await self._cleanup(tasks, status_r)

    def _finish(
        self, rc: int, status: dict[str, int], wall: float, rejected: int, stderr_tail: bytes
    ) -> Finished:
        usage_raw = self.cgroup.usage()
        oom = self.cgroup.oom_kills()
        exit_code, sig = rc, 0
        if rc < 0:  # bwrap itself was killed (by our cgroup.kill)
            exit_code, sig = -1, -rc
        elif "exit-code" in status and rc > 128:
            # bwrap reports a child killed by signal N as 128 + N, as a shell does.
            exit_code, sig = -1, rc - 128
        limits = self.spec.limits
        reason, message = self.reason, self.reason_message
        if reason is None:
            if "child-pid" not in status:
                reason = ExitReason.SANDBOX_ERROR
                message = (
                    "the sandbox failed to start: " + stderr_tail.decode(errors="replace").strip()[-500:]
                )
            elif exit_code == 0:
                reason = ExitReason.COMPLETED
            elif oom:
                reason = ExitReason.MEMORY
                message = (
                    f"memory limit of {limits.memory_bytes} bytes reached ({oom} process(es) OOM-killed)"
                )
            elif sig == signal.SIGXCPU:
                reason, message = ExitReason.TIMEOUT, "CPU-time limit reached (RLIMIT_CPU)"
            elif sig == signal.SIGXFSZ or self.peak_disk >= limits.disk_bytes - DISK_FULL_SLACK:
                reason = ExitReason.DISK_LIMIT
                message = (
                    f"the job folder's limit of {limits.disk_bytes} bytes or the file-size limit was reached"
                )
            elif _hit_file_size(stderr_tail):
                reason = ExitReason.DISK_LIMIT
                message = f"file-size limit of {limits.file_size_bytes} bytes reached"
            else:
                reason = ExitReason.FAILED
                message = f"exited with status {exit_code}" if sig == 0 else f"killed by signal {sig}"
        usage = ResourceUsage(
            wall_time_s=wall,
            cpu_time_s=(usage_raw["cpu_user_us"] + usage_raw["cpu_system_us"]) / 1e6,
            max_rss_bytes=usage_raw["peak_memory"],
            output_bytes=self.budget.used,
            disk_bytes=self.peak_disk,
            metric_lines=self.gate.accepted,
            metric_lines_dropped=self.gate.dropped,
            pids_limit_hits=usage_raw["pids_limit_hits"],
            files_rejected=rejected,
        )
        return Finished(reason, exit_code, sig, usage, message)

    async def _cleanup(self, tasks: list[asyncio.Task[None]], status_r: int) -> None:
        try:
            if self.proc is not None:
                if not await self.wait_empty():
                    log.error("job cgroup still populated after kill", run=self.run_id)
                if self.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.proc.wait(), KILL_WAIT_S)
                with contextlib.suppress(OSError):
                    keep = self.proc.pid if self.proc.returncode is None else None
                    if not await _finish_even_if_cancelled(reap_run(self.uid, keep=keep)):
                        log.warning("sandbox processes outlived the run", run=self.run_id, uid=self.uid)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        finally:
            if status_r >= 0:
                os.close(status_r)
            try:
                await _finish_even_if_cancelled(asyncio.to_thread(self.jobdir.destroy))
            except OSError as exc:
                log.error("could not remove the job folder", run=self.run_id, error=str(exc))
            self.cgroup.remove()


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux ``prctl``): a sandbox process
    orphaned by a kill becomes our child, so :func:`reap_orphans` can reap it at once. Call it in the
    executor's service process only (a test process that is a subreaper would collect every orphan of
    the processes it starts)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(uid: int, *, keep: int | None) -> int:
    """Reap the zombie children of this process that ran as ``uid`` (a sandbox slot's uid: one run at a
    time owns it), except ``keep`` (the run's launcher, which asyncio waits for). Returns how many
    processes of ``uid`` are left (alive, or zombies that are not ours to reap)."""
    me = os.getpid()
    left = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == keep:
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            if int(fields["Uid"].split()[0]) != uid:
                continue
            ours = fields["State"].split()[0] == "Z" and int(fields["PPid"]) == me
        except (KeyError, IndexError, ValueError):
            continue
        if ours:
            try:
                os.waitpid(int(entry.name), os.WNOHANG)
                continue
            except ChildProcessError:
                pass
        left += 1
    return left


async def reap_run(uid: int, *, keep: int | None, limit_s: float = 1.0) -> bool:
    """:func:`reap_orphans` until no process of ``uid`` is left (an orphan is handed to us when its
    parent's exit completes, a moment after the cgroup empties), for at most ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while await asyncio.to_thread(reap_orphans, uid, keep=keep):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def _hit_file_size(stderr_tail: bytes) -> bool:
    """Python turns RLIMIT_FSIZE into OSError EFBIG (it ignores SIGXFSZ): look for it in the traceback."""
    return b"[Errno 27] File too large" in stderr_tail


async def _file_chunks(jobdir: JobDir, found: FoundFile) -> AsyncIterator[FileChunk]:
    """The content of a collected file as FileChunk events of at most 1 MiB."""
    chunks = jobdir.read_chunks(found, FILE_CHUNK_BYTES)
    sent = False
    while True:
        item = await asyncio.to_thread(next, chunks, None)
        if item is None:
            break
        offset, data = item
        last = offset + len(data) >= found.size
        yield FileChunk(found.path, found.size, found.sha256, True, offset, data, last)
        sent = True
    if not sent:  # an empty file
        yield FileChunk(found.path, found.size, found.sha256, True, 0, b"", True)


async def _finish_even_if_cancelled(coro: Awaitable[T]) -> T:
    """Await work running in a thread; on cancellation wait for the thread to finish first, so cleanup
    never races it (a thread cannot be interrupted), then let the cancellation propagate."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


def _read_status(fd: int) -> dict[str, int]:
    """bwrap's --json-status-fd documents: ``child-pid`` (the sandbox started) and ``exit-code``."""
    out: dict[str, int] = {}
    if fd < 0:
        return out
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            data += chunk
            if len(data) > 1 << 20:
                break
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                out.update({k: v for k, v in doc.items() if isinstance(v, int)})
    return out
