"""The executor's domain: turn a request into a checked job, wait for a slot, run it on the backend.

No grpc here: the servicer converts protobuf in and out. Slots bound how many programs run at once,
and a memory budget bounds the sum of their memory limits (so 8 slots of 16 GiB cannot overcommit a
24 GiB host); beyond either a bounded queue waits (never longer than ``queue_timeout_s``), and beyond
the queue the request is refused with RESOURCE_EXHAUSTED at once. Nothing ever hangs on a full executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from zehanx_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, ResourceExhausted
from zehanx_runtime.logging import get_logger

from zehanx_executor.domain import (
    Event,
    Finished,
    JobFile,
    JobSpec,
    Limits,
    Reply,
    SessionEvent,
    Started,
)
from zehanx_executor.sandbox.base import SandboxBackend, SandboxRun, SandboxSession, SessionBackend

log = get_logger("zehanx.executor")

# Prometheus (zehanx_runtime.metrics serves them): bounded labels only, never a job or execution id.
SLOTS_BUSY = Gauge("zx_executor_slots_busy", "Sandbox slots running a program now.")
SLOTS_TOTAL = Gauge("zx_executor_slots", "Sandbox slots of this executor.")
QUEUE_LENGTH = Gauge("zx_executor_queue_length", "Executions waiting for a slot.")
RUNS = Counter("zx_executor_runs_total", "Runs that ended, by how they ended.", ["backend", "reason"])
START_SECONDS = Histogram(
    "zx_executor_sandbox_start_seconds",
    "Time from a slot being granted to the sandbox reporting the program started.",
    ["backend"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PEAK_MEMORY = Histogram(
    "zx_executor_run_peak_memory_bytes",
    "Peak memory of a run's cgroup (rss, page cache and tmpfs).",
    ["backend"],
    buckets=tuple(2**n * 1024 * 1024 for n in range(4, 16)),  # 16 MiB .. 16 GiB
)
SESSION_SLOTS = Gauge("zx_executor_session_slots", "Warm sessions this executor may hold at once.")
SESSIONS_OPEN = Gauge("zx_executor_sessions_open", "Warm sessions open now.")
SESSION_MEMORY_RESERVED = Gauge(
    "zx_executor_session_memory_reserved_bytes", "Sum of the memory limits of the open sessions."
)
SESSION_MEMORY_TOTAL = Gauge(
    "zx_executor_session_memory_bytes", "Memory the sessions may reserve together (their limits' sum)."
)
SESSION_CALLS = Counter("zx_executor_session_calls_total", "Calls written to sessions.", ["backend"])
SESSIONS_ENDED = Counter(
    "zx_executor_sessions_ended_total", "Sessions that ended, by how they ended.", ["backend", "reason"]
)
SESSION_CALL_SECONDS = Histogram(
    "zx_executor_session_call_seconds",
    "Time from a call being written to a session's process to its reply being read.",
    ["backend"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


@dataclass(frozen=True, slots=True)
class LimitRequest:
    """Limits as asked for: ``None`` takes the server's default."""

    wall_time_s: float | None = None
    cpu_time_s: float | None = None
    memory_bytes: int | None = None
    max_processes: int | None = None
    disk_bytes: int | None = None
    output_bytes: int | None = None
    file_size_bytes: int | None = None
    gpu: bool = False
    cpus: float | None = None


@dataclass(frozen=True)
class LimitPolicy:
    """Defaults for what a request leaves unset, and ceilings that lower what it asks for."""

    defaults: Limits
    ceilings: Limits
    default_collect_bytes: int = 256 * 1024 * 1024
    max_collect_bytes: int = 1024 * 1024 * 1024

    def effective(self, req: LimitRequest) -> Limits:
        d, c = self.defaults, self.ceilings

        def pick(asked: float | None, default: float, ceiling: float) -> float:
            return min(asked if asked else default, ceiling)

        wall = pick(req.wall_time_s, d.wall_time_s, c.wall_time_s)
        # CPU time over the whole tree: by default as much as every core busy for the wall time.
        cpu_default = wall * max(1, os.cpu_count() or 1)
        disk = int(pick(req.disk_bytes, d.disk_bytes, c.disk_bytes))
        return Limits(
            wall_time_s=wall,
            cpu_time_s=pick(req.cpu_time_s, cpu_default, c.cpu_time_s),
            memory_bytes=int(pick(req.memory_bytes, d.memory_bytes, c.memory_bytes)),
            max_processes=int(pick(req.max_processes, d.max_processes, c.max_processes)),
            disk_bytes=disk,
            output_bytes=int(pick(req.output_bytes, d.output_bytes, c.output_bytes)),
            file_size_bytes=int(min(pick(req.file_size_bytes, d.file_size_bytes, c.file_size_bytes), disk)),
            gpu=req.gpu,
            open_files=d.open_files,
            tmp_bytes=d.tmp_bytes,
            cpus=pick(req.cpus, d.cpus, c.cpus),
        )

    def collect_bytes(self, asked: int) -> int:
        return min(asked or self.default_collect_bytes, self.max_collect_bytes)


# Names the executor sets itself; a request may not override them.
RESERVED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "USER",
        "LOGNAME",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "ZX_JOB_DIR",
        "ZX_RUNTIME",
    }
)
# Secrets never reach the sandbox (DESIGN.md, Security): refuse names that look like one even when the
# allow-list would let them through.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|DSN)", re.I)


@dataclass(frozen=True)
class EnvPolicy:
    """Which environment variables a request may set for its program (fnmatch patterns)."""

    allow: tuple[str, ...] = ("ZX_*",)

    def violations(self, env: Mapping[str, str]) -> list[FieldViolation]:
        out = []
        for name in env:
            where = f"env[{name[:64]}]"
            if name in RESERVED_ENV:
                out.append(FieldViolation(where, "is set by the executor and cannot be overridden"))
            elif _SECRET_NAME.search(name):
                out.append(FieldViolation(where, "looks like a secret; secrets never enter the sandbox"))
            elif not any(fnmatch.fnmatchcase(name, p) for p in self.allow):
                out.append(
                    FieldViolation(where, f"is not on the executor's allow-list ({', '.join(self.allow)})")
                )
        return out


class SlotPool:
    """``size`` numbered slots and, optionally, a memory budget: a run takes a slot and reserves its
    memory limit, and is admitted only when both are there. At most ``max_waiting`` callers queue, in
    arrival order (a large request at the head is not overtaken by small ones, so it is never starved),
    each at most ``wait_timeout_s``; anyone beyond that gets ResourceExhausted immediately, and a run
    that asks for more memory than the whole budget FailedPrecondition (it could never be admitted)."""

    def __init__(
        self, size: int, *, max_waiting: int, wait_timeout_s: float, memory_budget: int | None = None
    ) -> None:
        if size < 1 or max_waiting < 0 or wait_timeout_s <= 0:
            raise ValueError("size >= 1, max_waiting >= 0 and wait_timeout_s > 0 are required")
        if memory_budget is not None and memory_budget <= 0:
            raise ValueError("memory_budget must be positive (None: no budget)")
        self.size, self.max_waiting, self.wait_timeout_s = size, max_waiting, wait_timeout_s
        self.memory_budget = memory_budget
        self.memory_reserved = 0
        self._free = list(range(size))
        self._waiters: deque[tuple[asyncio.Future[int], int]] = deque()

    @property
    def busy(self) -> int:
        return self.size - len(self._free)

    @property
    def waiting(self) -> int:
        return sum(1 for w, _ in self._waiters if not w.done())

    @contextlib.asynccontextmanager
    async def slot(self, memory_bytes: int = 0) -> AsyncIterator[int]:
        memory = memory_bytes if self.memory_budget is not None else 0
        index = await self._acquire(memory)
        try:
            yield index
        finally:
            self._release(index, memory)

    def _fits(self, memory: int) -> bool:
        return self.memory_budget is None or self.memory_reserved + memory <= self.memory_budget

    async def _acquire(self, memory: int) -> int:
        if self.memory_budget is not None and memory > self.memory_budget:
            raise FailedPrecondition(
                f"the execution asks for {memory} bytes of memory, more than this executor's memory "
                f"budget of {self.memory_budget} bytes for all running programs together; ask for less",
                reason="MEMORY_BUDGET",
                metadata={"memory_bytes": str(memory), "memory_budget_bytes": str(self.memory_budget)},
            )
        if self._free and not self.waiting and self._fits(memory):
            self.memory_reserved += memory
            return self._free.pop(0)
        if self.waiting >= self.max_waiting:
            raise ResourceExhausted(self._busy_message(memory), reason="EXECUTOR_BUSY", metadata=self._meta())
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (fut, memory)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                return await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self._release(fut.result(), memory)  # admitted as we gave up: pass it on
            else:
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            self._admit()  # we may have been the head that held the others back
            if isinstance(exc, TimeoutError):
                raise ResourceExhausted(
                    f"no sandbox slot and memory became free within {self.wait_timeout_s:g} s "
                    f"({self._busy_message(memory)})",
                    reason="EXECUTOR_BUSY",
                    metadata=self._meta(),
                ) from None
            raise

    def _busy_message(self, memory: int) -> str:
        if self._free and not self._fits(memory):
            return (
                f"the running programs hold {self.memory_reserved} of the executor's memory budget of "
                f"{self.memory_budget} bytes, {memory} more do not fit, and {self.waiting} executions "
                "are already waiting"
            )
        return f"all {self.size} sandbox slots are busy and {self.waiting} executions are already waiting"

    def _meta(self) -> dict[str, str]:
        meta = {"slots": str(self.size), "waiting": str(self.waiting)}
        if self.memory_budget is not None:
            meta |= {
                "memory_budget_bytes": str(self.memory_budget),
                "memory_reserved_bytes": str(self.memory_reserved),
            }
        return meta

    def _release(self, index: int, memory: int) -> None:
        self.memory_reserved -= memory
        self._free.append(index)
        self._free.sort()
        self._admit()

    def _admit(self) -> None:
        """Hand free slots to the waiters at the head of the queue, in order, while their memory fits."""
        while self._waiters and self._free:
            fut, memory = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if not self._fits(memory):
                return
            self._waiters.popleft()
            self.memory_reserved += memory
            fut.set_result(self._free.pop(0))


class SessionPool:
    """Capacity of warm sessions, apart from the runs' slots (a warm predictor never takes a training
    run's slot): ``size`` numbered places and a total of the sessions' memory limits. Nothing waits:
    beyond either bound the caller gets ResourceExhausted SESSION_CAPACITY at once (the trainer then
    ends its least recently used session and asks again)."""

    def __init__(self, size: int, memory_budget: int) -> None:
        if size < 1 or memory_budget <= 0:
            raise ValueError("size >= 1 and memory_budget > 0 are required")
        self.size, self.memory_budget = size, memory_budget
        self.memory_reserved = 0
        self._free = list(range(size))

    @property
    def busy(self) -> int:
        return self.size - len(self._free)

    @contextlib.contextmanager
    def place(self, memory_bytes: int) -> Iterator[int]:
        meta = {
            "session_slots": str(self.size),
            "sessions_open": str(self.busy),
            "session_memory_bytes": str(self.memory_budget),
            "session_memory_reserved_bytes": str(self.memory_reserved),
            "memory_bytes": str(memory_bytes),
        }
        if memory_bytes > self.memory_budget:
            raise FailedPrecondition(
                f"the session asks for {memory_bytes} bytes of memory, more than all sessions together may "
                f"hold on this executor ({self.memory_budget} bytes); ask for less",
                reason="SESSION_MEMORY_BUDGET",
                metadata=meta,
            )
        if not self._free:
            raise ResourceExhausted(
                f"all {self.size} session places of this executor are taken; end a session and try again",
                reason="SESSION_CAPACITY",
                metadata=meta,
            )
        if self.memory_reserved + memory_bytes > self.memory_budget:
            raise ResourceExhausted(
                f"the open sessions hold {self.memory_reserved} of the {self.memory_budget} bytes of memory "
                f"sessions may hold together; {memory_bytes} more do not fit. End a session and try again",
                reason="SESSION_CAPACITY",
                metadata=meta,
            )
        index = self._free.pop(0)
        self.memory_reserved += memory_bytes
        try:
            yield index
        finally:
            self.memory_reserved -= memory_bytes
            self._free.append(index)
            self._free.sort()


@dataclass(frozen=True, slots=True)
class ExecuteInput:
    """An Execute request in domain terms (the servicer builds it from protobuf)."""

    execution_id: str
    argv: tuple[str, ...]
    files: tuple[JobFile, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: LimitRequest = field(default_factory=LimitRequest)
    collect: tuple[str, ...] = ()
    collect_max_bytes: int = 0
    job_id: str = ""
    #: A job owner's own E2B key (from the trainer's call metadata); never part of the environment.
    sandbox_api_key: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SessionInput:
    """A Session's start message in domain terms."""

    execution_id: str
    argv: tuple[str, ...]
    files: tuple[JobFile, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: LimitRequest = field(default_factory=LimitRequest)
    job_id: str = ""
    idle_s: float | None = None
    """Idle timeout asked for; None: the server's default (never above its ceiling)."""


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Idle timeouts of sessions: the default and the ceiling, in seconds."""

    default_idle_s: float = 300.0
    max_idle_s: float = 3600.0

    def idle(self, asked: float | None) -> float:
        return min(asked or self.default_idle_s, self.max_idle_s)


@dataclass(frozen=True, slots=True)
class Ready:
    """A session's process is running (the first event of Session.events)."""

    started: Started
    idle_s: float
    start_s: float
    """From the request to the process being started."""


class Session:
    """An open session: iterate :meth:`events`; another task sends :meth:`call` and :meth:`close_input`;
    :meth:`fail` ends the call with an error (a bad message from the caller); :meth:`abort` kills it."""

    def __init__(self, run: SandboxSession, backend: str, idle_s: float, opened: float) -> None:
        self._run, self._backend, self._idle_s, self._opened = run, backend, idle_s, opened
        self._error: Exception | None = None
        self._events = self._measured()

    async def call(self, call_id: int, payload: bytes) -> None:
        if b"\n" in payload:
            raise InvalidArgument(
                "a call's payload must not contain a newline byte (one call is one line on the process's "
                "stdin): send JSON on one line, or base64",
                violations=[FieldViolation("call.payload", "must not contain a newline byte (0x0a)")],
            )
        if await self._run.call(call_id, payload):
            SESSION_CALLS.labels(self._backend).inc()

    def close_input(self) -> None:
        self._run.close_input()

    def fail(self, error: Exception) -> None:
        """End the session with ``error`` as the call's outcome (the process is killed)."""
        if self._error is None:
            self._error = error
        self._run.abort()

    def abort(self) -> None:
        self._run.abort()

    def events(self) -> AsyncIterator[Ready | SessionEvent]:
        return self._events

    async def _measured(self) -> AsyncIterator[Ready | SessionEvent]:
        span = trace.get_current_span()
        events = self._run.events()
        try:
            async for event in events:
                if self._error is not None:
                    raise self._error
                if isinstance(event, Started):
                    start_s = time.monotonic() - self._opened
                    START_SECONDS.labels(self._backend).observe(start_s)
                    span.add_event("session started", {"backend": self._backend, "start_seconds": start_s})
                    yield Ready(event, self._idle_s, start_s)
                    continue
                if isinstance(event, Reply):
                    SESSION_CALL_SECONDS.labels(self._backend).observe(event.duration_s)
                elif isinstance(event, Finished):
                    SESSIONS_ENDED.labels(self._backend, event.reason.name.lower()).inc()
                    if event.usage.max_rss_bytes:
                        PEAK_MEMORY.labels(self._backend).observe(event.usage.max_rss_bytes)
                    span.add_event(
                        "session ended",
                        {"reason": event.reason.name.lower(), "exit_code": event.exit_code},
                    )
                yield event
            if self._error is not None:
                raise self._error
        finally:
            await events.aclose()  # type: ignore[attr-defined]


class Execution:
    """A running execution: iterate :meth:`events`; :meth:`abort` kills it from a callback."""

    def __init__(self, run: SandboxRun) -> None:
        self._run = run

    def events(self) -> AsyncIterator[Event]:
        return self._run.events()

    def abort(self) -> None:
        self._run.abort()


class Executor:
    """The Execute use case over one backend."""

    def __init__(
        self,
        backend: SandboxBackend,
        *,
        slots: SlotPool,
        limits: LimitPolicy,
        env: EnvPolicy,
        sessions: SessionPool | None = None,
        session_policy: SessionPolicy | None = None,
    ) -> None:
        self.backend, self.slots, self.limit_policy, self.env_policy = backend, slots, limits, env
        self.sessions, self.session_policy = sessions, session_policy or SessionPolicy()
        if sessions is not None:
            SESSION_SLOTS.set_function(lambda: sessions.size)
            SESSIONS_OPEN.set_function(lambda: sessions.busy)
            SESSION_MEMORY_RESERVED.set_function(lambda: sessions.memory_reserved)
            SESSION_MEMORY_TOTAL.set_function(lambda: sessions.memory_budget)
        # Read from the pool when Prometheus scrapes (the executor a process serves: one per process).
        SLOTS_TOTAL.set_function(lambda: slots.size)
        SLOTS_BUSY.set_function(lambda: slots.busy)
        QUEUE_LENGTH.set_function(lambda: slots.waiting)

    def job(self, req: ExecuteInput) -> JobSpec:
        """Check the request and apply defaults and ceilings; raises InvalidArgument with violations."""
        spec = JobSpec(
            execution_id=req.execution_id,
            job_id=req.job_id,
            command=req.argv,
            files=req.files,
            env=dict(req.env),
            limits=self.limit_policy.effective(req.limits),
            collect=req.collect,
            collect_max_bytes=self.limit_policy.collect_bytes(req.collect_max_bytes),
            sandbox_api_key=req.sandbox_api_key,
        )
        bad = spec.violations() + self.env_policy.violations(spec.env)
        if bad:
            raise InvalidArgument("invalid execution request", violations=bad)
        return spec

    @contextlib.asynccontextmanager
    async def open(self, req: ExecuteInput) -> AsyncIterator[Execution]:
        """Validate, wait for a slot (or raise ResourceExhausted), and yield the execution. Leaving the
        block kills whatever still runs and frees the slot."""
        spec = self.job(req)
        self.backend.check(spec)
        async with self.slots.slot(spec.limits.memory_bytes) as slot:
            run = self.backend.start(spec, slot)
            events = _measured(run.events(), self.backend.name, time.monotonic())
            execution = Execution(_Started(run, events))
            try:
                yield execution
            finally:
                await events.aclose()  # type: ignore[attr-defined]

    @contextlib.asynccontextmanager
    async def open_session(self, req: SessionInput) -> AsyncIterator[Session]:
        """Validate, take a session place (or raise ResourceExhausted SESSION_CAPACITY at once) and yield
        the session. Leaving the block kills the process if it still runs and frees the place."""
        opened = time.monotonic()
        spec = self.job(
            ExecuteInput(
                execution_id=req.execution_id,
                job_id=req.job_id,
                argv=req.argv,
                files=req.files,
                env=req.env,
                limits=req.limits,
            )
        )
        start_session = getattr(self.backend, "start_session", None)
        if self.sessions is None or start_session is None:
            raise FailedPrecondition(
                f"the {self.backend.name} backend cannot keep a sandboxed process warm (sessions run in the "
                "local sandbox only); run each call as its own Execute instead",
                reason="SESSIONS_UNSUPPORTED",
                metadata={"backend": self.backend.name},
            )
        self.backend.check(spec)
        idle_s = self.session_policy.idle(req.idle_s)
        with self.sessions.place(spec.limits.memory_bytes) as index:
            # Session uids follow the runs' and the self-test probe's (uid_base + slots + 1 + index).
            backend: SessionBackend = self.backend  # type: ignore[assignment]
            session = Session(
                backend.start_session(spec, self.slots.size + 1 + index, idle_s),
                self.backend.name,
                idle_s,
                opened,
            )
            try:
                yield session
            finally:
                await session.events().aclose()  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.backend.close()


async def _measured(events: AsyncIterator[Event], backend: str, granted: float) -> AsyncIterator[Event]:
    """The run's events, counted (start latency, how it ended, peak memory) and recorded as events of
    the call's trace span."""
    span = trace.get_current_span()  # the Execute call's span: the run's start and end are its events
    async for event in events:
        if isinstance(event, Started):
            waited = time.monotonic() - granted
            START_SECONDS.labels(backend).observe(waited)
            span.add_event("sandbox started", {"backend": backend, "start_seconds": round(waited, 4)})
        elif isinstance(event, Finished):
            RUNS.labels(backend, event.reason.name.lower()).inc()
            if event.usage.max_rss_bytes:
                PEAK_MEMORY.labels(backend).observe(event.usage.max_rss_bytes)
            span.add_event(
                "sandbox finished",
                {
                    "reason": event.reason.name.lower(),
                    "exit_code": event.exit_code,
                    "wall_seconds": round(event.usage.wall_time_s, 3),
                    "peak_memory_bytes": event.usage.max_rss_bytes,
                },
            )
        yield event


@dataclass
class _Started:
    """A run whose event iterator already exists (so ``Executor.open`` can always close it)."""

    run: SandboxRun
    iterator: AsyncIterator[Event]

    def events(self) -> AsyncIterator[Event]:
        return self.iterator

    def abort(self) -> None:
        self.run.abort()


__all__ = [
    "EnvPolicy",
    "ExecuteInput",
    "Execution",
    "Executor",
    "LimitPolicy",
    "LimitRequest",
    "Ready",
    "Session",
    "SessionInput",
    "SessionPolicy",
    "SessionPool",
    "SlotPool",
]
