"""The executor as a process: ``zx sandbox run`` against it, and its refusal to start on a host that
cannot sandbox.

``zx sandbox run FILE`` is run as a user runs it (the installed ``zx`` script, a real executor process
reached over TCP with the service token): the program's output comes through, its exit status is
``zx``'s, and when the sandbox stops it the reason is on stderr and the status is non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_helpers import CLI_UID_BASE
from support.sandbox import local_executor
from support.services import ServiceProcess, free_port, start_service
from zehanx_executor.sandbox.probe import Capabilities

ZX = str(Path(sys.executable).with_name("zx"))
TOKEN = "cli-test-token"
# Own folder and uid range (see sandbox_helpers), distinct from the in-process tests'.
WORK_DIR = "/var/tmp/zx-executor-cli-tests"


@pytest.fixture(scope="module")
def executor(caps: Capabilities, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with local_executor(tmp_path_factory.mktemp("executor-process"), TOKEN, WORK_DIR, CLI_UID_BASE, 2) as svc:
        yield svc


def zx_sandbox(
    executor_address: str, tmp: Path, code: str, *args: str, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    program = tmp / "prog.py"
    program.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update(ZX_EXECUTOR_ADDRESS=executor_address, ZX_SERVICE_TOKEN=token, ZX_HOME=str(tmp / "home"))
    return subprocess.run(
        [ZX, "sandbox", "run", str(program), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_zx_sandbox_run_streams_output_and_passes_the_exit_status_through(
    executor: ServiceProcess, tmp_path: Path
) -> None:
    code = r"""
import sys
print('args', sys.argv[1:])
print('@@zx:{"kind": "metric", "acc": 0.9}')
print('oops', file=sys.stderr)
sys.exit(7)
"""
    done = zx_sandbox(executor.address, tmp_path, code, "--", "a", "b c")
    assert done.returncode == 7, done.stderr
    assert done.stdout == "args ['a', 'b c']\n"
    assert "oops" in done.stderr
    [metric] = [line for line in done.stderr.splitlines() if line.startswith("[metric] ")]
    assert json.loads(metric.removeprefix("[metric] ")) == {"kind": "metric", "acc": 0.9}

    ok = zx_sandbox(executor.address, tmp_path, "import os; print(os.getuid() != 0, os.getpid())")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split()[0] == "True"  # an unprivileged uid, inside its own pid namespace
    assert int(ok.stdout.split()[1]) < 10


def test_zx_sandbox_run_reports_the_limit_that_stopped_the_program(
    executor: ServiceProcess, tmp_path: Path
) -> None:
    slow = zx_sandbox(executor.address, tmp_path, "import time; print('start', flush=True); time.sleep(600)",
                      "--timeout", "1")  # fmt: skip
    assert slow.returncode == 128 + 9, slow.stderr
    assert slow.stdout == "start\n"
    assert "stopped by the sandbox (time limit)" in slow.stderr and "wall-clock" in slow.stderr

    hungry = zx_sandbox(executor.address, tmp_path, "b = [b'x' * (1 << 20) for _ in range(1000)]",
                        "--memory", "64")  # fmt: skip
    assert hungry.returncode == 128 + 9, hungry.stderr
    assert "stopped by the sandbox (memory limit)" in hungry.stderr


def test_zx_sandbox_run_says_why_it_could_not_run(executor: ServiceProcess, tmp_path: Path) -> None:
    if Path("/dev/nvidia0").exists():
        pytest.skip("this host has a GPU: --gpu is accepted here")
    gpu = zx_sandbox(executor.address, tmp_path, "print(1)", "--gpu")
    assert gpu.returncode == 125
    assert "FAILED_PRECONDITION" in gpu.stderr and "GPU" in gpu.stderr

    wrong = zx_sandbox(executor.address, tmp_path, "print(1)", token="wrong")
    assert wrong.returncode == 125 and "UNAUTHENTICATED" in wrong.stderr

    nobody = zx_sandbox(f"127.0.0.1:{free_port()}", tmp_path, "print(1)")
    assert nobody.returncode == 125
    assert "UNAVAILABLE" in nobody.stderr and "is the executor running" in nobody.stderr


def test_the_executor_refuses_to_start_where_it_cannot_sandbox(caps: Capabilities, tmp_path: Path) -> None:
    """A job folder the sandbox uids cannot reach (under a 0700 folder) is one thing that makes the host
    unable to sandbox: the executor must exit with a message that names it, never run unsandboxed."""
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    svc = start_service(
        "executor",
        tmp_path,
        token=TOKEN,
        extra_env={"ZX_EXECUTOR_BACKEND": "local", "ZX_EXECUTOR_WORK_DIR": str(hidden / "work")},
    )
    try:
        rc = svc.proc.wait(60)
    finally:
        svc.stop()
    log = svc.log.read_text()
    assert rc != 0
    assert "cannot run the local sandbox" in log and "is not reachable by the sandbox uids" in log
    assert "ZX_EXECUTOR_UNSAFE_DEV_NO_SANDBOX" in log  # the way out is named, and is not taken


def test_the_unsafe_runner_is_off_unless_asked_for_by_name() -> None:
    from zehanx_executor.settings import ExecutorSettings

    env = {k: v for k, v in os.environ.items() if k.startswith("ZX_EXECUTOR_")}
    assert "ZX_EXECUTOR_UNSAFE_DEV_NO_SANDBOX" not in env
    assert ExecutorSettings().unsafe_dev_no_sandbox is False
