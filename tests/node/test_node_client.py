"""The Node.js client test (gateway_client.test.mjs) against the real gateway process.

``python -m zehanx_gateway`` on 127.0.0.1 and a free port, with the session's real PostgreSQL, and a
user's API key made with ``zx keys create``. The Node client loads only `.proto` files and calls the
standard health check and GetJob (an unknown job must be NOT_FOUND), so this proves the public
contract, auth included, works from another language.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed; the Node.js client test needs it"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateway(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(address, API key) of a real gateway process; stopped with SIGTERM afterwards."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update(
        {
            "ZX_HOME": str(tmp_path / "zx-home"),
            "ZX_GATEWAY_HOST": "127.0.0.1",
            "ZX_GATEWAY_PORT": str(port),
            "ZX_GATEWAY_DATABASE_URL": postgres_url,
            "ZX_GATEWAY_SERVICE_TOKEN": "node-test-token",
            "ZX_GATEWAY_WORKERS": "0",  # no job runs here: only the API is under test
            "ZX_GATEWAY_EDGE_ENABLED": "false",
        }
    )
    log = tmp_path / "gateway.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zehanx_gateway"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert proc.poll() is None, f"gateway exited {proc.returncode}: {log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"gateway not SERVING: {log.read_text()[-3000:]}"
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    time.sleep(0.2)
        keys_env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
        keys_env["ZX_GATEWAY_DATABASE_URL"] = postgres_url
        made = subprocess.run(
            [str(Path(sys.executable).with_name("zx")), "keys", "create", "--user", "node-client", "--json"],
            env=keys_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        yield address, json.loads(made.stdout)["key"]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _render_proto_imports() -> None:
    """Writes protos/build/ (rendered validate.proto, googleapis imports) for the Node loader."""
    subprocess.run([sys.executable, "scripts/gen_protos.py", "--deps-only"], cwd=ROOT, check=True)


def _tap_count(output: str, name: str) -> int:
    match = re.search(rf"^# {name} (\d+)$", output, re.MULTILINE)
    assert match, f"no '# {name}' line in the node --test output:\n{output}"
    return int(match.group(1))


async def test_node_client_calls_health_and_get_job_on_the_real_gateway(gateway: tuple[str, str]) -> None:
    gateway_address, api_key = gateway
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules lacks @grpc/grpc-js: run `npm install` at the repository root")
    _render_proto_imports()
    env = {**os.environ, "ZX_GATEWAY_ADDRESS": gateway_address, "ZX_API_KEY": api_key}
    proc = await asyncio.create_subprocess_exec(
        NODE,
        "--test",
        "--test-reporter=tap",
        "tests/node/",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("node --test did not finish within 120 s")
    output = raw.decode("utf-8", "replace")
    assert proc.returncode == 0, output
    assert _tap_count(output, "fail") == 0, output
    assert _tap_count(output, "skipped") == 0, output
    assert _tap_count(output, "pass") >= 3, output
    assert "GetJob with a valid uuid gets a proper gRPC answer" in output
