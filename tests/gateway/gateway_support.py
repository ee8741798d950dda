"""Fixtures of the gateway tests: a fresh database per test on the session's real PostgreSQL, and a
real gateway (the same object graph ``zx-gateway`` serves) on port 0 with a real stub."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from support import gateway as support_gateway
from support.gateway import open_gateway
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx.gateway.v1 import model_pb2
from zehanx_cli.procs import free_port
from zehanx_gateway import db
from zehanx_gateway.app import Gateway
from zehanx_gateway.settings import GatewaySettings
from zehanx_gateway.store import PostgresRegistry
from zehanx_runtime.server import RunningServer
from zehanx_runtime.status import error_info_of

JWT_SECRET = "test-secret-for-hs256-tokens-0123456789abcdef"
TRAINER_TOKEN = "trainer-token-for-the-test"


def gateway_settings(database_url: str, tmp_path: Path, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "database_url": database_url,
        "jwt_secret": JWT_SECRET,
        "jwt_audience": "authenticated",
        "jwt_issuer": "https://test.supabase.co/auth/v1",
        "artifact_dir": tmp_path / "artifacts",
        # Uploads stay in the test's folder (the default is $ZX_HOME/uploads).
        "upload_dir": tmp_path / "uploads",
        # Nothing listens there: Predict without a trainer must fail clearly, not reach a real one.
        "trainer_address": f"127.0.0.1:{free_port()}",
        "log_json": True,
        "log_level": "warning",
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


@dataclass
class Served:
    """A gateway serving on a free port, a channel to it, and a stub."""

    gateway: Gateway
    server: RunningServer
    channel: grpc.aio.Channel
    stub: rpc.GatewayServiceStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def api_key(self, user: str) -> str:
        """``support.gateway.api_key`` on this gateway."""
        return await support_gateway.api_key(self.gateway, user)

    async def user_id(self, user: str) -> uuid.UUID:
        return await self.gateway.registry.user_by_name(user)


def es256_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    """``key``'s public half as a JWKS entry (ES256, for signing), like Supabase's keys."""
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": kid, "alg": "ES256", "use": "sig"})
    return dict(public)


def jwks_address(port: int) -> str:
    """Where Supabase serves its JWKS, on a loopback stand-in at ``port``."""
    return f"http://127.0.0.1:{port}/auth/v1/.well-known/jwks.json"


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    """The error a call (unary, or a stream read to its end) fails with; the test fails if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if hasattr(call, "__aiter__"):
            _ = [m async for m in call]
        else:
            await call
    return caught.value


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of ``error``; "" when it carries none."""
    info = error_info_of(error)
    return info.reason if info is not None else ""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def serve_gateway(settings: GatewaySettings) -> Served:
    gateway, server = await open_gateway(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Served(gateway, server, channel, rpc.GatewayServiceStub(channel))


async def stop_gateway(served: Served) -> None:
    await served.channel.close()
    await served.server.stop(0.5)
    await served.gateway.close()


async def publish_model(served: Served, user: str, data: bytes, **options: Any) -> model_pb2.Model:
    """``support.gateway.publish_model`` on ``served``'s gateway (``options``: its title, trainer artifact)."""
    return await support_gateway.publish_model(served.gateway, user, data, **options)


@pytest.fixture
async def served_with_trainer(
    database_url: str, tmp_path: Path, trainer: tuple[Any, str]
) -> AsyncIterator[Served]:
    """A gateway whose trainer is the test module's ``trainer`` fixture: (a stand-in servicer, its address)
    from ``support.stand_in_trainer``; the gateway calls it with ``TRAINER_TOKEN``."""
    running = await serve_gateway(
        gateway_settings(database_url, tmp_path, trainer_address=trainer[1], trainer_token=TRAINER_TOKEN)
    )
    try:
        yield running
    finally:
        await stop_gateway(running)


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[PostgresRegistry]:
    """The registry on a migrated fresh database, without a gateway around it."""
    await db.migrate(database_url)
    pool = await db.open_pool(database_url, max_size=12)
    try:
        yield PostgresRegistry(pool)
    finally:
        await pool.close()


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    running = await serve_gateway(gateway_settings(database_url, tmp_path))
    try:
        yield running
    finally:
        await stop_gateway(running)
