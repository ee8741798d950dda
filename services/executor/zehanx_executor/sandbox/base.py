"""The port every sandbox backend implements (local, E2B, the development runner)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from zehanx_executor.sandbox.model import Event, JobSpec


class SandboxRun(Protocol):
    """One run. Iterate :meth:`events` to drive it; closing the iterator (or cancelling the task that
    iterates it) kills the program's whole process tree and cleans up."""

    def events(self) -> AsyncIterator[Event]:
        """Started, then output / metric / file events, then exactly one Finished."""
        ...

    def abort(self) -> None:
        """Kill the program now (synchronous, idempotent; a no-op once finished). The event stream then
        ends with reason CANCELLED unless it already ended."""
        ...


class SandboxBackend(Protocol):
    """A place to run untrusted programs."""

    name: str

    def check(self, spec: JobSpec) -> None:
        """Raise a DomainError for what this backend cannot honour (before a slot is taken)."""
        ...

    def start(self, spec: JobSpec, slot: int) -> SandboxRun:
        """Prepare a run in slot ``slot`` (0 ≤ slot < the executor's concurrency); nothing runs until
        its events are iterated."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (called once at shutdown)."""
        ...
