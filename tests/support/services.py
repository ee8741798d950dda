"""Real service processes (``python -m zehanx_<service>``) for cross-process tests and benches, and a
user's API key made the way a user makes one; written once here for every folder that starts them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    """This process's environment without the developer's own ``ZX_`` and ``SUPABASE_`` settings, so that a
    started service reads only what its test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ZX_", "SUPABASE_"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen[bytes]
    address: str
    token: str
    log: Path
    api_key: str = ""

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                    )
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"{self.name} not SERVING after {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_service(
    name: str,
    tmp: Path,
    *,
    token: str = "test-token",
    extra_env: dict[str, str] | None = None,
    grace: float = 3.0,
) -> ServiceProcess:
    port = free_port()
    prefix = f"ZX_{name.upper()}_"
    env = clean_env()
    env.update(
        {
            f"{prefix}PORT": str(port),
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}SERVICE_TOKEN": token,
            f"{prefix}GRACE_SECONDS": str(grace),
            f"{prefix}LOG_JSON": "true",
            "ZX_HOME": str(tmp / "zxhome"),
        }
    )
    env.update(extra_env or {})
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", f"zehanx_{name}"],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return ServiceProcess(name, proc, f"127.0.0.1:{port}", token, log)


def descendants(pid: int) -> list[int]:
    """Pids whose parent chain reaches ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, pp in parents.items() if pp == current]
        found += children
        frontier += children
    return found


def zx_api_key(database_url: str, user: str) -> str:
    """A real gateway API key for ``user``, made the way a user makes one (``zx keys create``)."""
    env = clean_env()
    env["ZX_GATEWAY_DATABASE_URL"] = database_url
    done = subprocess.run(
        [str(Path(sys.executable).with_name("zx")), "keys", "create", "--user", user, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["key"]
