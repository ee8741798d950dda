"""The Node.js client test (gateway_client.test.mjs) against the real gateway process.

``python -m zehanx_gateway`` on 127.0.0.1 and a free port, with the session's real PostgreSQL, and a
user's API key made with ``zx keys create``. The Node client loads only `.proto` files and calls the
standard health check and GetJob (an unknown job must be NOT_FOUND), so this proves the public
contract, auth included, works from another language.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.services import start_service, zx_api_key

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed; the Node.js client test needs it"
)


@pytest.fixture
def gateway(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(address, API key) of a real gateway process; stopped afterwards."""
    process = start_service(
        "gateway",
        tmp_path,
        token="node-test-token",
        extra_env={
            "ZX_GATEWAY_DATABASE_URL": postgres_url,
            "ZX_GATEWAY_WORKERS": "0",  # no job runs here: only the API is under test
            "ZX_GATEWAY_EDGE_ENABLED": "false",
        },
    )
    try:
        process.wait_serving(timeout=60)
        yield process.address, zx_api_key(postgres_url, "node-client")
    finally:
        process.stop()


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
