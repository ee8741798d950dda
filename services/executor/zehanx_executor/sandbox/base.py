"""The port every sandbox backend implements (local, E2B, the development runner)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from zehanx_executor.domain import Event, JobSpec, SessionEvent


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


class SandboxSession(Protocol):
    """One warm session: a process kept alive and fed calls (one stdin line each, one stdout line back).
    Iterate :meth:`events` to drive it while another task sends :meth:`call`; closing the iterator kills
    the process tree and cleans up, as for a run."""

    def events(self) -> AsyncIterator[SessionEvent]:
        """Started (the process runs), then Output and Reply events, then exactly one Finished."""
        ...

    async def call(self, call_id: int, payload: bytes) -> bool:
        """Write one call (payload without a newline); False when the session is ending and the call
        was dropped. Raises FailedPrecondition when too many calls wait for replies."""
        ...

    def close_input(self) -> None:
        """The caller sends no more calls: close the process's stdin."""
        ...

    def abort(self) -> None:
        """Kill the process now (synchronous, idempotent); the stream ends with CANCELLED."""
        ...


class SessionBackend(Protocol):
    """A backend that can keep a sandboxed process warm (the local sandbox)."""

    def start_session(self, spec: JobSpec, slot: int, idle_s: float) -> SandboxSession:
        """Prepare a session in slot ``slot``; nothing runs until its events are iterated. It ends
        (reason TIMEOUT) after ``idle_s`` seconds with no call waiting for its reply."""
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
