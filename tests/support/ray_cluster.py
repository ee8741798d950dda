"""A real multi-node Ray cluster on this host for the tests (``ray.cluster_utils.Cluster``).

A head that runs nothing (no CPUs) and worker nodes with the resources a test gives them; every Ray
listener on an explicit port (unset ones are random and may hit the suite's), token authentication on,
no dashboard. :func:`ray_cluster` stops it by pid (never ``ray stop``) and checks no Ray process outlived
it. The executor's Ray backend tests and the end-to-end node-loss test build theirs with it.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

GiB = 1 << 30


def node_ports(base: int, workers: int) -> dict[str, int]:
    """One node's listeners from ``base`` (+1..+6) and its 50 worker ports from ``workers``."""
    return {
        "node_manager_port": base + 1,
        "object_manager_port": base + 2,
        "metrics_export_port": base + 3,
        "dashboard_agent_listen_port": base + 4,
        "metrics_agent_port": base + 5,
        "runtime_env_agent_port": base + 6,
        "min_worker_port": workers,
        "max_worker_port": workers + 49,
        "object_store_memory": 100_000_000,
    }


def node_pids(node: Any) -> list[int]:
    return [p.process.pid for procs in node.all_processes.values() for p in procs if p.process]


@dataclass
class RayCluster:
    cluster: Any
    workers: list[Any]
    """The worker nodes, in the order they were asked for."""
    token: str
    pids: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node_running(self, pid: int) -> Any | None:
        """The worker node whose raylet is an ancestor of ``pid`` (a run's sandboxed process), if any."""
        raylets = {p.process.pid: node for node in self.workers for p in node.all_processes.get("raylet", [])}
        seen = 0
        while pid > 1 and seen < 64:
            if pid in raylets:
                return raylets[pid]
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return None
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            seen += 1
        return None


@contextmanager
def ray_cluster(
    gcs_port: int, worker_ports: int, workers: Sequence[dict[str, Any]], *, token: str | None = None
) -> Iterator[RayCluster]:
    """A head on ``gcs_port`` (its listeners from there) and one node per entry of ``workers`` (keyword
    arguments of ``Cluster.add_node``: num_cpus, memory, resources), node ``i`` on ports ``gcs_port +
    10 * (i + 1)`` and workers from ``worker_ports + 50 * (i + 1)``."""
    import ray
    from ray.cluster_utils import Cluster
    from zehanx_executor.sandbox.raycluster import refresh_ray_auth

    token = token or secrets.token_hex(16)
    env = pytest.MonkeyPatch()
    env.setenv("RAY_AUTH_MODE", "token")
    env.setenv("RAY_AUTH_TOKEN", token)
    env.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env.setenv("DASHBOARD_METRIC_PORT", str(gcs_port + 90))
    env.setenv("AUTOSCALER_METRIC_PORT", str(gcs_port + 91))
    refresh_ray_auth()  # this process starts the head: it must speak token auth too
    started = time.monotonic()
    pids: list[int] = []
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "memory": GiB // 2,
            "include_dashboard": False,
            "gcs_server_port": gcs_port,
            "ray_client_server_port": gcs_port + 8,
            **node_ports(gcs_port, worker_ports),
        },
    )
    try:
        nodes = [
            cluster.add_node(**spec, **node_ports(gcs_port + 10 * (i + 1), worker_ports + 50 * (i + 1)))
            for i, spec in enumerate(workers)
        ]
        cluster.wait_for_nodes()
        print(f"\nray cluster of {len(nodes) + 1} nodes up in {time.monotonic() - started:.1f} s")
        pids = [pid for node in cluster.list_all_nodes() for pid in node_pids(node)]
        yield RayCluster(cluster, nodes, token, pids)
    finally:
        ray.shutdown()
        cluster.shutdown()  # kills the processes it started, by pid (never `ray stop`)
        env.undo()
        refresh_ray_auth()
    deadline = time.monotonic() + 10
    while (alive := [p for p in pids if os.path.exists(f"/proc/{p}")]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"Ray processes outlived the cluster: {alive}"
