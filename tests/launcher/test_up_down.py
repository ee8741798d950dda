"""``zx up --detach`` / ``zx status --json`` / ``zx down``: the real CLI starting the real services.

Each test gets an empty ZX_HOME and free, non-default ports (set through the same environment
variables a user would set), so it never touches a suite the developer runs on the default ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zehanx_cli import procs
from zehanx_cli.postgres import EmbeddedPostgres

SERVICES = ("gateway", "crawler", "codegen", "executor", "trainer")
PARTS = (*SERVICES, "postgres")
ZX = [str(Path(sys.executable).with_name("zx"))]

pytestmark = pytest.mark.slow


def _free_ports(count: int) -> list[int]:
    """Distinct ports that are free now (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def suite_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for zx: empty ZX_HOME, free ports; the suite is torn down (and purged) afterwards."""
    home = tmp_path / "zx-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env["ZX_HOME"] = str(home)
    for name, port in zip(PARTS, _free_ports(len(PARTS)), strict=True):
        env[f"ZX_{name.upper()}_PORT"] = str(port)
    for name in PARTS:
        if name != "postgres":
            env[f"ZX_{name.upper()}_METRICS_PORT"] = "0"  # any free port: suites of other tests may be up
    yield env
    subprocess.run([*ZX, "down", "--purge"], env=env, capture_output=True, timeout=120)
    leftovers = procs.marked(home)
    for pid in leftovers:
        procs.signal_pid(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind after the test: {leftovers}"


def zx(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZX, *args], env=env, capture_output=True, text=True, timeout=timeout)


def grpc_health(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes (not this test) whose command line or environment contains ``text``."""
    found = []
    for pid in procs.all_pids():
        if pid == os.getpid() or not procs.is_alive(pid):
            continue
        environ = "\0".join(f"{k}={v}" for k, v in procs.environ_of(pid).items())
        cmdline = procs.cmdline_of(pid)
        if text in cmdline or text in environ:
            found.append((pid, cmdline))
    return found


def port_is_free(port: int) -> bool:
    return procs.port_free("127.0.0.1", port)


def test_up_status_down_round_trip_twice_from_an_empty_home(suite_env: dict[str, str]) -> None:
    home = Path(suite_env["ZX_HOME"])
    assert not home.exists()
    ports = {name: int(suite_env[f"ZX_{name.upper()}_PORT"]) for name in PARTS}

    for round_number in (1, 2):
        up = zx(suite_env, "up", "--detach")
        assert up.returncode == 0, f"round {round_number}: zx up failed:\n{up.stdout}\n{up.stderr}"
        for name in PARTS:
            assert f"127.0.0.1:{ports[name]}" in up.stdout, f"zx up does not say where {name} listens"

        status = zx(suite_env, "status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True
        by_name = {s["name"]: s for s in report["services"]}
        assert set(by_name) == set(PARTS)
        for name in PARTS:
            assert by_name[name]["health"] == "SERVING", by_name[name]
            assert by_name[name]["address"] == f"127.0.0.1:{ports[name]}"

        # Do not take zx's word for it: ask every service and PostgreSQL directly.
        for name in SERVICES:
            assert grpc_health(ports[name]) == "SERVING"
        database_url = EmbeddedPostgres(home, port=ports["postgres"]).url()
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("zehanx",)

        # The service token exists, is private, and no command printed it.
        token = (home / "service-token").read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE((home / "service-token").stat().st_mode) == 0o600
        assert token not in up.stdout + up.stderr + status.stdout + status.stderr

        again = zx(suite_env, "up", "--detach")
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stdout

        state = json.loads((home / "run" / "state.json").read_text())
        recorded = [(r["pid"], r["started"]) for r in state["records"]]
        assert {r["name"] for r in state["records"]} == set(PARTS)
        assert all(procs.is_alive(pid, started) for pid, started in recorded)

        down = zx(suite_env, "down")
        assert down.returncode == 0, f"round {round_number}: zx down failed:\n{down.stdout}\n{down.stderr}"
        assert token not in down.stdout + down.stderr
        assert not any(procs.is_alive(pid, started) for pid, started in recorded)
        assert processes_mentioning(str(home)) == []
        assert not (home / "run" / "state.json").exists()
        assert all(port_is_free(port) for port in ports.values())

        after = zx(suite_env, "status", "--json")
        assert after.returncode == 1
        assert json.loads(after.stdout) == {"home": str(home), "running": False, "services": []}


def test_foreground_up_cleans_a_stale_state_and_stops_everything_on_sigterm(
    suite_env: dict[str, str],
) -> None:
    home = Path(suite_env["ZX_HOME"])
    write_stale_state(home)
    launcher = subprocess.Popen(
        [*ZX, "up"], env=suite_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            status = zx(suite_env, "status", "--json")
            if status.returncode == 0:
                break
            assert launcher.poll() is None, f"zx up exited early:\n{launcher.stdout.read()}"
            assert time.monotonic() < deadline, "the suite never became healthy"
            time.sleep(0.5)
        recorded = [(s["pid"]) for s in json.loads(status.stdout)["services"]]
        state = json.loads((home / "run" / "state.json").read_text())
        assert state["launcher_pid"] == launcher.pid

        launcher.send_signal(signal.SIGTERM)
        output, _ = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, output
        assert "stale state file" in output
        assert "Stopping the suite" in output
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert not any(procs.is_alive(pid) for pid in recorded)
    assert processes_mentioning(str(home)) == []
    assert not (home / "run" / "state.json").exists()


def test_a_taken_port_is_named_with_the_setting_that_moves_it(suite_env: dict[str, str]) -> None:
    home = Path(suite_env["ZX_HOME"])
    port = int(suite_env["ZX_CODEGEN_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        up = zx(suite_env, "up", "--detach")
    assert up.returncode == 1
    assert f"port {port}" in up.stderr
    assert "ZX_CODEGEN_PORT" in up.stderr
    assert f"pid {os.getpid()}" in up.stderr  # who holds it
    assert processes_mentioning(str(home)) == []
    assert not (home / "run" / "state.json").exists()


def write_stale_state(home: Path) -> None:
    """A state file whose only process has exited."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    (home / "run").mkdir(parents=True)
    state = {
        "version": 1,
        "home": str(home),
        "launched_at": "2026-01-01T00:00:00+00:00",
        "launcher_pid": None,
        "launcher_started": None,
        "external_database": False,
        "records": [
            {"name": "crawler", "pid": gone.pid, "started": 1, "address": "127.0.0.1:1", "log": "/dev/null"}
        ],
    }
    (home / "run" / "state.json").write_text(json.dumps(state))


def test_a_stale_state_file_is_reported_and_removed_by_down(suite_env: dict[str, str]) -> None:
    home = Path(suite_env["ZX_HOME"])
    write_stale_state(home)

    status = zx(suite_env, "status", "--json")
    assert status.returncode == 1
    assert json.loads(status.stdout)["services"][0]["health"] == "EXITED"

    down = zx(suite_env, "down")
    assert down.returncode == 0, down.stderr
    assert "crawler" in down.stdout and "not running" in down.stdout
    assert not (home / "run" / "state.json").exists()


def test_two_services_on_one_port_is_a_settings_error(suite_env: dict[str, str]) -> None:
    env = {**suite_env, "ZX_TRAINER_PORT": suite_env["ZX_GATEWAY_PORT"]}
    up = zx(env, "up", "--detach")
    assert up.returncode == 1
    assert (
        "ZX_TRAINER_PORT and ZX_GATEWAY_PORT" in up.stderr
        or "ZX_GATEWAY_PORT and ZX_TRAINER_PORT" in up.stderr
    )
    assert not Path(env["ZX_HOME"], "run", "state.json").exists()
