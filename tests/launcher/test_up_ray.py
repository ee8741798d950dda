"""``zx up --ray``: the launcher starts a real single-node Ray head, reads the cluster's nodes and free
resources from it as ``zx status`` does, hands the executor the backend, address and token file, and
stops it as ``zx down`` does.

Free, non-default ports for everything (the suite's, the Ray node's eleven and its worker range), an
empty ZX_HOME. ``--ray-address`` (joining an existing cluster) is checked for its refusals only: a
second Ray cluster in this test would double its time on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from zehanx_cli import procs, ray_local
from zehanx_cli.errors import LaunchError
from zehanx_cli.settings import LauncherSettings
from zehanx_cli.suite import State, Suite

SERVICES = ("gateway", "crawler", "codegen", "executor", "trainer")
PARTS = (*SERVICES, "postgres")
ZX = [str(Path(sys.executable).with_name("zx"))]
MEMORY = 3 * 2**30

pytestmark = pytest.mark.slow


def _free_block(size: int) -> int:
    """The first port of ``size`` consecutive ports that are free now."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if base + size < 61000 and all(procs.port_free("127.0.0.1", p) for p in range(base, base + size)):
            return base
    raise AssertionError("no block of free ports")


@pytest.fixture
def ray_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """zx's environment (set in this process too): an empty ZX_HOME and free ports."""
    home = tmp_path / "zx-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZX_", "RAY_"))}
    for key in os.environ:
        if key.startswith(("ZX_", "RAY_")):
            monkeypatch.delenv(key)
    env["ZX_HOME"] = str(home)
    base = _free_block(len(PARTS) + 11 + 30)
    for offset, name in enumerate(PARTS):
        env[f"ZX_{name.upper()}_PORT"] = str(base + offset)
        if name != "postgres":
            env[f"ZX_{name.upper()}_METRICS_PORT"] = "0"
    env["ZX_RAY_PORT"] = str(base + len(PARTS))
    env["ZX_RAY_WORKER_PORTS"] = f"{base + len(PARTS) + 11}-{base + len(PARTS) + 40}"
    env["ZX_RAY_MEMORY_BYTES"] = str(MEMORY)
    env["ZX_RAY_CPUS"] = "2"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    Suite(LauncherSettings(), say=lambda text: None).down(purge=True)
    leftovers = procs.marked(home)
    for pid in leftovers:
        procs.signal_pid(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind after the test: {leftovers}"


def zx(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZX, *args], env=env, capture_output=True, text=True, timeout=timeout)


def ray_processes(temp: Path) -> list[int]:
    """Live processes of the Ray node: the head's session folder is on their command line or in their
    open files' paths (gcs_server, raylet, agents, workers)."""
    found = []
    for pid in procs.all_pids():
        if pid == os.getpid():
            continue
        if str(temp) in procs.cmdline_of(pid) and procs.is_alive(pid):
            found.append(pid)
    return found


def test_the_suites_ray_head_runs_with_token_auth_every_port_set_and_stops_with_the_suite(
    ray_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What zx up --ray adds to the suite, through the launcher's own code: the head starts (as zx up
    starts it), zx status reads its nodes and free resources, the executor would get the backend, the
    address and the token file, and zx down's stop leaves no Ray process. (The whole suite on a Ray head,
    ``zx up --ray --detach`` then ``zx status --json`` then ``zx down``, was run by hand: see docs/scale.md;
    it takes about a minute here, too long for every test run.)"""
    home = Path(ray_env["ZX_HOME"])
    settings = LauncherSettings()
    suite = Suite(settings, say=lambda text: None, ray=True)
    state = State(str(home), "now", None, None, external_database=True)
    token_file = suite._ray_token_file()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token_file.read_text().strip()) == 64
    address = f"127.0.0.1:{ray_env['ZX_RAY_PORT']}"
    temp = ray_local.temp_dir(home)
    try:
        suite._start_ray(state, token_file)
        assert (state.ray_mode, state.ray_address, state.ray_token_file) == ("head", address, str(token_file))
        (record,) = state.records
        # The head: token auth on, the token by file only, every port and its memory set.
        head_env = procs.environ_of(record.pid)
        assert head_env["RAY_AUTH_MODE"] == "token" and head_env["RAY_AUTH_TOKEN_PATH"] == str(token_file)
        assert "RAY_AUTH_TOKEN" not in head_env and not any(k.startswith("ZX_GATEWAY") for k in head_env)
        command = procs.cmdline_of(record.pid)
        for name, port in ray_local.ports(settings).items():
            if name not in ("gcs", "DASHBOARD_METRIC_PORT", "AUTOSCALER_METRIC_PORT"):
                assert f"--{name}={port}" in command, name
        assert f"--port={settings.ray_port}" in command
        assert f"--memory={MEMORY}" in command and "--include-dashboard=false" in command
        assert suite.health(state)[0].health == "SERVING"

        cluster = ray_local.cluster_status(address, token_file)
        (node,) = cluster["nodes"]
        assert node["alive"] is True
        assert node["resources"]["CPU"] == 2 and node["resources"]["memory"] == MEMORY
        assert node["resources"][ray_local.NODE_RESOURCE] == 1
        assert cluster["total"]["CPU"] == 2 and 0 <= cluster["free"]["CPU"] <= 2

        executor = suite._child_env("executor", "t", None, ray=(address, str(token_file)))
        assert executor["ZX_EXECUTOR_BACKEND"] == "ray" and executor["ZX_EXECUTOR_RAY_ADDRESS"] == address
        assert executor["ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE"] == str(token_file)
        assert token_file.read_text().strip() not in json.dumps(executor)
        assert "ZX_EXECUTOR_BACKEND" not in suite._child_env("trainer", "t", None)
        assert ray_processes(temp)
    finally:
        stopped = suite._stop_state(state)
        suite._sweep()
    assert [(s.name, s.how) for s in stopped] == [("ray", "SIGTERM")]
    assert procs.marked(home) == [] and ray_processes(temp) == []
    assert not ray_local.reachable(address)


def test_ray_options_are_refused_with_a_reason_before_anything_starts(
    ray_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = LauncherSettings()
    with pytest.raises(LaunchError, match="give one of them"):
        Suite(settings, ray=True, ray_address="127.0.0.1:1")
    joining = Suite(settings, say=lambda text: None, ray_address="127.0.0.1:1")
    with pytest.raises(LaunchError, match="ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE"):
        joining.up(detach=True, on_ready=lambda rows: None)
    monkeypatch.setenv("ZX_EXECUTOR_RAY_AUTH_TOKEN", "f" * 64)
    with pytest.raises(LaunchError, match=r"nothing answers at --ray-address 127\.0\.0\.1:1"):
        joining.up(detach=True, on_ready=lambda rows: None)
    monkeypatch.setenv("ZX_RAY_PORT", ray_env["ZX_GATEWAY_PORT"])
    with pytest.raises(LaunchError, match="one of the Ray node's ports"):
        Suite(LauncherSettings(), say=lambda text: None, ray=True).up(detach=True, on_ready=lambda rows: None)
    assert not (Path(ray_env["ZX_HOME"]) / "run" / "state.json").exists()
    assert procs.marked(Path(ray_env["ZX_HOME"])) == []
