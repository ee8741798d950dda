"""A warm session in the local sandbox: one sandboxed process kept alive and fed calls.

The process is launched exactly as a run is (:class:`~zehanx_executor.sandbox.local._LocalRun`: the
same job folder, cgroups, seccomp filter, namespaces, uid, rlimits, kill and cleanup), except that its
stdin is a pipe. The framing is one line per message:

- a call is its payload plus ``\\n`` written to stdin (payloads never hold a newline);
- the process answers every call with one line on stdout, in the order the calls came; a line read
  while no call is waiting is plain stdout output, not a reply;
- stderr is output, line-buffered as in a run; stderr and stray stdout count against the output limit,
  replies do not (a long-lived predictor would exhaust it otherwise);
- a reply line longer than :data:`REPLY_MAX_BYTES` kills the session (reason OUTPUT_LIMIT).

The session's wall-clock and CPU-time limits cover its whole life. With no call waiting for
``idle_s`` seconds the tree is killed (reason TIMEOUT). Closing stdin (:meth:`LocalSession.close_input`,
the caller's half-close) asks the process to exit; status 0 then is COMPLETED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import time
from collections import deque
from collections.abc import AsyncIterator

from zehanx_executor.domain import (
    ExitReason,
    Finished,
    JobSpec,
    Output,
    Reply,
    ResourceUsage,
    SessionEvent,
    Started,
    Stream,
)
from zehanx_executor.sandbox.local import LocalSandbox, _LocalRun, _read_status
from zehanx_executor.sandbox.output import CHUNK_BYTES
from zehanx_runtime.errors import FailedPrecondition

MiB = 1024 * 1024
#: Longest call payload and longest reply line (the newline excluded).
REPLY_MAX_BYTES = 32 * MiB
#: Calls written to the process and not answered yet, at most.
MAX_PENDING_CALLS = 64
#: Kernel buffer of the session's stdin and stdout pipes (64 KiB by default): a batch's call (100 KiB
#: for 1000 rows of 4 columns) and its reply then pass in one write each, not in 64 KiB turns between
#: the executor and the process (0.7 to 0.3 ms a round trip, measured; more on a busy machine).
PIPE_BYTES = MiB


class LocalSession(_LocalRun):
    """State of one session; :meth:`events` is the async generator the caller iterates while another
    task feeds :meth:`call` and, at the end, :meth:`close_input`."""

    def __init__(self, box: LocalSandbox, spec: JobSpec, slot: int, idle_s: float) -> None:
        super().__init__(box, spec, slot)
        self.idle_s = idle_s
        self.pending: deque[tuple[int, float]] = deque()
        self.calls = 0
        self.input_closed = False
        self._stdin: asyncio.StreamWriter | None = None
        self._spawned = asyncio.Event()
        self._idle_handle: asyncio.TimerHandle | None = None

    # -- the caller's side ----------------------------------------------------------------------

    async def call(self, call_id: int, payload: bytes) -> bool:
        """Write one call to the process. Returns False when the session is ending (the call is dropped:
        the stream's last event says how it ended). Waits while the pipe is full (backpressure)."""
        await self._spawned.wait()
        if not self._accepting():
            return False
        if len(self.pending) >= MAX_PENDING_CALLS:
            raise FailedPrecondition(
                f"{MAX_PENDING_CALLS} calls are already waiting for their replies; wait for one before "
                "sending more",
                reason="TOO_MANY_PENDING_CALLS",
                metadata={"max_pending_calls": str(MAX_PENDING_CALLS)},
            )
        assert self._stdin is not None
        self.pending.append((call_id, time.monotonic()))
        self.calls += 1
        self._disarm_idle()
        try:
            self._stdin.write(payload + b"\n")
            await self._stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False  # the process is gone; its end is reported by events()
        return True

    def close_input(self) -> None:
        """The caller is done: close the process's stdin (it should exit on EOF)."""
        self.input_closed = True
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.close()

    def _accepting(self) -> bool:
        return (
            self._stdin is not None
            and not self.finished
            and self.killed_at is None
            and not self.input_closed
            and not self._stdin.is_closing()
        )

    # -- idle ---------------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        self._disarm_idle()
        if not self.pending and not self.finished:
            self._idle_handle = asyncio.get_running_loop().call_later(self.idle_s, self._idle)

    def _disarm_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _idle(self) -> None:
        self.kill(ExitReason.TIMEOUT, f"idle for {self.idle_s:g} s with no call (the session's idle timeout)")

    # -- stdout: replies ----------------------------------------------------------------------

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:  # the last bytes before exit, without a newline: plain output
                        await self._stray(exc.partial)
                    return
                except asyncio.LimitOverrunError:
                    self.kill(
                        ExitReason.OUTPUT_LIMIT,
                        f"the process wrote a stdout line longer than {REPLY_MAX_BYTES} bytes "
                        "(a reply is at most that)",
                    )
                    return
                if self.pending:
                    call_id, sent = self.pending.popleft()
                    await self.queue.put(Reply(call_id, line[:-1], time.monotonic() - sent))
                    if not self.pending:
                        self._arm_idle()
                else:
                    await self._stray(line)
        finally:
            await self.queue.put(None)

    async def _stray(self, data: bytes) -> None:
        """stdout written while no call waits: output, cut at the output limit like stderr."""
        for start in range(0, len(data), CHUNK_BYTES):
            kept = self.budget.take(data[start : start + CHUNK_BYTES])
            if kept:
                await self.queue.put(Output(Stream.STDOUT, kept))
            if self.budget.capped:
                self.kill(
                    ExitReason.OUTPUT_LIMIT, f"output limit of {self.spec.limits.output_bytes} bytes reached"
                )
                return

    # -- the session --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[SessionEvent]:  # type: ignore[override]
        spec, limits = self.spec, self.spec.limits
        tasks: list[asyncio.Task[None]] = []
        deadline_handle: asyncio.TimerHandle | None = None
        status_r = -1
        try:
            await self._stage()
            if self.reason is not None:  # aborted before the process started
                self.finished = True
                yield Finished(self.reason, -1, 0, ResourceUsage(), self.reason_message)
                return
            self.proc, status_r = await self._spawn(interactive=True, line_limit=REPLY_MAX_BYTES + 1)
            _widen_pipes(self.proc)
            started_at, deadline_handle = self._arm_wall_clock(" (a session's whole life)")
            assert self.proc.stdin is not None and self.proc.stdout is not None
            assert self.proc.stderr is not None
            self._stdin = self.proc.stdin
            if self.input_closed:  # the caller half-closed before the process was started
                self._stdin.close()
            tasks = [
                asyncio.create_task(self._read_replies(self.proc.stdout)),
                asyncio.create_task(self._pump(Stream.STDERR, self.proc.stderr)),
                asyncio.create_task(self._watch()),
            ]
            self._arm_idle()
            self._spawned.set()
            yield Started(spec.execution_id, self.box.name, self.box.description(limits), limits)
            stderr_tail = bytearray()
            async for item in self._relay(stderr_tail):
                yield item  # type: ignore[misc]
            rc = await self.proc.wait()
            wall = time.monotonic() - started_at
            deadline_handle.cancel()
            self._disarm_idle()
            self.cgroup.kill()  # the main process is gone; nothing of the session may outlive it
            await self.wait_empty()
            status = _read_status(status_r)
            finished = self._session_finish(
                self._finish(rc, status, wall, 0, bytes(stderr_tail)), stderr_tail
            )
            self.finished = True
            yield finished
        finally:
            self._spawned.set()  # a caller waiting to send a call gives up
            self._disarm_idle()
            if deadline_handle is not None:
                deadline_handle.cancel()
            if not self.finished:
                self.kill(ExitReason.CANCELLED, "the caller cancelled the session")
            if self._stdin is not None:
                with contextlib.suppress(Exception):
                    self._stdin.close()
            await self._cleanup(tasks, status_r)

    def _session_finish(self, finished: Finished, stderr_tail: bytearray) -> Finished:
        """Say what a session's end means: who ended it, unanswered calls, the crash's stderr."""
        message = finished.message
        if finished.reason is ExitReason.COMPLETED and not self.input_closed:
            message = "the process exited with status 0 before the caller closed the session"
        if finished.reason is ExitReason.FAILED:
            tail = stderr_tail.decode(errors="replace").strip()[-1000:]
            if tail:
                message += f"; the end of its stderr:\n{tail}"
        if self.pending:
            ids = ", ".join(str(call_id) for call_id, _ in list(self.pending)[:8])
            message += f" ({len(self.pending)} call(s) unanswered: call_id {ids})"
        return dataclasses.replace(finished, message=message.strip())


def _widen_pipes(proc: asyncio.subprocess.Process) -> None:
    """Give the process's stdin and stdout pipes :data:`PIPE_BYTES` of buffer (best effort: a kernel
    that refuses, beyond /proc/sys/fs/pipe-max-size, keeps its default; only the speed differs)."""
    transport = getattr(proc, "_transport", None)  # asyncio keeps the pipes' transports there
    if transport is None:
        return
    for fd in (0, 1):
        pipe = transport.get_pipe_transport(fd)
        handle = pipe.get_extra_info("pipe") if pipe is not None else None
        if handle is not None:
            with contextlib.suppress(OSError, ValueError):
                fcntl.fcntl(handle.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
