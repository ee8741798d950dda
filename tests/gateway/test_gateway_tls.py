"""TLS on the gateway's public ports (review finding L4: "no TLS anywhere").

With ``ZX_GATEWAY_TLS_CERT_FILE`` / ``ZX_GATEWAY_TLS_KEY_FILE`` the gRPC API is served with
``grpc.ssl_server_credentials`` and the web edge over https. A real gateway with a self-signed
certificate for 127.0.0.1 made in the test: a client that trusts it succeeds, a plaintext client and a
client that does not trust the certificate fail. The CLI reaches it with ``ZX_GATEWAY_ADDRESS=https://…``
and ``ZX_TLS_CA_FILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gateway_support import bearer, gateway_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from support.gateway import open_gateway
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx_cli import health
from zehanx_cli.channel import gateway_target
from zehanx_cli.settings import LauncherSettings
from zehanx_gateway.app import Gateway, server_credentials
from zehanx_gateway.auth import new_api_key
from zehanx_gateway.edge import EdgeSettings, RunningEdge, serve_edge
from zehanx_gateway.settings import GatewaySettings
from zehanx_runtime.server import RunningServer


def self_signed(folder: Path, name: str = "tls") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (what the README's openssl line makes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_file, 0o600)
    return cert_file, key_file


@dataclass
class Secured:
    gateway: Gateway
    server: RunningServer
    edge: RunningEdge
    cert: Path
    key: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@contextlib.asynccontextmanager
async def serve_tls(database_url: str, tmp_path: Path, cert: Path, key: Path) -> AsyncIterator[Secured]:
    """A real gateway (gRPC and edge) serving TLS with ``cert`` and ``key``, and an API key of alice."""
    settings = gateway_settings(database_url, tmp_path, tls_cert_file=cert, tls_key_file=key)
    gateway, server = await open_gateway(settings, credentials=server_credentials(settings))
    edge = await serve_edge(gateway, EdgeSettings(edge_port=0))
    user_id = await gateway.registry.user_by_name("alice", create=True)
    api_key = new_api_key()
    await gateway.registry.add_api_key(user_id, api_key.key_id, api_key.secret_sha256, "test")
    try:
        yield Secured(gateway, server, edge, cert, api_key.token)
    finally:
        await edge.stop(0.5)
        await server.stop(0.5)
        await gateway.close()


@pytest.fixture
async def secured(database_url: str, tmp_path: Path) -> AsyncIterator[Secured]:
    async with serve_tls(database_url, tmp_path, *self_signed(tmp_path)) as running:
        yield running


async def _health(channel: grpc.aio.Channel) -> int:
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status


async def test_l4_grpc_api_over_tls_answers_a_client_that_trusts_its_certificate(secured: Secured) -> None:
    trusting = grpc.ssl_channel_credentials(root_certificates=secured.cert.read_bytes())
    assert (
        await _health(grpc.aio.secure_channel(secured.address, trusting))
        == health_pb2.HealthCheckResponse.SERVING
    )
    async with grpc.aio.secure_channel(secured.address, trusting) as channel:
        page = await rpc.GatewayServiceStub(channel).ListJobs(
            pb.ListJobsRequest(), metadata=bearer(secured.key), timeout=10
        )
    assert list(page.jobs) == []


async def test_l4_grpc_api_over_tls_refuses_plaintext_and_untrusted_clients(
    secured: Secured, tmp_path: Path
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as plaintext:
        await _health(grpc.aio.insecure_channel(secured.address))
    assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE

    other_ca, _ = self_signed(tmp_path, "other")  # a certificate the server does not have
    for credentials in (
        grpc.ssl_channel_credentials(),  # the system's roots: a self-signed certificate is not among them
        grpc.ssl_channel_credentials(root_certificates=other_ca.read_bytes()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:
            await _health(grpc.aio.secure_channel(secured.address, credentials))
        assert untrusted.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_l4_the_edge_serves_https_with_the_same_certificate(secured: Secured) -> None:
    assert secured.edge.url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(secured.cert))
    async with httpx.AsyncClient(base_url=secured.edge.url, verify=trusting, timeout=10) as http:
        answer = await http.post(
            "/zehanx.gateway.v1.GatewayService/ListJobs",
            json={},
            headers={"authorization": f"Bearer {secured.key}"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json().get("jobs", []) == []

    async with httpx.AsyncClient(verify=ssl.create_default_context(), timeout=10) as untrusting:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.get(f"{secured.edge.url}/config.json")
    async with httpx.AsyncClient(timeout=10) as plain:
        with pytest.raises(httpx.HTTPError):  # http:// to the https port: no answer
            await plain.get(secured.edge.url.replace("https://", "http://") + "/config.json")


def _zx(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    return subprocess.run(
        [str(Path(sys.executable).with_name("zx")), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_l4_the_cli_calls_a_tls_gateway_with_its_ca_and_refuses_otherwise(
    secured: Secured, tmp_path: Path
) -> None:
    common = {"ZX_HOME": str(tmp_path / "home"), "ZX_API_KEY": secured.key}
    https = f"https://{secured.address}"
    ok = await asyncio.to_thread(
        _zx,
        "jobs",
        "--json",
        env={**common, "ZX_GATEWAY_ADDRESS": https, "ZX_TLS_CA_FILE": str(secured.cert)},
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "[]"
    # host:port with ZX_TLS_CA_FILE set dials TLS too.
    bare = await asyncio.to_thread(
        _zx,
        "jobs",
        "--json",
        env={**common, "ZX_GATEWAY_ADDRESS": secured.address, "ZX_TLS_CA_FILE": str(secured.cert)},
    )
    assert bare.returncode == 0, bare.stderr

    untrusted = await asyncio.to_thread(_zx, "jobs", env={**common, "ZX_GATEWAY_ADDRESS": https})
    assert untrusted.returncode == 1 and "not reachable" in untrusted.stderr
    plaintext = await asyncio.to_thread(
        _zx, "jobs", env={**common, "ZX_GATEWAY_ADDRESS": f"http://{secured.address}"}
    )
    assert plaintext.returncode == 1 and "not reachable" in plaintext.stderr


def test_l4_tls_settings_need_both_files_that_match(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    _, other_key = self_signed(tmp_path, "other")
    with pytest.raises(ValidationError, match="TLS_KEY_FILE"):
        GatewaySettings(tls_cert_file=cert)
    assert server_credentials(GatewaySettings()) is None
    # An empty variable is unset (it was read as the path ".").
    assert GatewaySettings(tls_cert_file="", tls_key_file=" ").tls_cert_file is None
    assert server_credentials(GatewaySettings(tls_cert_file=cert, tls_key_file=key)) is not None
    with pytest.raises(RuntimeError, match="not a matching PEM certificate and key"):
        server_credentials(GatewaySettings(tls_cert_file=cert, tls_key_file=other_key))
    with pytest.raises(RuntimeError, match="cannot read ZX_GATEWAY_TLS_KEY_FILE"):
        server_credentials(GatewaySettings(tls_cert_file=cert, tls_key_file=tmp_path / "missing.pem"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the README's example uses openssl")
async def test_l4_the_readme_tls_example_works(database_url: str, tmp_path: Path) -> None:
    """The README's openssl line makes a certificate the gateway serves and zx trusts, as it says."""
    script = _readme_tls_example().split("\nexport ")[0]  # the folder and the certificate (not zx up)
    home = tmp_path / "home"
    made = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-euc", script],
        env={**os.environ, "ZX_HOME": str(home)},
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    cert, key = home / "tls-cert.pem", home / "tls-key.pem"
    async with serve_tls(database_url, tmp_path, cert, key) as running:
        served = {"ZX_GATEWAY_TLS_CERT_FILE": str(cert), "ZX_GATEWAY_TLS_KEY_FILE": str(key)}
        common = {
            "ZX_HOME": str(home),
            "ZX_API_KEY": running.key,
            "ZX_GATEWAY_PORT": str(running.server.port),
        }
        # `zx jobs` beside the suite: the local gateway serves TLS, so zx dials TLS trusting its certificate.
        local = await asyncio.to_thread(_zx, "jobs", "--json", env={**common, **served})
        assert local.returncode == 0 and local.stdout.strip() == "[]", local.stderr
        # zx up's own health check of its gateway takes the same path.
        with _environ(served):
            target = gateway_target(LauncherSettings(home=home, gateway_port=running.server.port))
            assert target.tls
            status = await asyncio.to_thread(health.check, target.address, credentials=target.credentials)
        assert status == health.SERVING
        # From elsewhere: the https:// address and the certificate to trust.
        remote = {"ZX_GATEWAY_ADDRESS": f"https://{running.address}", "ZX_TLS_CA_FILE": str(cert)}
        elsewhere = await asyncio.to_thread(_zx, "jobs", "--json", env={**common, **remote})
        assert elsewhere.returncode == 0, elsewhere.stderr
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trusting, timeout=10) as http:
            assert (await http.get(f"{running.edge.url}/config.json")).status_code == 200


def _readme_tls_example() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"<!-- tls-example -->\n```sh\n(.*?)```", readme, re.S)
    assert block is not None
    return block.group(1)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
