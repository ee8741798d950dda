"""The Ray node ``zx up --ray`` / ``--ray-address`` runs next to the suite, and what ``zx status`` asks it.

``zx up --ray`` starts a single-node Ray head for development; ``zx up --ray-address host:port`` starts a
node that joins an existing cluster with no CPUs and no ``zx_sandbox`` resource (a Ray driver, the
executor, must run on a Ray node; no run is placed on this one). Either way the executor gets
``ZX_EXECUTOR_BACKEND=ray``, the cluster's address and its token file, and the node is one more process
of the suite (``$ZX_HOME/logs/ray.log``, stopped by ``zx down``).

What ``../shared/reference/ray.md`` found, applied here: token authentication on (``RAY_AUTH_MODE=token``,
the token in a 0600 file that only the node and the executor read; the executor never hands it to a
sandbox); every listening port set (``ZX_RAY_PORT`` and the ten after it, the worker ports
``ZX_RAY_WORKER_PORTS``), so none lands at random on a port of the suite; ``--memory`` set (Ray would
offer the whole host's memory); no dashboard; ``ray stop`` never used (it kills every Ray process of the
machine): the node is stopped by its process group and the suite's marker.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from zehanx_cli import procs
from zehanx_cli.errors import LaunchError
from zehanx_cli.settings import LauncherSettings

RAY = "ray"
#: The custom resource sandbox-capable nodes declare (the executor's ZX_EXECUTOR_RAY_NODE_RESOURCE default).
NODE_RESOURCE = "zx_sandbox"
#: Printed by ``ray start`` once the node runs.
_STARTED = "Ray runtime started"


def ray_binary() -> Path:
    binary = Path(sys.executable).with_name("ray")
    if not binary.exists():
        raise LaunchError(f"ray is not installed ({binary} is missing): run make setup")
    return binary


def ports(settings: LauncherSettings) -> dict[str, int]:
    """Every port the node listens on, by Ray's name for it."""
    base = settings.ray_port
    return {
        "gcs": base,
        "node-manager-port": base + 1,
        "object-manager-port": base + 2,
        "metrics-export-port": base + 3,
        "dashboard-agent-listen-port": base + 4,
        "dashboard-agent-grpc-port": base + 5,
        "runtime-env-agent-port": base + 6,
        "ray-client-server-port": base + 7,
        "DASHBOARD_METRIC_PORT": base + 8,
        "AUTOSCALER_METRIC_PORT": base + 9,
        # --include-dashboard=false still runs a minimal dashboard process, on 8265 unless told.
        "dashboard-port": base + 10,
    }


def taken_ports(settings: LauncherSettings) -> list[str]:
    """A line for each port of the node (worker range included) that is not free now."""
    problems = []
    for name, port in ports(settings).items():
        if not procs.port_free(settings.host, port):
            problems.append(f"the Ray node's {name} port {port} is taken (ZX_RAY_PORT moves all eleven)")
    low, high = settings.ray_worker_port_range()
    busy = [p for p in range(low, high + 1) if not procs.port_free(settings.host, p)]
    if busy:
        problems.append(
            f"Ray worker ports {', '.join(map(str, busy[:5]))} are taken (ZX_RAY_WORKER_PORTS moves the range)"
        )
    return problems


def memory_bytes(settings: LauncherSettings) -> int:
    """The memory the node offers runs: ZX_RAY_MEMORY_BYTES, else half of this machine's."""
    if settings.ray_memory_bytes:
        return settings.ray_memory_bytes
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def temp_dir(home: Path) -> Path:
    """Ray's session folder for this ZX_HOME: short (Ray's unix sockets live under it), one per home."""
    return Path("/tmp") / f"zx-ray-{hashlib.sha256(str(home).encode()).hexdigest()[:10]}"


def node_command(settings: LauncherSettings, *, join: str | None) -> list[str]:
    """``ray start`` for a head (``join`` None) or for a node joining ``join`` that takes no runs."""
    p = ports(settings)
    low, high = settings.ray_worker_port_range()
    args = [
        str(ray_binary()),
        "start",
        "--block",  # in the foreground: the suite's process, stopped with its group
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--node-manager-port={p['node-manager-port']}",
        f"--object-manager-port={p['object-manager-port']}",
        f"--metrics-export-port={p['metrics-export-port']}",
        f"--dashboard-agent-listen-port={p['dashboard-agent-listen-port']}",
        f"--dashboard-agent-grpc-port={p['dashboard-agent-grpc-port']}",
        f"--runtime-env-agent-port={p['runtime-env-agent-port']}",
        f"--dashboard-port={p['dashboard-port']}",
        f"--min-worker-port={low}",
        f"--max-worker-port={high}",
        f"--object-store-memory={settings.ray_object_store_bytes}",
    ]
    if join is None:
        args += [
            "--head",
            f"--port={p['gcs']}",
            f"--ray-client-server-port={p['ray-client-server-port']}",
            f"--temp-dir={temp_dir(settings.home)}",
            f"--memory={memory_bytes(settings)}",
            f"--resources={json.dumps({NODE_RESOURCE: 1})}",
        ]
        if settings.ray_cpus:
            args.append(f"--num-cpus={settings.ray_cpus}")
    else:
        # The executor's node: it only drives the cluster; nothing is ever placed on it.
        args += [f"--address={join}", "--num-cpus=0", "--num-gpus=0", "--memory=0", "--resources={}"]
    return args


def node_env(settings: LauncherSettings, token_file: Path) -> dict[str, str]:
    p = ports(settings)
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
        "DASHBOARD_METRIC_PORT": str(p["DASHBOARD_METRIC_PORT"]),
        "AUTOSCALER_METRIC_PORT": str(p["AUTOSCALER_METRIC_PORT"]),
        # Nothing to drain on the suite's node: SIGTERM (zx down) stops it at once, not after 30 s.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }


def wait_started(proc: subprocess.Popen, log: Path, offset: int, timeout: float) -> None:
    """Until ``ray start`` says the node runs; LaunchError with the log's tail if it exits or hangs."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_bytes()[offset:].decode(errors="replace")
        if _STARTED in text:
            return
        tail = "\n".join(text.splitlines()[-20:])
        if proc.poll() is not None:
            raise LaunchError(f"the Ray node exited while starting (exit {proc.returncode}); {log}:\n{tail}")
        if time.monotonic() > deadline:
            raise LaunchError(f"the Ray node did not start within {timeout:.0f}s; {log}:\n{tail}")
        time.sleep(0.3)


def reachable(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


# Run in a child process: importing ray takes about 1.5 s and a driver leaves threads behind.
_STATUS = r"""
import json, sys
import ray
ray.init(address=sys.argv[1], namespace="zx-status", logging_level="ERROR", log_to_driver=False,
         configure_logging=False)
try:
    nodes = [
        {"node_id": n["NodeID"], "address": n["NodeManagerAddress"], "alive": bool(n["Alive"]),
         "resources": {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}}
        for n in ray.nodes()
    ]
    free = {k: v for k, v in ray.available_resources().items() if not k.startswith("node:")}
    total = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
    print(json.dumps({"nodes": nodes, "free": free, "total": total}))
finally:
    ray.shutdown()
"""


def cluster_status(address: str, token_file: Path, *, timeout: float = 60.0) -> dict[str, object]:
    """The cluster's nodes (alive or not, each one's resources) and its free and total resources, or
    ``{"error": ...}`` saying why they could not be read."""
    if not reachable(address):
        return {"error": f"nothing answers at {address}"}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", _STATUS, address],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the Ray cluster at {address} did not answer within {timeout:.0f}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"could not read the Ray cluster at {address}: {last[:300]}"}
    found: dict[str, object] = json.loads(lines[-1])
    return found
