"""Email and password accounts on the edge (Supabase Auth's REST shape) against a real PostgreSQL: the
sessions they issue are the gateway's own JWTs (its generated key, issuer and audience), which its JWT
path accepts on both doors."""

from __future__ import annotations

import httpx
import jwt
import psycopg
import pytest
from edge_support import JWT_SECRET, ConnectError, Edge
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx_gateway.auth import SESSION_AUDIENCE, SESSION_ISSUER
from zehanx_gateway.edge.auth_routes import AuthRoutes

PASSWORD = "correct horse battery staple"


async def sign_up(edge: Edge, email: str, password: str = PASSWORD) -> httpx.Response:
    return await edge.http.post("/auth/v1/signup", json={"email": email, "password": password})


async def sign_in(edge: Edge, email: str, password: str = PASSWORD) -> httpx.Response:
    return await edge.http.post(
        "/auth/v1/token", params={"grant_type": "password"}, json={"email": email, "password": password}
    )


async def test_sign_up_gives_a_session_of_the_gateways_own_both_doors_accept(edge: Edge) -> None:
    response = await sign_up(edge, "Ada@Example.org")
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["token_type"] == "bearer"
    assert session["user"]["email"] == "ada@example.org"
    assert edge.gateway.session_key and edge.gateway.session_key != JWT_SECRET
    claims = jwt.decode(
        session["access_token"],
        edge.gateway.session_key,
        algorithms=["HS256"],
        audience=SESSION_AUDIENCE,
        issuer=SESSION_ISSUER,
    )
    assert claims["sub"] == session["user"]["id"]
    assert "role" not in claims and claims["aud"] == SESSION_AUDIENCE != "authenticated"
    assert claims["exp"] == session["expires_at"] and claims["exp"] - claims["iat"] == session["expires_in"]
    assert claims["auth_time"] <= claims["iat"]
    # Not signed with the configured (Supabase) secret.
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(session["access_token"], JWT_SECRET, algorithms=["HS256"], options={"verify_aud": False})

    # The edge and the gRPC port both take it: one token format, the gateway's own JWT path.
    token = session["access_token"]
    job = await edge.call("CreateJob", {"job": {"prompt": "Create a sentiment analysis model"}}, token)
    assert not isinstance(job, ConnectError), job
    over_grpc = await edge.stub.ListJobs(
        pb.ListJobsRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert [j.id for j in over_grpc.jobs] == [job["id"]]

    # Only an argon2id hash is stored, never the password.
    async with await psycopg.AsyncConnection.connect(
        edge.gateway.settings.database_url.get_secret_value()
    ) as conn:
        cur = await conn.execute("select password_hash from zehanx.accounts where email = 'ada@example.org'")
        (stored,) = await cur.fetchone()  # type: ignore[misc]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_sign_up_refuses_bad_input_and_a_taken_email(edge: Edge) -> None:
    bad = await sign_up(edge, "not-an-email", "short")
    assert bad.status_code == 400
    assert bad.json()["error_code"] == "validation_failed"
    assert [v["field"] for v in bad.json()["violations"]] == ["email", "password"]

    assert (await sign_up(edge, "grace@example.org")).status_code == 200
    again = await sign_up(edge, "GRACE@example.org", "another password")
    assert (again.status_code, again.json()["error_code"]) == (422, "user_already_exists")
    # The first password still signs in; the second never became one.
    assert (await sign_in(edge, "grace@example.org")).status_code == 200
    assert (await sign_in(edge, "grace@example.org", "another password")).status_code == 400


async def test_wrong_passwords_and_unknown_emails_get_the_same_answer(edge: Edge) -> None:
    await sign_up(edge, "alan@example.org")
    wrong = await sign_in(edge, "alan@example.org", "not the password")
    unknown = await sign_in(edge, "nobody@example.org")
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json()
    assert wrong.json()["error_code"] == "invalid_credentials"
    assert "access_token" not in wrong.text
    right = await sign_in(edge, "ALAN@example.org")
    assert right.status_code == 200 and right.json()["user"]["email"] == "alan@example.org"


async def test_sign_in_attempts_are_rate_limited_per_email(edge: Edge) -> None:
    await sign_up(edge, "mallory@example.org")
    await sign_up(edge, "alice@example.org")
    for _ in range(5):
        assert (await sign_in(edge, "mallory@example.org", "guess")).status_code == 400
    blocked = await sign_in(edge, "mallory@example.org")  # even the right password, now
    assert blocked.status_code == 429
    assert blocked.json()["error_code"] == "over_request_rate_limit"
    assert 1 <= int(blocked.headers["retry-after"]) <= 901
    assert "access_token" not in blocked.text
    # Another account is not locked out by them.
    assert (await sign_in(edge, "alice@example.org")).status_code == 200


async def test_refresh_rotates_and_sign_out_revokes_the_session(edge: Edge) -> None:
    first = (await sign_up(edge, "linus@example.org")).json()
    renewed = await edge.http.post(
        "/auth/v1/token",
        params={"grant_type": "refresh_token"},
        json={"refresh_token": first["refresh_token"]},
    )
    assert renewed.status_code == 200, renewed.text
    second = renewed.json()
    assert second["user"]["id"] == first["user"]["id"]
    assert second["refresh_token"] != first["refresh_token"]
    reused = await edge.http.post(
        "/auth/v1/token",
        params={"grant_type": "refresh_token"},
        json={"refresh_token": first["refresh_token"]},
    )
    assert reused.status_code == 400, "a used refresh token must not renew again"

    anonymous = await edge.http.post("/auth/v1/logout")
    assert anonymous.status_code == 401
    out = await edge.http.post(
        "/auth/v1/logout", headers={"authorization": f"Bearer {second['access_token']}"}
    )
    assert out.status_code == 204
    after = await edge.http.post(
        "/auth/v1/token",
        params={"grant_type": "refresh_token"},
        json={"refresh_token": second["refresh_token"]},
    )
    assert after.status_code == 400, "a signed-out session must not renew"


async def test_accounts_see_only_their_own_jobs(edge: Edge) -> None:
    ada = (await sign_up(edge, "ada2@example.org")).json()["access_token"]
    bob = (await sign_up(edge, "bob2@example.org")).json()["access_token"]
    job = await edge.call("CreateJob", {"job": {"prompt": "Create a sentiment analysis model"}}, ada)
    hidden = await edge.call("GetJob", {"jobId": job["id"]}, bob)
    assert isinstance(hidden, ConnectError) and hidden.code == "not_found"
    assert (await edge.call("ListJobs", {}, bob)).get("jobs", []) == []


async def test_disabled_accounts_say_why() -> None:
    routes = AuthRoutes(None, disabled_reason="Supabase signs users in here")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=routes), base_url="http://edge") as client:
        answer = await client.post("/auth/v1/signup", json={"email": "a@b.org", "password": PASSWORD})
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "accounts_disabled"
    assert "Supabase" in answer.json()["msg"]
