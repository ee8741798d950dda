"""The Ray backend against a real Ray cluster of three nodes on this host (ray.cluster_utils.Cluster):
a head that runs nothing (no CPUs, no sandbox resource) and two worker nodes with different CPUs and
memory, every Ray port set, token authentication on. Each run lands on a node whose resources it asks
for, in that node's real local sandbox (bwrap, cgroups, seccomp as in the other tests here).

One cluster for the whole module (starting Ray takes ~15 s on 2 cores); it is stopped by pid at the end.
Skipped, with the probe's reasons, where this host cannot run the local sandbox (conftest's ``caps``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sandbox_helpers import UID_BASE, RunResult, require_isolation, sandbox_uid_pids, spec
from support.ray_cluster import ray_cluster as start_ray_cluster
from zehanx_executor.app import SandboxUnavailableError, build_executor
from zehanx_executor.domain import ExitReason, Finished, Output, Started, Stream
from zehanx_executor.sandbox.local import LocalSandbox, LocalSandboxConfig
from zehanx_executor.sandbox.probe import Capabilities
from zehanx_executor.sandbox.raycluster import RayConfig, RaySandbox
from zehanx_executor.sandbox.raynode import NodeConfig
from zehanx_executor.service import ExecuteInput, LimitRequest
from zehanx_executor.settings import ExecutorSettings
from zehanx_runtime.errors import DeadlineExceeded, FailedPrecondition

ray = pytest.importorskip("ray", reason="ray is pinned in requirements.txt: run make setup")

GiB = 1 << 30
WORK_DIR = Path("/var/tmp/zx-executor-ray-tests")
#: Slots 0-3 of this module run as UID_BASE + 20 .. 23, the node's probe as + 24 (this session's range).
RAY_UID_BASE = UID_BASE + 20
PROBE_SLOT = 4
TOKEN = secrets.token_hex(16)
#: Every Ray listener of the test cluster, explicit (unset ones are random and may hit the suite's ports).
GCS_PORT = 6610


@dataclass
class RayCluster:
    cluster: Any
    node_b: Any  # 1 CPU, 3 GiB
    node_c: Any  # 2 CPUs, 1 GiB
    pids: list[int]


@pytest.fixture(scope="module")
def ray_cluster(caps: Capabilities) -> Iterator[RayCluster]:
    workers = [
        {"num_cpus": 1, "memory": 3 * GiB, "resources": {"zx_sandbox": 1, "node_b": 1}},
        {"num_cpus": 2, "memory": 1 * GiB, "resources": {"zx_sandbox": 1, "node_c": 1}},
    ]
    with start_ray_cluster(GCS_PORT, 21500, workers, token=TOKEN) as up:
        yield RayCluster(up.cluster, up.workers[0], up.workers[1], up.pids)
    # The nodes' workers died with the cluster, each with its (empty) instance folder and cgroups: the
    # next sandbox built on the host removes what dead instances left, as after a crashed executor.
    workers_left = [int(d.name.split("-")[0]) for d in (WORK_DIR / "jobs").iterdir()]
    assert not _wait_gone(workers_left, 15.0), "Ray workers outlived their raylets"
    sweeper = LocalSandbox(LocalSandboxConfig(work_dir=WORK_DIR, uid_base=RAY_UID_BASE), caps)
    asyncio.run(sweeper.close())
    assert not list((WORK_DIR / "jobs").iterdir())


def _node_config() -> NodeConfig:
    return NodeConfig(work_dir=WORK_DIR, uid_base=RAY_UID_BASE, probe_slot=PROBE_SLOT)


@pytest.fixture(scope="module")
def backend(ray_cluster: RayCluster) -> RaySandbox:
    config = RayConfig(address=ray_cluster.cluster.address, auth_token=TOKEN, first_event_timeout_s=60)
    return RaySandbox(config, _node_config())


async def _collect(events: Any, result: RunResult, on_event: Any = None) -> RunResult:
    try:
        async for event in events:
            result.events.append(event)
            if on_event is not None:
                await on_event(event)
    finally:
        await events.aclose()
    return result


async def run_ray(box: RaySandbox, code: str, *, slot: int = 0, **kw: Any) -> tuple[RunResult, Any]:
    run = box.start(spec(code, **kw), slot)
    return await _collect(run.events(), RunResult()), run


def _job_cgroups(caps: Capabilities, worker_pid: int) -> list[Path]:
    """Job cgroup folders of the executor instances in Ray worker ``worker_pid`` (all hierarchies)."""
    layout = caps.cgroups
    assert layout is not None
    bases = {layout.memory_base, layout.pids_base, *(b for b in (layout.unified_base, layout.cpu_base) if b)}
    return [
        job
        for base in bases
        for inst in base.glob(f"zehanx/{worker_pid}-*")
        for job in inst.iterdir()
        if job.is_dir()
    ]


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if os.path.exists(f"/proc/{p}")]


def _wait_gone(pids: list[int], limit_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + limit_s
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(pids)


def _existing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.exists()]


def _ray_slot_pids(slot: int) -> list[int]:
    return sandbox_uid_pids(RAY_UID_BASE + slot, RAY_UID_BASE + slot)


HOSTINFO = "import json, os; print(json.dumps({'uid': os.getuid(), 'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}))"


async def test_runs_land_on_the_node_whose_resources_they_ask_for(
    backend: RaySandbox, ray_cluster: RayCluster
) -> None:
    # Two at once: 2 CPUs fit only node_c, 2 GiB of memory only node_b.
    started = time.monotonic()
    (on_c, run_c), (on_b, run_b) = await asyncio.gather(
        run_ray(backend, HOSTINFO, slot=0, cpus=2.0, memory_bytes=256 << 20),
        run_ray(backend, HOSTINFO, slot=1, cpus=1.0, memory_bytes=2 * GiB),
    )
    print(f"\ntwo cold runs on two nodes: {time.monotonic() - started:.2f} s")
    for result, run, node, slot in (
        (on_c, run_c, ray_cluster.node_c, 0),
        (on_b, run_b, ray_cluster.node_b, 1),
    ):
        assert result.finished.reason is ExitReason.COMPLETED, (result.finished, result.stderr)
        assert run.placed.node_id == node.node_id
        started_event = result.started
        assert started_event.backend == "ray" and "bwrap as an unprivileged uid" in started_event.description
        info = json.loads(result.stdout)
        assert info["uid"] == RAY_UID_BASE + slot  # the node's sandbox dropped it to the slot's uid
        assert info["pids"] == [1, 2]  # its own pid namespace
    assert run_b.placed.node_id != run_c.placed.node_id


async def test_output_streams_while_the_program_runs(backend: RaySandbox) -> None:
    code = "import time\nfor i in range(6):\n    print(i, time.time(), flush=True)\n    time.sleep(0.25)\n"
    lags: list[float] = []

    async def on_event(event: Any) -> None:
        if isinstance(event, Output) and event.stream is Stream.STDOUT:
            now = time.time()
            for line in event.data.decode().splitlines():
                lags.append(now - float(line.split()[1]))

    run = backend.start(spec(code, memory_bytes=128 << 20), 2)
    result = await _collect(run.events(), RunResult(), on_event)
    assert result.finished.reason is ExitReason.COMPLETED
    assert len(lags) == 6
    # Every line arrived while the program was still sleeping before its next one.
    assert max(lags) < 0.25, lags
    print(
        f"\nline latency through Ray: median {sorted(lags)[3] * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms"
    )


async def test_cancel_kills_the_sandbox_on_its_node_and_removes_its_cgroups(
    backend: RaySandbox, caps: Capabilities
) -> None:
    code = "import time\nprint('ready', flush=True)\ntime.sleep(300)\n"
    run = backend.start(spec(code, wall_time_s=120, memory_bytes=128 << 20), 3)
    seen: dict[str, Any] = {}

    async def on_event(event: Any) -> None:
        if isinstance(event, Output) and b"ready" in event.data:
            seen["pids"] = _ray_slot_pids(3)
            seen["cgroups"] = _job_cgroups(caps, run.placed.worker_pid)
            run.abort()

    started = time.monotonic()
    result = await asyncio.wait_for(_collect(run.events(), RunResult(), on_event), 60)
    assert seen["pids"], "the sandboxed program was not found on the host while it ran"
    assert seen["cgroups"], "the run's cgroups were not found while it ran"
    assert result.finished.reason is ExitReason.CANCELLED
    assert not run.forced  # the plain cancel was enough: the task's own cleanup ran
    assert time.monotonic() - started < 20
    assert not _alive(seen["pids"])
    assert not _existing(seen["cgroups"])


async def test_a_forced_cancel_is_followed_by_a_sweep_of_the_node(
    ray_cluster: RayCluster, caps: Capabilities
) -> None:
    # No grace: the worker is SIGKILLed at once (its finally never runs), then the node is swept.
    config = RayConfig(address=ray_cluster.cluster.address, auth_token=TOKEN, cancel_grace_s=0.0)
    box = RaySandbox(config, _node_config())
    code = "import time\nprint('ready', flush=True)\ntime.sleep(300)\n"
    run = box.start(spec(code, wall_time_s=120, memory_bytes=128 << 20), 3)
    events = run.events()
    seen: dict[str, Any] = {}
    async for event in events:
        if isinstance(event, Output) and b"ready" in event.data:
            seen["pids"] = _ray_slot_pids(3)
            seen["cgroups"] = _job_cgroups(caps, run.placed.worker_pid)
            break
    await events.aclose()  # the caller went away
    assert run.forced and run.swept == "swept"
    assert seen["pids"] and seen["cgroups"]
    assert not await asyncio.to_thread(_wait_gone, seen["pids"])
    assert not _existing(seen["cgroups"])
    assert not _alive([run.placed.worker_pid])  # the worker was killed, its cgroups swept


async def test_an_impossible_request_fails_at_once_with_the_reason(backend: RaySandbox) -> None:
    started = time.monotonic()
    with pytest.raises(FailedPrecondition) as gpu:
        backend.check(spec("print(1)", gpu=True))
    with pytest.raises(FailedPrecondition) as memory:
        backend.check(spec("print(1)", memory_bytes=8 * GiB))
    assert time.monotonic() - started < 2
    assert gpu.value.reason == "GPU_UNAVAILABLE" and "GPU 1" in str(gpu.value)
    assert memory.value.reason == "NO_NODE_FITS" and "memory 8.00 GiB" in str(memory.value)
    assert "memory 3.00 GiB" in str(memory.value)  # it says what the nodes have


async def test_the_cluster_token_never_reaches_the_sandbox(backend: RaySandbox) -> None:
    await require_isolation(backend, slot=0)  # type: ignore[arg-type]
    code = (
        "import os, sys, json\n"
        "seen = {'env': dict(os.environ), 'argv': sys.argv}\n"
        "for p in ('/proc/1/environ', '/proc/self/environ', '/proc/1/cmdline'):\n"
        "    try: seen[p] = open(p, 'rb').read().decode(errors='replace')\n"
        "    except OSError as e: seen[p] = str(e)\n"
        "for d in ('/root/.ray', '/tmp/ray'):\n"
        "    seen[d] = os.path.exists(d)\n"
        "print(json.dumps(seen))\n"
    )
    result, run = await run_ray(backend, code, slot=0)
    assert result.finished.reason is ExitReason.COMPLETED, result.stderr
    seen = json.loads(result.stdout)
    assert "RAY_AUTH_TOKEN" not in seen["env"] and "RAY_AUTH_MODE" not in seen["env"]
    assert TOKEN not in result.stdout
    assert seen["/root/.ray"] is False and seen["/tmp/ray"] is False
    # ... while the Ray worker that started the sandbox does hold it.
    worker_env = await asyncio.to_thread(Path(f"/proc/{run.placed.worker_pid}/environ").read_bytes)
    assert f"RAY_AUTH_TOKEN={TOKEN}".encode() in worker_env


async def test_the_executor_built_with_backend_ray_runs_a_request(ray_cluster: RayCluster) -> None:
    settings = ExecutorSettings(
        backend="ray",
        ray_address=ray_cluster.cluster.address,
        ray_auth_token=TOKEN,
        work_dir=WORK_DIR,
        uid_base=RAY_UID_BASE,
        max_concurrent=PROBE_SLOT,
        max_cpus=2,
    )
    executor = await build_executor(settings)
    req = ExecuteInput(
        execution_id="ray-e2e",
        argv=("python", "-c", "print('hello from a node')"),
        limits=LimitRequest(memory_bytes=128 << 20),
    )
    events = []
    async with executor.open(req) as execution:
        async for event in execution.events():
            events.append(event)
    assert isinstance(events[0], Started) and events[0].backend == "ray"
    assert isinstance(events[-1], Finished) and events[-1].reason is ExitReason.COMPLETED
    assert b"".join(e.data for e in events if isinstance(e, Output)) == b"hello from a node\n"
    # A cluster without the token is refused before anything runs.
    with pytest.raises(FailedPrecondition, match="token"):
        from zehanx_executor.sandbox.raycluster import connect

        connect(replace(RayConfig(address=ray_cluster.cluster.address, auth_token="")))


async def test_a_run_no_free_node_takes_in_time_fails_with_deadline_exceeded(ray_cluster: RayCluster) -> None:
    # Only node_c has 2 CPUs; a first run holds them, so a second that asks for 2 waits in Ray's queue.
    config = RayConfig(address=ray_cluster.cluster.address, auth_token=TOKEN, first_event_timeout_s=1.0)
    box = RaySandbox(config, _node_config())
    holder = box.start(spec("import time\nprint('ready', flush=True)\ntime.sleep(300)\n", cpus=2.0), 0)
    held = holder.events()
    async for event in held:
        if isinstance(event, Output):
            break
    try:
        started = time.monotonic()
        waiting = box.start(spec("print('never')", cpus=2.0), 1)
        with pytest.raises(DeadlineExceeded) as late:
            await _collect(waiting.events(), RunResult())
        assert 1.0 <= time.monotonic() - started < 5
        assert late.value.reason == "NO_NODE_AVAILABLE" and "CPU 2" in str(late.value)
    finally:
        await held.aclose()
    # The waiting task was cancelled, not left to run once node_c is free.
    await asyncio.sleep(0.5)
    assert not _ray_slot_pids(1)


async def test_backend_ray_refuses_to_start_without_an_address_a_listening_head_or_a_token(
    tmp_path: Path,
) -> None:
    base = {"backend": "ray", "work_dir": tmp_path, "uid_base": RAY_UID_BASE, "max_concurrent": PROBE_SLOT}
    with pytest.raises(SandboxUnavailableError, match="ZX_EXECUTOR_RAY_ADDRESS"):
        await build_executor(ExecutorSettings(**base))
    with pytest.raises(SandboxUnavailableError, match="token"):
        await build_executor(ExecutorSettings(**base, ray_address=f"127.0.0.1:{GCS_PORT}"))
    with pytest.raises(SandboxUnavailableError, match="nothing answers"):
        await build_executor(ExecutorSettings(**base, ray_address="127.0.0.1:1", ray_auth_token=TOKEN))
    unreadable = tmp_path / "missing-token"
    with pytest.raises(SandboxUnavailableError, match="RAY_AUTH_TOKEN_FILE"):
        await build_executor(
            ExecutorSettings(**base, ray_address=f"127.0.0.1:{GCS_PORT}", ray_auth_token_file=unreadable)
        )


async def test_a_lost_node_ends_its_run_with_node_lost(
    backend: RaySandbox, ray_cluster: RayCluster, caps: Capabilities
) -> None:
    # Last in the module: it removes node_b. Memory of 2 GiB fits only node_b.
    code = "import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.05)\n"
    run = backend.start(spec(code, wall_time_s=120, memory_bytes=2 * GiB), 1)
    lines = 0

    async def on_event(event: Any) -> None:
        nonlocal lines
        if isinstance(event, Output):
            lines += event.data.count(b"\n")
            if lines >= 5 and "removed" not in seen:
                seen["removed"] = time.monotonic()
                await asyncio.to_thread(ray_cluster.cluster.remove_node, ray_cluster.node_b, False)

    seen: dict[str, float] = {}
    result = await asyncio.wait_for(_collect(run.events(), RunResult(), on_event), 60)
    assert run.placed.node_id == ray_cluster.node_b.node_id
    assert result.finished.reason is ExitReason.NODE_LOST
    assert result.finished.message.startswith("NODE_LOST"), result.finished.message
    print(f"\nNODE_LOST {time.monotonic() - seen['removed']:.2f} s after the node was removed")
    # On a real cluster the lost machine takes its sandboxes with it; here the host lives on, and the
    # dead worker's sandbox is what the next sandbox built on the host cleans up (as after a crash).
    assert not await asyncio.to_thread(_wait_gone, [run.placed.worker_pid], 10.0)
    await LocalSandbox(LocalSandboxConfig(work_dir=WORK_DIR, uid_base=RAY_UID_BASE), caps).close()
    assert not await asyncio.to_thread(_wait_gone, _ray_slot_pids(1))
