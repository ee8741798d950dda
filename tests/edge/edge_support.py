"""Fixtures and helpers of the edge tests (imported by them as ``edge_support``; pytest sees the fixtures
through that import): a real gateway (the object graph ``zx-gateway`` serves) on a fresh database
of the session's real PostgreSQL, its gRPC port and its Connect edge, both on free ports, and a Connect
client speaking plain HTTP/1.1 with httpx (what curl and a browser send)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from google.rpc import error_details_pb2
from support import gateway as support_gateway
from support.connect import END_STREAM, envelope, frames
from support.gateway import open_gateway
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx_cli.procs import free_port
from zehanx_gateway.app import Gateway
from zehanx_gateway.edge import EdgeSettings, RunningEdge, serve_edge
from zehanx_gateway.settings import GatewaySettings
from zehanx_runtime.server import RunningServer

JWT_SECRET = "edge-test-secret-for-hs256-tokens-0123456789"
JWT_ISSUER = "https://test.supabase.co/auth/v1"
SERVICE = "/zehanx.gateway.v1.GatewayService"


def gateway_settings(database_url: str, tmp_path: Path) -> GatewaySettings:
    return GatewaySettings(
        host="127.0.0.1",
        port=0,
        database_url=database_url,  # type: ignore[arg-type]
        jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
        jwt_audience="authenticated",
        jwt_issuer=JWT_ISSUER,
        artifact_dir=tmp_path / "artifacts",
        # Uploads stay in the test's folder (the default is $ZX_HOME/uploads).
        upload_dir=tmp_path / "uploads",
        # Nothing listens there: Predict without a trainer must fail clearly, not reach a real one.
        trainer_address=f"127.0.0.1:{free_port()}",
        grace_seconds=1.0,
        log_json=True,
        log_level="warning",
    )


def jwt_for(user_id: uuid.UUID, *, expires_in: float = 300) -> str:
    """A Supabase-style access token (HS256, sub/aud/role/exp/iss) the gateway accepts."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "iss": JWT_ISSUER,
        "iat": now,
        "exp": now + int(expires_in),
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@dataclass
class ConnectError:
    """A Connect error as a client sees it: HTTP status, code, message, and the decoded details."""

    http_status: int
    code: str
    message: str
    details: list[dict[str, Any]]

    def violations(self) -> list[str]:
        """Field paths of the google.rpc.BadRequest detail."""
        found: list[str] = []
        for detail in self.details:
            if detail["type"] == "google.rpc.BadRequest":
                bad = error_details_pb2.BadRequest.FromString(_unb64(detail["value"]))
                found += [v.field for v in bad.field_violations]
        return found

    def reason(self) -> str | None:
        """Reason of the google.rpc.ErrorInfo detail."""
        for detail in self.details:
            if detail["type"] == "google.rpc.ErrorInfo":
                return error_details_pb2.ErrorInfo.FromString(_unb64(detail["value"])).reason
        return None


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Edge:
    """A served gateway: the gateway object, its gRPC server and stub, its edge, and an HTTP client."""

    gateway: Gateway
    server: RunningServer
    channel: grpc.aio.Channel
    stub: rpc.GatewayServiceStub
    edge: RunningEdge
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.edge.url

    async def api_key(self, user: str) -> str:
        """``support.gateway.api_key`` on this gateway."""
        return await support_gateway.api_key(self.gateway, user)

    async def call(self, method: str, body: dict[str, Any], token: str | None = None) -> Any:
        """A unary Connect call with JSON: the response JSON, or a :class:`ConnectError`."""
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        response = await self.http.post(f"{SERVICE}/{method}", json=body, headers=headers)
        return decode_unary(response)

    async def stream(
        self, method: str, body: dict[str, Any], token: str | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """A server-streaming Connect call with JSON: (messages, end-of-stream message)."""
        messages: list[dict[str, Any]] = []
        end: dict[str, Any] = {}
        async for kind, value in self.frames(method, body, token):
            if kind == "message":
                messages.append(value)
            else:
                end = value
        return messages, end

    async def frames(
        self, method: str, body: dict[str, Any], token: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Each frame of a Connect JSON stream as it arrives: ("message", …) then ("end", …)."""
        headers = {"content-type": "application/connect+json", "connect-protocol-version": "1"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        request = envelope(json.dumps(body).encode())
        async with self.http.stream(
            "POST", f"{SERVICE}/{method}", content=request, headers=headers
        ) as response:
            assert response.status_code == 200, response.status_code
            assert response.headers["content-type"] == "application/connect+json"
            async for flags, data in frames(response.aiter_raw()):
                yield ("end" if flags & END_STREAM else "message", json.loads(data))


def decode_unary(response: httpx.Response) -> Any:
    if response.status_code == 200:
        assert response.headers["content-type"] == "application/json"
        return response.json()
    assert response.headers["content-type"] == "application/json", response.text
    data = response.json()
    return ConnectError(response.status_code, data["code"], data.get("message", ""), data.get("details", []))


def stream_error(end: dict[str, Any]) -> ConnectError | None:
    """The error of a Connect end-of-stream message, if any."""
    error = end.get("error")
    if not error:
        return None
    return ConnectError(200, error["code"], error.get("message", ""), error.get("details", []))


async def serve(
    database_url: str, tmp_path: Path, edge_settings: EdgeSettings | None = None, **overrides: Any
) -> Edge:
    """A gateway with its gRPC server and its edge (``edge_settings``: a free port by default);
    ``overrides`` replace gateway settings (for example ``trainer_address``)."""
    settings = gateway_settings(database_url, tmp_path).model_copy(update=overrides)
    gateway, server = await open_gateway(settings)
    edge = await serve_edge(gateway, edge_settings or EdgeSettings(edge_port=0))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    http = httpx.AsyncClient(base_url=edge.url, timeout=60)
    return Edge(gateway, server, channel, rpc.GatewayServiceStub(channel), edge, http)


async def stop(served: Edge) -> None:
    await served.http.aclose()
    await served.channel.close()
    await served.edge.stop(0.5)
    await served.server.stop(0.5)
    await served.gateway.close()


@pytest.fixture
async def edge(database_url: str, tmp_path: Path) -> AsyncIterator[Edge]:
    served = await serve(database_url, tmp_path)
    try:
        yield served
    finally:
        await stop(served)


@pytest.fixture
async def proxied(database_url: str, tmp_path: Path) -> AsyncIterator[Edge]:
    """An edge behind a trusted proxy on loopback, so each request names its client in X-Forwarded-For."""
    settings = EdgeSettings(edge_port=0, trusted_proxies=["127.0.0.0/8"], sign_up_max_per_client=2)
    served = await serve(database_url, tmp_path, settings)
    try:
        yield served
    finally:
        await stop(served)
