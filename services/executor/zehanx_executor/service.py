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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from zehanx_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, ResourceExhausted
from zehanx_runtime.logging import get_logger

from zehanx_executor.sandbox.base import SandboxBackend, SandboxRun
from zehanx_executor.sandbox.model import Event, Finished, JobFile, JobSpec, Limits, Started

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
        self, backend: SandboxBackend, *, slots: SlotPool, limits: LimitPolicy, env: EnvPolicy
    ) -> None:
        self.backend, self.slots, self.limit_policy, self.env_policy = backend, slots, limits, env
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
    "SlotPool",
]
