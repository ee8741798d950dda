"""Hardening of the gateway's JWT path (security review, issue 15): short HS256 secrets are refused at
start (L4), a key removed from the JWKS stops verifying (L4), the gateway's own sessions and the identity
provider's JWTs never pass for each other on the gRPC port (H5), and creating an API key from a JWT
needs a recent sign-in (M2)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import JWT_SECRET, Served, bearer, es256_jwk, gateway_settings, jwks_address
from support.http_stand_in import QuietHandler, serve_http
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx_gateway.app import Gateway
from zehanx_gateway.auth import SESSION_AUDIENCE, SESSION_ISSUER, JwtConfig, JwtVerifier
from zehanx_runtime import errors
from zehanx_runtime.status import error_info_of

ISSUER = "https://test.supabase.co/auth/v1"


def supabase_token(*, sub: uuid.UUID | None = None, key: Any = JWT_SECRET, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": str(sub or uuid.uuid4()),
        "aud": "authenticated",
        "iss": ISSUER,
        "role": "authenticated",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(body, key, algorithm="HS256")


# -- L4: HS256 secrets of 32 bytes or more only -------------------------------------------------------------


def test_l4_a_short_hs256_secret_is_refused_when_the_verifier_is_built() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        JwtVerifier(JwtConfig(secret="x" * 31))
    with pytest.raises(ValueError, match="at least 32"):
        JwtVerifier(JwtConfig(secret="é" * 15))  # 30 bytes in 15 characters
    JwtVerifier(JwtConfig(secret="x" * 32))


async def test_l4_the_gateway_refuses_to_start_with_a_short_jwt_secret(
    database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="HS256 JWT secret is 6 bytes"):
        await Gateway.open(gateway_settings(database_url, tmp_path, jwt_secret="secret"))


# -- L4: a key removed from the JWKS stops verifying ------------------------------------------------------


class _RotatingJwks(QuietHandler):
    document = b"{}"

    def do_GET(self) -> None:
        self.reply_json(200, type(self).document)


@pytest.fixture
def jwks_url() -> Iterator[str]:
    with serve_http(_RotatingJwks) as port:
        yield jwks_address(port)


async def test_l4_a_key_removed_from_the_jwks_stops_verifying(jwks_url: str) -> None:
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _RotatingJwks.document = json.dumps({"keys": [es256_jwk(old, "old")]}).encode()
    verifier = JwtVerifier(JwtConfig(jwks_url=jwks_url, audience="authenticated", jwks_cache_seconds=0.5))
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": now + 3600}
    token = jwt.encode(claims, old, algorithm="ES256", headers={"kid": "old"})
    assert (await verifier.verify(token))["sub"] == claims["sub"]
    assert (await verifier.verify(token))["sub"] == claims["sub"]  # from the cache

    # The provider rotates its keys and drops the old one (say it leaked): after the cache's lifetime the
    # old key's tokens are refused, though they have an hour left.
    _RotatingJwks.document = json.dumps({"keys": [es256_jwk(new, "new")]}).encode()
    await asyncio.sleep(1.2)
    with pytest.raises(errors.Unauthenticated) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "TOKEN_SIGNATURE"
    fresh = jwt.encode(claims, new, algorithm="ES256", headers={"kid": "new"})
    assert (await verifier.verify(fresh))["sub"] == claims["sub"]


# -- H5 on the gRPC port: own sessions and provider tokens are told apart by key, issuer and audience ------


async def test_h5_the_grpc_port_tells_own_sessions_and_supabase_tokens_apart(served: Served) -> None:
    gateway = served.gateway
    assert gateway.session_key is not None and gateway.session_key != JWT_SECRET
    now = int(time.time())
    own = {
        "iss": SESSION_ISSUER,
        "aud": SESSION_AUDIENCE,
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 300,
        "auth_time": now,
        "session_id": str(uuid.uuid4()),
    }
    stub = served.stub
    assert not (
        await stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(jwt.encode(own, gateway.session_key)))
    ).jobs
    assert not (await stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(supabase_token()))).jobs

    cases = {
        # An own-session token signed with the configured (Supabase) secret.
        "TOKEN_SIGNATURE": jwt.encode(own, JWT_SECRET),
        # An own-session token without its audience.
        "TOKEN_AUDIENCE": jwt.encode({**own, "aud": "authenticated"}, gateway.session_key),
    }
    for reason, credential in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(credential))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, reason
        assert error_info_of(caught.value).reason == reason, reason
    # A Supabase-shaped token signed with the gateway's own key.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(supabase_token(key=gateway.session_key)))
    assert error_info_of(caught.value).reason == "TOKEN_SIGNATURE"


# -- M2 on the gRPC port: API keys from JWTs need a recent sign-in ------------------------------------------


async def test_m2_create_api_key_with_an_old_sign_in_is_refused_with_a_reason(served: Served) -> None:
    stub = served.stub
    now = int(time.time())
    user = uuid.uuid4()
    old = supabase_token(sub=user, iat=now - 3600, amr=[{"method": "password", "timestamp": now - 3600}])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateApiKey(pb.CreateApiKeyRequest(label="x"), metadata=bearer(old))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info_of(caught.value).reason == "RECENT_SIGN_IN_REQUIRED"
    assert "sign in again" in (caught.value.details() or "")

    recent = supabase_token(sub=user, amr=[{"method": "password", "timestamp": now - 60}])
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(label="x"), metadata=bearer(recent))
    by_key = await stub.CreateApiKey(pb.CreateApiKeyRequest(label="y"), metadata=bearer(created.secret))
    assert by_key.secret.startswith("zx_")
