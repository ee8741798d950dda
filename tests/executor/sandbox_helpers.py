"""Helpers for the executor tests: run a program in a real LocalSandbox and gather what came back."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import pytest
from zehanx_executor.domain import (
    Event,
    FileChunk,
    Finished,
    JobFile,
    JobSpec,
    Limits,
    Metric,
    Output,
    Started,
    Stream,
)
from zehanx_executor.sandbox.local import LocalSandbox
from zehanx_executor.sandbox.probe import ISOLATION_PROBE, isolation_problems

WORK_DIR = "/var/tmp/zx-executor-tests"
# Sandbox uids of this test session: [UID_BASE, UID_BASE + 32). Per session (from the pid), so two test
# runs at once on this shared machine never see (or count) each other's sandboxed processes; above 65535,
# away from nobody (65534), systemd's dynamic users (61184-65519), a development executor (60600) and
# the trainer tests (66000).
UID_BASE = 100_000 + (os.getpid() % 4000) * 32
SLOTS = 8
#: The executor process of test_executor_process.py (2 slots): uids UID_BASE + 16 .. + 18.
CLI_UID_BASE = UID_BASE + 16
#: A tree of four processes (three sleeping children, a busy parent) that prints "ready": what a kill
#: must take down whole (the hardening tests, and bench/bench_executor.py's cancel-to-dead).
TREE = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        while True: time.sleep(1)
print('ready', flush=True)
while True: pass
"""


@dataclass
class RunResult:
    events: list[Event] = field(default_factory=list)

    @property
    def started(self) -> Started:
        assert isinstance(self.events[0], Started), self.events[:1]
        return self.events[0]

    @property
    def finished(self) -> Finished:
        assert isinstance(self.events[-1], Finished), self.events[-1:]
        return self.events[-1]

    def _out(self, stream: Stream) -> str:
        data = b"".join(e.data for e in self.events if isinstance(e, Output) and e.stream is stream)
        return data.decode(errors="replace")

    @property
    def stdout(self) -> str:
        return self._out(Stream.STDOUT)

    @property
    def stderr(self) -> str:
        return self._out(Stream.STDERR)

    @property
    def metrics(self) -> list[Metric]:
        return [e for e in self.events if isinstance(e, Metric)]

    @property
    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for e in self.events:
            if isinstance(e, FileChunk):
                out[e.path] = out.get(e.path, b"") + e.data
        return out

    @property
    def file_events(self) -> list[FileChunk]:
        return [e for e in self.events if isinstance(e, FileChunk)]


def limits(**kw: object) -> Limits:
    base: dict[str, object] = {
        "wall_time_s": 20.0,
        "cpu_time_s": 40.0,
        "memory_bytes": 256 << 20,
        "max_processes": 32,
        "disk_bytes": 16 << 20,
        "output_bytes": 1 << 20,
        "file_size_bytes": 16 << 20,
    }
    base.update(kw)
    return Limits(**base)  # type: ignore[arg-type]


_counter = iter(range(1, 1_000_000))


def spec(
    code: str,
    *,
    files: dict[str, bytes] | None = None,
    env: dict[str, str] | None = None,
    collect: tuple[str, ...] = (),
    argv: tuple[str, ...] | None = None,
    **kw: object,
) -> JobSpec:
    job_files = [JobFile("main.py", code.encode())]
    job_files += [JobFile(p, d) for p, d in (files or {}).items()]
    return JobSpec(
        execution_id=f"t{next(_counter)}",
        command=argv or ("python", "main.py"),
        files=tuple(job_files),
        env=env or {},
        limits=limits(**kw),
        collect=collect,
    )


async def run(box: LocalSandbox, code: str, *, slot: int = 0, **kw: object) -> RunResult:
    """Run ``code`` as main.py in the sandbox; return every event."""
    result = RunResult()
    events = box.start(spec(code, **kw), slot).events()
    try:
        async for event in events:
            result.events.append(event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return result


async def assert_still_serving(box: LocalSandbox, slot: int = 0) -> None:
    """The sandbox keeps working after an attack: a fresh program runs and prints."""
    r = await run(box, "print('still serving')", slot=slot)
    assert r.finished.reason.value == "completed", r.finished
    assert r.stdout == "still serving\n"


async def require_isolation(box: LocalSandbox, slot: int = 0) -> None:
    """Before any destructive program: prove, in the sandbox, that it runs in its own pid namespace
    as an unprivileged uid with seccomp and no capabilities. Fails (does not skip) otherwise, so the
    destructive program is never run outside a working sandbox."""
    r = await run(box, ISOLATION_PROBE, slot=slot)
    problems = isolation_problems(r.stdout)
    if r.finished.reason.value != "completed" or problems:
        pytest.fail(
            f"isolation probe failed, destructive test NOT run: {problems} {r.finished} {r.stderr[-300:]}"
        )


def sandbox_uid_pids(uid_low: int = UID_BASE, uid_high: int = UID_BASE + SLOTS) -> list[int]:
    """Host pids of live processes whose real uid is a sandbox uid (none when the sandbox is idle).
    Zombies are skipped: they are dead and only wait for the host's init to reap them."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if status.get("State", "").strip().startswith(("Z", "X")):
            continue  # dead, waiting for the host's init to reap it
        uid = int(status.get("Uid", "-1 0").split()[0])
        if uid_low <= uid <= uid_high:
            pids.append(int(name))
    return pids


async def wait_until(condition, what: str, limit_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true; fail naming ``what`` after a generous bound (not a timing test)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit_s:g} s: {what}"
        await asyncio.sleep(0.01)
