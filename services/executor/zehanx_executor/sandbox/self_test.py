"""The sandbox's self-test: the isolation probe run inside a freshly built local sandbox.

A service (``zehanx_executor.app``) and each Ray node (``sandbox.raynode``) run it before they take a
program; a sandbox that is not isolated raises :class:`SandboxUnavailableError` and is never used.
"""

from __future__ import annotations

import uuid

from zehanx_executor.domain import ExitReason, Finished, JobFile, JobSpec, Limits, Output, Stream
from zehanx_executor.sandbox.local import LocalSandbox
from zehanx_executor.sandbox.probe import ISOLATION_PROBE, isolation_problems


class SandboxUnavailableError(RuntimeError):
    """The host cannot run the local sandbox, or the E2B template cannot run the programs; the message
    says what is missing."""


async def self_test(box: LocalSandbox, slot: int = 0) -> None:
    """Run the isolation probe in the sandbox; raise SandboxUnavailableError unless it is isolated."""
    spec = JobSpec(
        execution_id=f"selftest-{uuid.uuid4().hex[:8]}",
        command=("python", "-I", "probe.py"),
        files=(JobFile("probe.py", ISOLATION_PROBE.encode()),),
        limits=Limits(
            wall_time_s=30, cpu_time_s=30, memory_bytes=256 << 20, max_processes=16, disk_bytes=1 << 20
        ),
    )
    out = b""
    finished: Finished | None = None
    events = box.start(spec, slot).events()
    try:
        async for event in events:
            if isinstance(event, Output) and event.stream is Stream.STDOUT:
                out += event.data
            elif isinstance(event, Output):
                out += b"[stderr] " + event.data
            elif isinstance(event, Finished):
                finished = event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if finished is None or finished.reason is not ExitReason.COMPLETED:
        raise SandboxUnavailableError(
            f"the sandbox self-test did not run: {finished.message if finished else 'no result'}; "
            f"output: {out.decode(errors='replace')[-400:]}"
        )
    problems = isolation_problems(out.decode(errors="replace"))
    if problems:
        raise SandboxUnavailableError(
            "the sandbox self-test found it is not isolated: " + "; ".join(problems)
        )
