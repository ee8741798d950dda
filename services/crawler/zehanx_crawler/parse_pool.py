"""Parsing processes for the crawler: hostile bytes are parsed where a stuck or greedy parse can be killed.

A :class:`ParsePool` keeps up to ``processes`` parsing processes (:mod:`zehanx_crawler.parse_worker`),
started with exec (never a fork of the gRPC server), each capped in address space. A call takes an idle
process (or starts one), sends it a function and its arguments, and waits for the answer. When the
waiting task is cancelled (the build's time budget ran out, or its caller went away) the process is
killed and reaped before the cancellation goes on, so no parse outlives its job; the next call starts a
fresh process. A process that hit its memory cap, crashed or grew large is replaced too.

Answers are unpickled with an allowlist of classes: a parsing process, whatever it read, can hand the
server only tables, resources, parse results and domain errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pickle
import sys
from collections.abc import Callable
from typing import Any

from zehanx_runtime import errors
from zehanx_runtime.errors import Internal, ResourceExhausted
from zehanx_runtime.logging import get_logger

log = get_logger("zehanx.crawler.parse_pool")

_FRAME = 8
_CHUNK = 1024 * 1024
#: Leave a process whose resident memory is above this after a call: memory a big parse took is not
#: given back to the system while the process lives.
_RETIRE_RSS = 1024 * 1024 * 1024
_BOOT = "import sys; from zehanx_crawler.parse_worker import serve; sys.exit(serve(sys.argv[1:]))"

_ALLOWED = {
    ("zehanx_crawler.domain", "RawTable"),
    ("zehanx_crawler.domain", "Resource"),
    ("zehanx_crawler.parsers", "Parsed"),
    ("zehanx_crawler.cleaning", "Table"),
    ("zehanx_crawler.cleaning", "Column"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("zehanx_runtime.errors", "FieldViolation"),
} | {
    ("zehanx_runtime.errors", name)
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.DomainError)
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"a parsing process sent {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def _loads(data: bytes) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


def _human(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


class _Process:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.peak_rss = 0
        self.rss = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, payload: bytes) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(len(payload).to_bytes(_FRAME, "big"))
        view = memoryview(payload)
        for start in range(0, len(view), _CHUNK):
            self.proc.stdin.write(view[start : start + _CHUNK])
            await self.proc.stdin.drain()
        await self.proc.stdin.drain()
        head = await self.proc.stdout.readexactly(_FRAME)
        return await self.proc.stdout.readexactly(int.from_bytes(head, "big"))

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


class ParsePool:
    """Up to ``processes`` parsing processes, each capped at ``memory_bytes`` of address space."""

    def __init__(self, *, processes: int, memory_bytes: int) -> None:
        self._processes = processes
        self._memory = memory_bytes
        self._slots = asyncio.Semaphore(processes)
        self._idle: list[_Process] = []
        self._busy: set[_Process] = set()
        self._closed = False
        #: Peak resident memory (bytes) of the process that answered the last call, over its life.
        self.last_peak_rss = 0

    def pids(self) -> list[int]:
        """Process ids of the parsing processes alive now (idle and busy)."""
        return [p.pid for p in [*self._idle, *self._busy]]

    async def _start(self) -> _Process:
        # No secrets in the environment of a process that reads hostile bytes; the same import path
        # as this process (as multiprocessing's spawn does).
        env = {"PATH": os.defpath, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BOOT,
            str(self._memory),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        log.debug("parsing process started", pid=proc.pid)
        return _Process(proc)

    async def run(self, function: Callable[..., Any], *args: Any, what: str) -> Any:
        """``function(*args)`` in a parsing process. ``function`` must be importable by name (a
        module-level function); ``what`` names the input in errors."""
        if self._closed:
            raise Internal("the crawler is shutting down", reason="SHUTTING_DOWN")
        payload = await asyncio.to_thread(pickle.dumps, (function, args), pickle.HIGHEST_PROTOCOL)
        async with self._slots:
            process = self._idle.pop() if self._idle else await self._start()
            self._busy.add(process)
            keep = False
            try:
                try:
                    data = await process.call(payload)
                except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
                    code = await process.proc.wait()
                    raise ResourceExhausted(
                        f"the parsing process stopped while reading {what} (exit status {code}); the input "
                        f"may need more than its {_human(self._memory)} memory cap (ZX_CRAWLER_PARSE_MEMORY_BYTES)",
                        reason="PARSE_PROCESS_DIED",
                        metadata={"exit_status": str(code)},
                    ) from None
                del payload
                try:
                    status, value, process.peak_rss, process.rss = (
                        await asyncio.to_thread(_loads, data) if len(data) > _CHUNK else _loads(data)
                    )
                except Exception as exc:  # not a reply this pool's worker writes
                    raise Internal(
                        f"the parsing process answered for {what} with what is not allowed ({exc})",
                        reason="PARSE_FAILED",
                    ) from None
                self.last_peak_rss = process.peak_rss
                keep = status in ("ok", "error") and process.rss < _RETIRE_RSS
            finally:
                self._busy.discard(process)
                if keep and not self._closed:
                    self._idle.append(process)
                else:
                    # Cancelled (time budget, caller gone), failed or retired: the process goes now.
                    await asyncio.shield(process.kill())
        if status == "ok":
            return value
        if status == "error":
            raise value
        if status == "memory":
            raise ResourceExhausted(
                f"parsing {what} needs more than the {_human(self._memory)} memory cap of a parsing process "
                "(ZX_CRAWLER_PARSE_MEMORY_BYTES)",
                reason="PARSE_OUT_OF_MEMORY",
                metadata={"limit_bytes": str(self._memory)},
            )
        raise Internal(f"parsing {what} failed: {value}", reason="PARSE_FAILED")

    async def close(self) -> None:
        """Kill every parsing process (a running call then fails or is cancelled by its owner)."""
        self._closed = True
        processes, self._idle = [*self._idle, *self._busy], []
        for process in processes:
            await process.kill()
