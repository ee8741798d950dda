"""The node side of the Ray backend: the Ray task that runs one program in the node's own local sandbox.

Ray only places the work: the task it runs on the chosen node builds (once per Ray worker process) the
same :class:`LocalSandbox` the local backend uses (bwrap as an unprivileged uid, per-job cgroups,
seccomp, a size-capped job folder, no network), proves it isolated with the isolation probe, and runs the
program in it. The program never runs as Ray code: the Ray worker is root and holds the cluster token in
its environment, while the sandbox starts from an empty environment (``--clearenv`` plus the request's
allow-listed variables), its own pid namespace and a filesystem of /usr, the interpreter and the job
folder only.

The task is a Ray streaming generator. Its first item is a :class:`Placed` marker (node id, worker pid)
so the driver learns where the run landed; then lists of sandbox events. Events are batched: a quiet
program's line goes out at once, a chatty one's lines at most every ``BATCH_S`` (one Ray object per line
tops out at about 3,500 a second; see ``../shared/reference/ray.md`` §3).

The sandbox's own asyncio loop runs in a thread; the task's thread waits on a queue with a short
timeout, so a plain ``ray.cancel`` (a KeyboardInterrupt raised between bytecodes) lands within
``POLL_S`` and the ``finally`` kills the tree (``cgroup.kill``) and removes the job's cgroups and tmpfs.
A forced cancel or a dead worker skips that ``finally``; :func:`sweep_node` (run on the node afterwards
by the driver) removes what a dead worker left, as the local backend does for a dead executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from zehanx_executor.domain import (
    Event,
    ExitReason,
    FileChunk,
    Finished,
    JobSpec,
    Output,
    ResourceUsage,
)
from zehanx_executor.sandbox.local import LocalSandbox, LocalSandboxConfig, become_subreaper
from zehanx_executor.sandbox.probe import probe
from zehanx_executor.sandbox.self_test import SandboxUnavailableError, self_test
from zehanx_runtime.errors import DomainError

#: Longest the task's thread waits before Python runs again (how fast a plain cancel lands).
POLL_S = 0.05
#: At most one yielded batch per BATCH_S while events keep coming; a lone event goes out at once.
BATCH_S = 0.01
#: A batch is cut at about this many bytes (output and file chunks).
BATCH_BYTES = 4 * 1024 * 1024
#: How long stopping a run waits for the sandbox's own cleanup.
STOP_WAIT_S = 15.0
QUEUE_ITEMS = 1024


@dataclass(frozen=True)
class NodeConfig:
    """How every node lays out its sandbox (from the executor's settings)."""

    work_dir: Path
    uid_base: int
    probe_slot: int
    """The slot whose uid the node's isolation probe runs as (the executor's max_concurrent)."""
    python_roots: tuple[Path, ...] = ()
    """Empty: the node's own interpreter (the Ray worker's sys.prefix and sys.base_prefix)."""
    runtime_dir: Path | None = None
    extra_ro_binds: tuple[Path, ...] = ()
    cpu_quota_required: bool = True


@dataclass(frozen=True)
class Placed:
    """The first item of every run's stream: where Ray placed it."""

    node_id: str
    node_ip: str
    hostname: str
    worker_pid: int


class NodeUnusable(RuntimeError):
    """This node cannot run the local sandbox (the message says what is missing)."""


_boxes: dict[NodeConfig, LocalSandbox] = {}
_boxes_lock = threading.Lock()


@contextlib.contextmanager
def _node_lock(work_dir: Path) -> Iterator[None]:
    """One worker process at a time probes and self-tests a node (they share the probe's uid)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / ".ray-node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _python_roots(cfg: NodeConfig) -> tuple[Path, ...]:
    if cfg.python_roots:
        return cfg.python_roots
    roots = dict.fromkeys([Path(sys.prefix), Path(sys.base_prefix)])
    return tuple(r for r in roots if not str(r).startswith("/usr"))


def node_sandbox(cfg: NodeConfig) -> LocalSandbox:
    """This worker process's sandbox: probed, built and self-tested on first use, then reused."""
    with _boxes_lock:
        box = _boxes.get(cfg)
        if box is not None:
            return box
        with _node_lock(cfg.work_dir):
            caps = probe(work_dir=cfg.work_dir, probe_uid=cfg.uid_base + cfg.probe_slot)
            if not caps.ok:
                raise NodeUnusable("this node cannot run the local sandbox: " + "; ".join(caps.missing))
            if caps.cgroups is not None and not caps.cgroups.has_cpu and cfg.cpu_quota_required:
                raise NodeUnusable("this node's cgroups cannot give runs a CPU quota (no cpu controller)")
            become_subreaper()  # orphans of a killed sandbox are reaped here, not by the host's init
            box = LocalSandbox(
                LocalSandboxConfig(
                    work_dir=cfg.work_dir,
                    uid_base=cfg.uid_base,
                    python_roots=_python_roots(cfg),
                    path_dirs=(str(Path(sys.prefix) / "bin"),),
                    runtime_dir=cfg.runtime_dir,
                    extra_ro_binds=cfg.extra_ro_binds,
                ),
                caps,
            )
            try:
                asyncio.run(self_test(box, cfg.probe_slot))
            except SandboxUnavailableError as exc:
                asyncio.run(box.close())
                raise NodeUnusable(str(exc)) from exc
        _boxes[cfg] = box
        return box


_END = object()


class _Pump:
    """Drives one LocalSandbox run on its own asyncio loop in a thread; the task's thread takes the
    events from :attr:`events` in batches."""

    def __init__(self, box: LocalSandbox, spec: JobSpec, slot: int) -> None:
        self.run = box.start(spec, slot)
        self.events: queue.Queue[object] = queue.Queue(QUEUE_ITEMS)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=f"zx-run-{spec.execution_id}", daemon=True)
        self.ended = False
        self.finished = False
        self.last_yield = 0.0
        self.thread.start()

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self._drive())
        finally:
            self.loop.close()

    async def _drive(self) -> None:
        events = self.run.events()
        try:
            async for event in events:
                await self._put(event)
        except Exception as exc:  # the sandbox itself failed: the run ends with that reason
            await self._put(
                Finished(
                    ExitReason.SANDBOX_ERROR, -1, 0, ResourceUsage(), f"the node's sandbox failed: {exc}"
                )
            )
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            await self._put(_END)

    async def _put(self, item: object) -> None:
        try:
            self.events.put_nowait(item)
        except queue.Full:  # the driver is slower than the program: wait without blocking the loop
            await asyncio.to_thread(self.events.put, item)

    def _take(self, timeout: float) -> object:
        item = self.events.get(timeout=timeout)
        if item is _END:
            self.ended = True
        return item

    def next_batch(self) -> list[Event] | None:
        """The next events (None when the run's stream ended). Waits in POLL_S steps."""
        if self.ended:
            return None
        while True:
            try:
                first = self._take(POLL_S)
                break
            except queue.Empty:
                continue
        if first is _END:
            return None
        batch: list[Event] = [first]  # type: ignore[list-item]
        size = _size(first)
        until = self.last_yield + BATCH_S
        while size < BATCH_BYTES and not self.ended and not isinstance(batch[-1], Finished):
            left = until - time.monotonic()
            try:
                item = self._take(left) if left > 0 else self.events.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self.ended = True
                break
            batch.append(item)  # type: ignore[arg-type]
            size += _size(item)
        self.finished = self.finished or any(isinstance(e, Finished) for e in batch)
        self.last_yield = time.monotonic()
        return batch

    def stop(self) -> None:
        """Kill the program if it still runs and wait for the sandbox's cleanup (cgroups, tmpfs)."""
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self.loop.call_soon_threadsafe(self.run.abort)
        deadline = time.monotonic() + STOP_WAIT_S
        while self.thread.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):  # let a put blocked on a full queue finish
                while True:
                    self.events.get_nowait()
            self.thread.join(POLL_S)


def _size(item: object) -> int:
    if isinstance(item, Output | FileChunk):
        return len(item.data)
    return 64


def run_on_node(cfg: NodeConfig, spec: JobSpec, slot: int) -> Iterator[object]:
    """The Ray task (a streaming generator): a :class:`Placed` marker, then lists of events ending with
    one :class:`Finished`."""
    import ray

    ctx = ray.get_runtime_context()
    yield Placed(ctx.get_node_id(), ray.util.get_node_ip_address(), socket.gethostname(), os.getpid())
    try:
        box = node_sandbox(cfg)
        box.check(spec)  # e.g. a GPU run on a node Ray counts a GPU for but that has no device nodes
    except (NodeUnusable, OSError, DomainError) as exc:
        yield [
            Finished(ExitReason.SANDBOX_ERROR, -1, 0, ResourceUsage(), f"node {socket.gethostname()}: {exc}")
        ]
        return
    if spec.limits.gpu:
        # Ray gave this task its GPUs; the program sees only those (the sandbox binds the device nodes).
        gpus = ",".join(str(g) for g in ray.get_gpu_ids())
        spec = replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": gpus})
    pump = _Pump(box, spec, slot)
    try:
        while (batch := pump.next_batch()) is not None:
            yield batch
    finally:
        pump.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _run_cgroups_left(box: LocalSandbox | None, worker_pid: int, execution_id: str) -> bool:
    layout = box.layout if box is not None else None
    if layout is None:
        return True
    return any(
        job.is_dir()
        for inst in (layout.memory_base / "zehanx").glob(f"{worker_pid}-*")
        for job in inst.glob(f"{execution_id}-*")
    )


def sweep_node(cfg: NodeConfig, worker_pid: int, execution_id: str, wait_s: float = 10.0) -> str:
    """After a forced cancel: wait until the run's worker is dead (then kill and remove the job cgroups
    and unmount the job folders every dead worker on this node left) or until the run's own cleanup
    removed its cgroups (a worker that finished the run before the force landed lives on)."""
    with _boxes_lock:
        box = _boxes.get(cfg)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not _alive(worker_pid):
            if box is None:
                node_sandbox(cfg)  # building it cleans what dead workers left
            else:
                box._clean_stale_instances()
            return "swept"
        if box is not None and not _run_cgroups_left(box, worker_pid, execution_id):
            return "cleaned by the run"
        time.sleep(0.02)
    return "worker still alive"
