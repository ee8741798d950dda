"""The Ray backend: each run is a Ray task placed on a node of a Ray cluster by the CPUs, memory and GPUs
it asks for; on that node the same local sandbox runs the program (:mod:`raynode`).

The executor service is the cluster's driver (``ray.init(address=...)``). Per run:

1. :meth:`RaySandbox.check` (before a slot is taken): some alive node must have the resources the run
   asks for, or the request fails at once with the nodes' resources in the message (Ray itself would
   leave it pending forever, e.g. a GPU on a CPU-only cluster);
2. the task is submitted with ``max_retries=0``: Ray's retry re-runs a task and splices the second run's
   output into the first one's stream with no marker (ray.md §6), so a lost node ends the run with a
   message that starts with ``NODE_LOST`` and the caller (the trainer) decides whether to run it again;
   until the cluster itself marks that node dead (its health checks fail: ~15 s with Ray's defaults),
   Ray still places runs there, where they wait for the node's end; so a node this driver saw lose a
   run is avoided (runs go to another fitting node, :meth:`RaySandbox.placement`) until then;
3. the first item (the task's :class:`Placed` marker) must come within ``first_event_timeout_s``;
   otherwise the task is cancelled and the call fails with DEADLINE_EXCEEDED (the cluster is full);
4. events stream back as the node produces them (a Ray streaming generator, batched on the node);
5. cancelling (abort, the caller going away): a plain ``ray.cancel`` first, so the task's own ``finally``
   kills the sandbox and removes its cgroups; if the stream has not ended after ``cancel_grace_s``, a
   forced cancel (the worker is SIGKILLed, its ``finally`` never runs) and then :func:`raynode.sweep_node`
   on that node removes what the dead worker left.

Ray's token authentication is required: the driver connects with ``RAY_AUTH_MODE=token`` and the token
from the settings (Ray reads it only from its environment). The token never reaches a sandbox: it is
not part of the task's arguments, and the sandbox starts from an empty environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from zehanx_executor.domain import (
    Event,
    ExitReason,
    Finished,
    JobSpec,
    Limits,
    ResourceUsage,
    Started,
)
from zehanx_executor.sandbox import raynode
from zehanx_executor.sandbox.raynode import NodeConfig, Placed
from zehanx_runtime.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from zehanx_runtime.logging import get_logger

log = get_logger("zehanx.executor.ray")

#: A sliver of the node resource per run, so many runs share a node (Ray's precision is 0.0001).
NODE_RESOURCE_SHARE = 0.001
#: How long at most a node that lost a run is avoided while the cluster still lists it alive.
LOST_NODE_AVOID_S = 120.0


@dataclass(frozen=True)
class RayConfig:
    address: str
    auth_token: str
    namespace: str = "zehanx"
    node_resource: str = "zx_sandbox"
    """A custom resource only nodes that can run the sandbox declare; empty: any node."""
    first_event_timeout_s: float = 60.0
    cancel_grace_s: float = 5.0


def resources_for(limits: Limits, node_resource: str) -> dict[str, float]:
    """What a run asks Ray for, in Ray's resource names."""
    need: dict[str, float] = {"CPU": max(limits.cpus, 0.01), "memory": float(limits.memory_bytes)}
    if limits.gpu:
        need["GPU"] = 1.0
    if node_resource:
        need[node_resource] = NODE_RESOURCE_SHARE
    return need


def describe(resources: Mapping[str, float]) -> str:
    parts = []
    for key, value in sorted(resources.items()):
        if key == "memory":
            parts.append(f"memory {value / 2**30:.2f} GiB")
        elif key.startswith("node:"):
            continue
        else:
            parts.append(f"{key} {value:g}")
    return ", ".join(parts)


def fits(node_resources: Mapping[str, float], need: Mapping[str, float]) -> bool:
    return all(node_resources.get(k, 0.0) >= v for k, v in need.items())


def connect(config: RayConfig) -> None:
    """Join the cluster as its driver, with token authentication (idempotent)."""
    import ray

    if not config.auth_token:
        raise FailedPrecondition(
            "the Ray backend needs the cluster's token (ZX_EXECUTOR_RAY_AUTH_TOKEN or "
            "ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE): a Ray cluster without token authentication runs anyone's "
            "code as root on every node",
            reason="RAY_AUTH_REQUIRED",
        )
    host, _, port = config.address.rpartition(":")
    try:  # ray.init retries an address where nothing listens for minutes
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise Unavailable(
            f"nothing answers at the Ray cluster address {config.address!r} (host:port of the head's GCS): {exc}",
            reason="RAY_UNAVAILABLE",
        ) from exc
    if ray.is_initialized():
        return
    # Ray reads its auth mode and token only from the environment of the driver process.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = config.auth_token
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    refresh_ray_auth()
    try:
        ray.init(
            address=config.address,
            namespace=config.namespace,
            log_to_driver=False,
            configure_logging=False,
        )
    except Exception as exc:  # ConnectionError for a wrong address or token, RuntimeError for no local node
        raise Unavailable(
            f"cannot join the Ray cluster at {config.address} (a wrong address, a token the cluster refuses, "
            "or no Ray node on this machine: a driver must run on one, e.g. deploy/ray/start-node.sh worker "
            f"with ZX_RAY_SANDBOX=0 ZX_RAY_CPUS=0): {str(exc).splitlines()[0][:300] if str(exc) else exc!r}",
            reason="RAY_UNAVAILABLE",
        ) from exc


def refresh_ray_auth() -> None:
    """Ray caches its auth mode and token when it is first imported; make it read them again (what
    ``ray.init`` does itself when it turns token mode on for a new local cluster)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def cluster_nodes() -> list[dict[str, Any]]:
    """Alive nodes as {node_id, ip, resources} (the resources each node declared)."""
    import ray

    return [
        {
            "node_id": node["NodeID"],
            "ip": node.get("NodeManagerAddress", ""),
            "resources": dict(node.get("Resources", {})),
        }
        for node in ray.nodes()
        if node.get("Alive")
    ]


class RaySandbox:
    """The Ray backend (driver side)."""

    name = "ray"

    def __init__(self, config: RayConfig, node: NodeConfig) -> None:
        import ray

        connect(config)
        self.config, self.node = config, node
        self._task = ray.remote(raynode.run_on_node)
        self._sweep = ray.remote(raynode.sweep_node)
        #: Nodes this driver saw lose a run, while the cluster still lists them alive (node id -> when).
        self.lost_nodes: dict[str, float] = {}

    def placement(self, need: Mapping[str, float]) -> Any | None:
        """A scheduling strategy that keeps a run off nodes that just lost one, or None (Ray decides).

        After a node dies, the cluster lists it alive until its health checks have failed (Ray's
        defaults: 5 checks 3 s apart); Ray's scheduler may lease the next run there and that run waits
        until then. While such a node is listed alive, the run is pinned (softly: Ray may still spill it
        elsewhere when that node is busy) to the fitting node with the most free CPUs among the others.
        """
        if not self.lost_nodes:
            return None
        from ray._private.state import available_resources_per_node
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        now = time.monotonic()
        nodes = cluster_nodes()
        alive = {n["node_id"] for n in nodes}
        for node_id, when in list(self.lost_nodes.items()):
            if node_id not in alive or now - when > LOST_NODE_AVOID_S:
                del self.lost_nodes[node_id]  # marked dead (Ray's scheduler skips it now) or long ago
        if not self.lost_nodes:
            return None
        free = available_resources_per_node()
        candidates = [n for n in nodes if n["node_id"] not in self.lost_nodes and fits(n["resources"], need)]
        if not candidates:
            return None
        best = max(candidates, key=lambda n: free.get(n["node_id"], {}).get("CPU", 0.0))
        return NodeAffinitySchedulingStrategy(best["node_id"], soft=True, _spill_on_unavailable=True)

    def check(self, spec: JobSpec) -> None:
        need = resources_for(spec.limits, self.config.node_resource)
        nodes = cluster_nodes()
        if any(fits(n["resources"], need) for n in nodes):
            return
        have = "; ".join(f"{n['ip']}: {describe(n['resources'])}" for n in nodes) or "no alive node"
        gpu = spec.limits.gpu and not any(n["resources"].get("GPU", 0) >= 1 for n in nodes)
        raise FailedPrecondition(
            f"no node of the Ray cluster has what the run asks for ({describe(need)}); the nodes have: "
            f"{have}",
            reason="GPU_UNAVAILABLE" if gpu else "NO_NODE_FITS",
        )

    def start(self, spec: JobSpec, slot: int) -> _RayRun:
        return _RayRun(self, spec, slot)

    async def close(self) -> None:
        return None


class _RayRun:
    def __init__(self, box: RaySandbox, spec: JobSpec, slot: int) -> None:
        self.box, self.spec, self.slot = box, spec, slot
        self.gen: Any = None
        self.placed: Placed | None = None
        self.cancelled = False
        self.ended = False
        self.forced = False
        self.swept = ""

    def abort(self) -> None:
        if self.ended or self.cancelled:
            return
        self.cancelled = True
        if self.gen is not None:
            import ray

            with contextlib.suppress(Exception):
                ray.cancel(self.gen, force=False)

    async def _next(self) -> Any:
        ref = await self.gen.__anext__()
        return await ref

    async def events(self) -> AsyncIterator[Event]:
        from ray import exceptions as rex

        spec, cfg = self.spec, self.box.config
        need = resources_for(spec.limits, cfg.node_resource)
        options: dict[str, Any] = {
            "num_cpus": need["CPU"],
            "memory": int(need["memory"]),
            "num_gpus": need.get("GPU", 0),
            "resources": {k: v for k, v in need.items() if k not in ("CPU", "memory", "GPU")},
            "max_retries": 0,
            "retry_exceptions": False,
            "name": f"zx-run-{spec.execution_id}",
        }
        strategy = self.box.placement(need)
        if strategy is not None:
            options["scheduling_strategy"] = strategy
        if self.cancelled:  # aborted before it was submitted
            self.ended = True
            yield _cancelled()
            return
        # The E2B key of a job owner has no business on a Ray node.
        payload = replace(spec, sandbox_api_key=None)
        submitted = time.monotonic()
        self.gen = self.box._task.options(**options).remote(self.box.node, payload, self.slot)
        finished = False
        try:
            try:
                first = await asyncio.wait_for(self._next(), cfg.first_event_timeout_s)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"no node of the Ray cluster took the run within {cfg.first_event_timeout_s:g} s (it "
                    f"asks for {describe(need)}); the nodes that could run it are busy",
                    reason="NO_NODE_AVAILABLE",
                ) from None
            except StopAsyncIteration:
                raise Unavailable("the Ray task ended before it started", reason="RAY_UNAVAILABLE") from None
            except rex.RayError as exc:
                if self.cancelled:
                    finished = True
                    yield _cancelled()
                    return
                raise Unavailable(f"the Ray task failed to start: {exc}", reason="RAY_UNAVAILABLE") from exc
            assert isinstance(first, Placed), first
            self.placed = first
            log.info(
                "run placed",
                execution_id=spec.execution_id,
                node_id=first.node_id,
                node_ip=first.node_ip,
                placement_s=round(time.monotonic() - submitted, 3),
            )
            while True:
                try:
                    batch = await self._next()
                except StopAsyncIteration:
                    break
                except rex.RayError as exc:
                    if self.cancelled or isinstance(exc, rex.TaskCancelledError):
                        finished = True
                        yield _cancelled()
                        return
                    finished = True
                    yield self._lost(exc)
                    return
                for event in batch:
                    if isinstance(event, Started):
                        event = replace(
                            event,
                            backend=self.box.name,
                            description=f"on Ray node {first.node_ip} ({first.hostname}): {event.description}",
                        )
                    elif isinstance(event, Finished):
                        finished = True
                    yield event
            if not finished:
                finished = True
                yield Finished(
                    ExitReason.SANDBOX_ERROR,
                    -1,
                    0,
                    ResourceUsage(),
                    "the run's stream from its Ray node ended without a result",
                )
        finally:
            self.ended = finished
            if not finished:
                await _shielded(self._stop())

    def _lost(self, exc: Exception) -> Finished:
        from ray import exceptions as rex

        where = f"{self.placed.node_ip} ({self.placed.node_id[:12]})" if self.placed else "unknown"
        reason = ExitReason.NODE_LOST
        if isinstance(exc, rex.NodeDiedError):
            message = f"NODE_LOST: the Ray node {where} running the run was lost; the run did not finish"
            if self.placed is not None:
                self.box.lost_nodes[self.placed.node_id] = time.monotonic()
        elif isinstance(exc, rex.WorkerCrashedError):
            message = f"NODE_LOST: the Ray worker on {where} running the sandbox died"
        else:
            reason = ExitReason.SANDBOX_ERROR
            message = f"the run failed on Ray node {where}: {str(exc).splitlines()[0][:300]}"
        log.warning("run lost", execution_id=self.spec.execution_id, node=where, error=type(exc).__name__)
        return Finished(reason, -1, 0, ResourceUsage(), message)

    async def _drain(self) -> None:
        from ray import exceptions as rex

        while True:
            try:
                await self._next()
            except (StopAsyncIteration, rex.RayError):
                return

    async def _stop(self) -> None:
        """Plain cancel, wait for the task's own cleanup, then force and sweep the node."""
        import ray

        if self.gen is None:
            return
        grace = self.box.config.cancel_grace_s
        if grace > 0:
            with contextlib.suppress(Exception):
                ray.cancel(self.gen, force=False)
            try:
                await asyncio.wait_for(self._drain(), grace)
                return
            except TimeoutError:
                pass
        self.forced = True
        with contextlib.suppress(Exception):
            ray.cancel(self.gen, force=True)
        if self.placed is None:
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy = NodeAffinitySchedulingStrategy(node_id=self.placed.node_id, soft=False)
        ref = self.box._sweep.options(num_cpus=0, max_retries=0, scheduling_strategy=strategy).remote(
            self.box.node, self.placed.worker_pid, self.spec.execution_id
        )
        try:
            self.swept = await asyncio.wait_for(ref, 30.0)
            log.info("node swept after a forced cancel", node=self.placed.node_id, outcome=self.swept)
        except Exception as exc:
            log.error(
                "could not sweep the node after a forced cancel", node=self.placed.node_id, error=str(exc)
            )


def _cancelled() -> Finished:
    return Finished(ExitReason.CANCELLED, -1, 0, ResourceUsage(), "the caller cancelled the execution")


async def _shielded(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise
