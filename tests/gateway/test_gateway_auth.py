"""Authentication of every call, unary and streaming: API keys and Supabase-style JWTs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import (
    JWT_SECRET,
    Served,
    bearer,
    es256_jwk,
    gateway_settings,
    jwks_address,
    rpc_error,
    serve_gateway,
    stop_gateway,
)
from support.http_stand_in import QuietHandler, serve_http
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import job_pb2
from zehanx_runtime.status import error_info_of

ISSUER = "https://test.supabase.co/auth/v1"


def token(
    *,
    sub: str | None = None,
    aud: str = "authenticated",
    iss: str = ISSUER,
    exp_in: float = 300,
    key: Any = JWT_SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    claims = {
        "sub": sub or str(uuid.uuid4()),
        "aud": aud,
        "iss": iss,
        "exp": int(time.time() + exp_in),
        "role": "authenticated",
    }
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


async def test_calls_without_or_with_garbage_credentials_are_unauthenticated(served: Served) -> None:
    stub = served.stub
    cases = {
        "CREDENTIALS_MISSING": (),
        "CREDENTIALS_MALFORMED": (("authorization", "Basic dXNlcjpwYXNz"),),
        "API_KEY_MALFORMED": (("authorization", "Bearer zx_short"),),
        "API_KEY_INVALID": (("authorization", "Bearer zx_abcdefghij012345_" + "A" * 43),),
    }
    for reason, metadata in cases.items():
        error = await rpc_error(stub.ListJobs(pb.ListJobsRequest(), metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, reason
        assert error_info_of(error).reason == reason
    # Streaming calls are checked the same way, before anything is sent.
    error = await rpc_error(stub.WatchJob(pb.WatchJobRequest(job_id=str(uuid.uuid4()))))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await rpc_error(stub.DownloadModel(pb.DownloadModelRequest(model_id=str(uuid.uuid4()))))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_key_with_the_right_id_and_a_wrong_secret_is_refused(served: Served) -> None:
    key = await served.api_key("alice")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    error = await rpc_error(served.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(forged)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info_of(error).reason == "API_KEY_INVALID"
    # The x-api-key header works as well as a bearer.
    listed = await served.stub.ListJobs(pb.ListJobsRequest(), metadata=(("x-api-key", key),))
    assert list(listed.jobs) == []


async def test_a_revoked_key_stops_working_at_once_on_every_replica(
    served: Served, database_url: str, tmp_path: Path
) -> None:
    other = await serve_gateway(gateway_settings(database_url, tmp_path))
    try:
        key = await served.api_key("alice")
        auth = bearer(key)
        # Warm both replicas up with the key (any cache would now hold it).
        for replica in (served, other):
            for _ in range(3):
                await replica.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)
        await served.gateway.registry.revoke_api_key(key.split("_")[1])
        for replica in (served, other):
            error = await rpc_error(replica.stub.ListJobs(pb.ListJobsRequest(), metadata=auth))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info_of(error).reason == "API_KEY_REVOKED"
    finally:
        await stop_gateway(other)


async def test_a_valid_hs256_jwt_is_a_user_of_its_own(served: Served) -> None:
    user = str(uuid.uuid4())
    auth = bearer(token(sub=user))
    job = await served.stub.CreateJob(pb.CreateJobRequest(job=job_pb2.Job(prompt="mine")), metadata=auth)
    got = await served.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=bearer(token(sub=user)))
    assert got.id == job.id
    stranger = bearer(token())
    error = await rpc_error(served.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=stranger))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_reused_jwt_stops_working_when_it_expires(database_url: str, tmp_path: Path) -> None:
    """Verified tokens are remembered (the crypto is skipped on reuse) only until their ``exp`` (plus
    the clock-skew leeway, 0 here so that the test need not wait it out)."""
    served = await serve_gateway(gateway_settings(database_url, tmp_path, jwt_leeway_seconds=0))
    try:
        auth = bearer(token(exp_in=2))
        for _ in range(3):
            await served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)
        claims_exp = jwt.decode(auth[0][1].split()[1], options={"verify_signature": False})["exp"]
        await asyncio.sleep(max(0.0, claims_exp - time.time()) + 1.1)
        error = await rpc_error(served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info_of(error).reason == "TOKEN_EXPIRED"
    finally:
        await stop_gateway(served)


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("TOKEN_EXPIRED", lambda: token(exp_in=-60)),
        ("TOKEN_AUDIENCE", lambda: token(aud="anon")),
        ("TOKEN_ISSUER", lambda: token(iss="https://elsewhere.supabase.co/auth/v1")),
        ("TOKEN_SIGNATURE", lambda: token(key="not-the-project-secret-0123456789abcdef")),
        ("TOKEN_CLAIMS", lambda: token(sub="not-a-uuid")),
        ("TOKEN_ALGORITHM", lambda: jwt.encode({"sub": str(uuid.uuid4())}, None, algorithm="none")),
        ("CREDENTIALS_MALFORMED", lambda: "not.a.jwt"),
    ],
)
async def test_bad_jwts_are_unauthenticated(served: Served, reason: str, make: Any) -> None:
    error = await rpc_error(served.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(make())))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info_of(error).reason == reason
    # ...on a stream too.
    error = await rpc_error(
        served.stub.WatchJob(pb.WatchJobRequest(job_id=str(uuid.uuid4())), metadata=bearer(make()))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


class _Jwks(QuietHandler):
    document = b"{}"
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.reply_json(200, self.document)


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, ec.EllipticCurvePrivateKey]]:
    """A loopback JWKS endpoint, like Supabase's /auth/v1/.well-known/jwks.json, with one ES256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    _Jwks.document = json.dumps({"keys": [es256_jwk(key, "key-1")]}).encode()
    with serve_http(_Jwks) as port:
        yield jwks_address(port), key


@pytest.fixture
async def served_with_jwks(
    database_url: str, tmp_path: Path, jwks_server: tuple[str, Any]
) -> AsyncIterator[Served]:
    url, _ = jwks_server
    running = await serve_gateway(gateway_settings(database_url, tmp_path, jwt_secret=None, jwt_jwks_url=url))
    try:
        yield running
    finally:
        await stop_gateway(running)


async def test_asymmetric_jwts_verify_against_the_jwks(
    served_with_jwks: Served, jwks_server: tuple[str, Any]
) -> None:
    _, key = jwks_server
    stub = served_with_jwks.stub
    good = token(key=key, algorithm="ES256", headers={"kid": "key-1"})
    listed = await stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(good))
    assert list(listed.jobs) == []

    other_key = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "TOKEN_SIGNATURE": token(key=other_key, algorithm="ES256", headers={"kid": "key-1"}),
        "TOKEN_AUDIENCE": token(key=key, algorithm="ES256", headers={"kid": "key-1"}, aud="service_role"),
        "TOKEN_EXPIRED": token(key=key, algorithm="ES256", headers={"kid": "key-1"}, exp_in=-60),
        # With only a JWKS configured, an HS256 token signed with some guessed secret is not accepted.
        "TOKEN_ALGORITHM": token(),
    }
    for reason, credential in cases.items():
        error = await rpc_error(stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(credential)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, reason
        assert error_info_of(error).reason == reason, reason
    # Keys are cached: many calls, few fetches.
    hits = _Jwks.hits
    await asyncio.gather(*(stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(good)) for _ in range(20)))
    assert _Jwks.hits == hits
