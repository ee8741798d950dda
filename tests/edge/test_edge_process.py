"""The edge as ``zx-gateway`` serves it: a real gateway process, the README's curl examples run against it
as they are written, and a clean stop on SIGTERM."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from edge_support import JWT_SECRET, jwt_for
from support.services import ServiceProcess, free_port, start_service, zx_api_key

ROOT = Path(__file__).resolve().parents[2]
GETJOB = "/zehanx.gateway.v1.GatewayService/GetJob"

pytestmark = pytest.mark.skipif(not Path("/usr/bin/curl").exists(), reason="the README examples need curl")


@dataclass
class GatewayProcess:
    service: ServiceProcess
    edge_url: str

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.service.proc

    def output(self) -> str:
        return self.service.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def gateway_process(database_url: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    edge_port = free_port()
    service = start_service(
        "gateway",
        tmp_path,
        grace=2,
        extra_env={
            "ZX_GATEWAY_EDGE_PORT": str(edge_port),
            "ZX_GATEWAY_DATABASE_URL": database_url,
            "ZX_GATEWAY_JWT_SECRET": JWT_SECRET,
            "ZX_GATEWAY_JWT_ISSUER": "https://test.supabase.co/auth/v1",
            "ZX_GATEWAY_WORKERS": "0",  # the API alone: jobs stay QUEUED until cancelled
        },
    )
    running = GatewayProcess(service, f"http://127.0.0.1:{edge_port}")
    try:
        deadline = time.monotonic() + 90
        while True:
            assert running.proc.poll() is None, (
                f"the gateway exited {running.proc.returncode}: {running.output()}"
            )
            try:
                # Any Connect answer (here: unauthenticated) means the edge serves.
                if httpx.post(running.edge_url + GETJOB, json={}, timeout=5).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the edge never answered: {running.output()}"
            time.sleep(0.2)
        yield running
    finally:
        service.stop()


def readme_examples() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- edge-curl-examples -->\n```sh\n(.*?)```", readme, re.S)
    assert match, "README.md lost its edge curl examples"
    return match.group(1)


def test_the_readme_curl_examples_run_against_a_gateway_process(
    gateway_process: GatewayProcess, database_url: str, tmp_path: Path
) -> None:
    key = zx_api_key(database_url, "readme")
    env = {**os.environ, "EDGE": gateway_process.edge_url, "KEY": key}
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + readme_examples()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + gateway_process.output()
    out = done.stdout
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["state"] == "JOB_STATE_QUEUED"
    # GetJob (by GET) and ListJobs both show the job; the bad request names its field.
    assert out.count(job["id"]) >= 4
    assert '"code": "invalid_argument"' in out and "job_id" in out
    # The upload answers its id, size and SHA-256; the key list shows the key the test made.
    tiny = (tmp_path / "tiny.csv").read_bytes()
    assert f'"sha256": "{hashlib.sha256(tiny).hexdigest()}"' in out and '"filename": "tiny.csv"' in out
    assert f'"sizeBytes": "{len(tiny)}"' in out
    assert '"apiKeys"' in out and key.split("_")[1] in out
    # The stream: a snapshot, the stored events, the CANCELLED transition with its reason, a clean end.
    assert '"snapshot"' in out
    assert out.rstrip().endswith("{}")
    assert '"toState": "JOB_STATE_CANCELLED"' in out
    assert "just trying" in out


def test_the_gateway_process_serves_jwts_on_the_edge_and_stops_on_sigterm(
    gateway_process: GatewayProcess,
) -> None:
    token = jwt_for(uuid.uuid4())
    created = httpx.post(
        gateway_process.edge_url + "/zehanx.gateway.v1.GatewayService/CreateJob",
        json={"job": {"prompt": "Create a sentiment analysis model"}},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    assert created.json()["state"] == "JOB_STATE_QUEUED"
    assert '"edge serving"' in gateway_process.output()

    os.killpg(gateway_process.proc.pid, signal.SIGTERM)
    assert gateway_process.proc.wait(60) == 0, gateway_process.output()
    port = int(gateway_process.edge_url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the edge port still accepts after the stop"
