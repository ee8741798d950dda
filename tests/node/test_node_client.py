"""The Node.js client test (gateway_client.test.mjs) against a real gRPC server.

The server is gateway-shaped but self-contained: the generated `GatewayServiceServicer` base class
(every RPC answers UNIMPLEMENTED) plus the standard health service, on 127.0.0.1, port 0. The Node
client loads only `.proto` files, so this proves the contract works across languages, health
checks included.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from zehanx.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
GATEWAY_SERVICE = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed; the Node.js client test needs it"
)


@pytest.fixture
async def gateway_address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(
        gateway_service_pb2_grpc.GatewayServiceServicer(), server
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(GATEWAY_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def _render_proto_imports() -> None:
    """Writes protos/build/ (rendered validate.proto, googleapis imports) for the Node loader."""
    subprocess.run([sys.executable, "scripts/gen_protos.py", "--deps-only"], cwd=ROOT, check=True)


def _tap_count(output: str, name: str) -> int:
    match = re.search(rf"^# {name} (\d+)$", output, re.MULTILINE)
    assert match, f"no '# {name}' line in the node --test output:\n{output}"
    return int(match.group(1))


async def test_node_client_calls_health_and_get_job_on_a_real_server(gateway_address: str) -> None:
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules lacks @grpc/grpc-js: run `npm install` at the repository root")
    _render_proto_imports()
    env = {**os.environ, "ZX_GATEWAY_ADDRESS": gateway_address}
    # The server runs on this event loop, so node must run as an asyncio subprocess.
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
