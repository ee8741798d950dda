"""UNSAFE development runner: runs the program as a plain child process, WITHOUT ANY ISOLATION.

It exists only so a developer on a host that cannot sandbox (no root, no user namespaces) can try the
rest of the pipeline with code they wrote themselves. It is used only when the setting
``ZX_EXECUTOR_UNSAFE_DEV_NO_SANDBOX=1`` is given, never by default; the executor then logs a warning
at start and every ``Started`` event says so. The program sees the host's files and network, runs as
the executor's user, and is stopped only by the wall clock, the output cap and a process-group kill.
Never point it at generated code you have not read, and never run the attack tests with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from zehanx_executor.domain import (
    Event,
    ExitReason,
    FileChunk,
    Finished,
    JobSpec,
    ResourceUsage,
    Started,
    Stream,
)
from zehanx_executor.sandbox.globs import compile_globs
from zehanx_executor.sandbox.jobdir import JobDir
from zehanx_executor.sandbox.metrics import MetricGate
from zehanx_executor.sandbox.output import CHUNK_BYTES, OutputBudget, OutputParser

WARNING = "UNSAFE: no sandbox (ZX_EXECUTOR_UNSAFE_DEV_NO_SANDBOX=1): the program runs as a plain process"


class UnsafeDevRunner:
    name = "unsafe-dev-no-sandbox"

    def __init__(self, *, python_bin_dir: str | None = None) -> None:
        self.python_bin_dir = python_bin_dir

    def check(self, spec: JobSpec) -> None:
        return None

    def start(self, spec: JobSpec, slot: int) -> _UnsafeRun:
        return _UnsafeRun(self, spec)

    async def close(self) -> None:
        return None


class _UnsafeRun:
    def __init__(self, box: UnsafeDevRunner, spec: JobSpec) -> None:
        self.box, self.spec = box, spec
        self.proc: asyncio.subprocess.Process | None = None
        self.reason: ExitReason | None = None
        self.message = ""
        self.finished = False
        self.gate = MetricGate()
        self.budget = OutputBudget(spec.limits.output_bytes)
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(256)

    def abort(self) -> None:
        if not self.finished:
            self._kill(ExitReason.CANCELLED, "the caller cancelled the execution")

    def _kill(self, reason: ExitReason, message: str) -> None:
        if self.reason is None:
            self.reason, self.message = reason, message
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def _pump(self, stream: Stream, reader: asyncio.StreamReader) -> None:
        parser = OutputParser(stream, self.gate, self.budget)
        try:
            while data := await reader.read(CHUNK_BYTES):
                for event in parser.feed(data):
                    await self.queue.put(event)
                if self.budget.capped:
                    self._kill(ExitReason.OUTPUT_LIMIT, "output limit reached")
            for event in parser.finish():
                await self.queue.put(event)
        finally:
            await self.queue.put(None)

    async def events(self) -> AsyncIterator[Event]:
        spec = self.spec
        tmp = Path(tempfile.mkdtemp(prefix="zx-unsafe-"))
        jobdir = JobDir(tmp / "job", uid=os.getuid(), gid=os.getgid(), size_bytes=0, tmpfs=False)
        tasks: list[asyncio.Task[None]] = []
        timer: asyncio.TimerHandle | None = None
        try:
            await asyncio.to_thread(jobdir.prepare, spec.files)
            yield Started(spec.execution_id, self.box.name, WARNING, spec.limits)
            path = os.pathsep.join(p for p in (self.box.python_bin_dir, "/usr/bin", "/bin") if p)
            env = {"PATH": path, "HOME": str(jobdir.path), "PYTHONUNBUFFERED": "1", **dict(spec.env)}
            env["ZX_JOB_DIR"] = str(jobdir.path)
            self.proc = await asyncio.create_subprocess_exec(
                *spec.command,
                cwd=jobdir.path,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            started = time.monotonic()
            timer = asyncio.get_running_loop().call_later(
                spec.limits.wall_time_s, self._kill, ExitReason.TIMEOUT, "wall-clock limit reached"
            )
            assert self.proc.stdout is not None and self.proc.stderr is not None
            tasks = [
                asyncio.create_task(self._pump(Stream.STDOUT, self.proc.stdout)),
                asyncio.create_task(self._pump(Stream.STDERR, self.proc.stderr)),
            ]
            open_streams = 2
            while open_streams:
                item = await self.queue.get()
                if item is None:
                    open_streams -= 1
                else:
                    yield item
            rc = await self.proc.wait()
            wall = time.monotonic() - started
            found, rejected = await asyncio.to_thread(jobdir.scan, compile_globs(spec.collect))
            budget = spec.collect_max_bytes
            for f in found:
                if f.size > budget:
                    yield FileChunk(f.path, f.size, f.sha256, False)
                    continue
                budget -= f.size
                data = b"".join(d for _, d in jobdir.read_chunks(f, 1 << 20))
                yield FileChunk(f.path, f.size, f.sha256, True, 0, data, True)
            code, sig = (rc, 0) if rc >= 0 else (-1, -rc)
            reason = self.reason or (ExitReason.COMPLETED if rc == 0 else ExitReason.FAILED)
            usage = ResourceUsage(
                wall_time_s=wall,
                output_bytes=self.budget.used,
                metric_lines=self.gate.accepted,
                metric_lines_dropped=self.gate.dropped,
                files_rejected=rejected,
            )
            finished = Finished(reason, code, sig, usage, self.message or WARNING)
            self.finished = True
            yield finished
        finally:
            if timer is not None:
                timer.cancel()
            if not self.finished:
                self._kill(ExitReason.CANCELLED, "cancelled")
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 2.0)
            for t in tasks:
                t.cancel()
            await asyncio.to_thread(jobdir.destroy)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(tmp.rmdir)
