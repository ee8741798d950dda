"""The gateway on a Supabase project: its transaction pooler, its Auth clock and its JWKS endpoint.

What Supabase documents, which the code and these tests follow:

- "although the direct connections and Supavisor in session mode support prepared statements,
  Supavisor in transaction mode does not [...] Psycopg: set the prepare_threshold to None"
  (supabase.com/docs/guides/troubleshooting/disabling-prepared-statements-qL8lEL).
- "port 6543 will only support Transaction Mode while port 5432 continues to support Session Mode"
  (github.com/orgs/supabase/discussions/32755); the pooler host is aws-0-<region>.pooler.supabase.com
  (the same KB article's Prisma example URL), the dedicated pooler is db.<ref>.supabase.co:6543.
- In transaction mode "session-level SET, LISTEN, session advisory locks and temporary tables" leave
  session state behind on a server connection other clients then get (Supavisor 2.10 release notes).

No pooler runs here: the pooler mode is forced on the real embedded PostgreSQL, and what must not
happen through a pooler (a named prepared statement, a LISTEN, a session advisory lock) is looked for
where PostgreSQL shows it (pg_prepared_statements, pg_stat_activity, the statements sent).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import (
    JWT_SECRET,
    bearer,
    es256_jwk,
    gateway_settings,
    jwks_address,
    serve_gateway,
    stop_gateway,
)
from psycopg.pq import TransactionStatus
from structlog.testing import capture_logs
from support.http_stand_in import QuietHandler, serve_http
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx_gateway import db
from zehanx_gateway.auth import JWKS_USER_AGENT, JwtConfig, JwtVerifier
from zehanx_gateway.settings import GatewaySettings
from zehanx_runtime.errors import Unauthenticated

ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1"

# -- the transaction pooler ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "pooler"),
    [
        # Supavisor, shared pooler: transaction mode on 6543, session mode on 5432.
        (
            "postgresql://postgres.abcdefghijklmnop:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
            True,
        ),
        (
            "postgresql://postgres.abcdefghijklmnop:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres",
            False,
        ),
        # The dedicated pooler on the database host, and the direct connection.
        ("postgresql://postgres:pw@db.abcdefghijklmnop.supabase.co:6543/postgres", True),
        ("postgresql://postgres:pw@db.abcdefghijklmnop.supabase.co:5432/postgres", False),
        ("host=aws-0-us-east-1.pooler.supabase.com port=6543 dbname=postgres user=postgres.x", True),
        ("postgresql://h1:5432,h2:6543/postgres", True),
        ("postgresql://postgres@127.0.0.1/zehanx", False),
        ("not a url at all", False),
    ],
)
def test_the_transaction_pooler_is_detected_from_the_url(url: str, pooler: bool) -> None:
    assert db.is_transaction_pooler(url) is pooler


async def test_migrations_take_only_a_transaction_scoped_lock_and_prepare_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session advisory lock through a transaction pooler can stay held by whichever server connection
    ran it, and its unlock can run on another: every lock must be pg_advisory_xact_lock, taken inside
    a transaction, on a connection that never prepares."""
    sent: list[tuple[str, TransactionStatus, int | None]] = []
    execute = psycopg.AsyncConnection.execute

    async def recording(self: psycopg.AsyncConnection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append((str(query), self.info.transaction_status, self.prepare_threshold))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", recording)
    applied = await db.migrate(database_url)
    monkeypatch.undo()

    assert applied == [m.version for m in db.migrations()]
    locks = [(query, status) for query, status, _ in sent if "pg_advisory" in query]
    assert locks, "migrate must lock"
    for query, status in locks:
        assert "pg_advisory_xact_lock" in query, query
        assert status == TransactionStatus.INTRANS, f"{query} ran outside a transaction"
    assert all(threshold is None for _, _, threshold in sent)
    # Applied again: nothing to do, and the checksums are still checked.
    assert await db.migrate(database_url) == []


async def test_replicas_migrating_at_once_apply_each_file_once_under_the_transaction_lock(
    database_url: str,
) -> None:
    holder = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        # Another replica is inside a migration transaction: both of ours wait for it.
        await holder.execute("begin")
        await holder.execute("select pg_advisory_xact_lock(%s)", (db._MIGRATION_LOCK,))
        both = asyncio.gather(db.migrate(database_url), db.migrate(database_url))
        await asyncio.sleep(0.5)
        assert not both.done()
        await holder.execute("commit")
        first, second = await asyncio.wait_for(both, 30)
    finally:
        await holder.close()
    assert sorted(first + second) == [m.version for m in db.migrations()]
    assert not set(first) & set(second)


async def _prepared_and_listening(served: Any) -> tuple[int, int]:
    """Named prepared statements on the (one) pool connection, and LISTEN connections to this database."""
    async with served.gateway.pool.connection() as conn:
        prepared = await (await conn.execute("select count(*) as n from pg_prepared_statements")).fetchone()
        listening = await (
            await conn.execute(
                "select count(*) as n from pg_stat_activity "
                "where datname = current_database() and query ilike 'listen %%'"
            )
        ).fetchone()
    return prepared["n"], listening["n"]


@pytest.mark.parametrize("pooler", [True, False])
async def test_behind_the_transaction_pooler_the_gateway_prepares_nothing_and_does_not_listen(
    database_url: str, tmp_path: Path, pooler: bool
) -> None:
    settings = gateway_settings(
        database_url, tmp_path, database_pool_size=1, database_transaction_pooler=pooler
    )
    with capture_logs() as logs:
        served = await serve_gateway(settings)
    try:
        user = str(uuid.uuid4())
        claims = {
            "sub": user,
            "aud": "authenticated",
            "iss": settings.jwt_issuer,
            "exp": int(time.time()) + 300,
        }
        auth = bearer(jwt.encode(claims, JWT_SECRET, algorithm="HS256"))
        for _ in range(12):  # psycopg prepares a statement on its 5th run (prepare_threshold=5)
            await served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)
        deadline = time.monotonic() + 5
        prepared, listening = await _prepared_and_listening(served)
        while not pooler and not listening and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            prepared, listening = await _prepared_and_listening(served)
    finally:
        await stop_gateway(served)
    pooler_lines = [e for e in logs if "transaction-mode pooler" in e["event"]]
    if pooler:
        assert (prepared, listening) == (0, 0)
        assert pooler_lines and pooler_lines[0]["log_level"] == "warning"
    else:  # the same checks see them when they are there
        assert prepared > 0 and listening == 1
        assert not pooler_lines


async def test_migrations_run_on_the_migration_url_when_one_is_set(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrated: list[str] = []
    migrate = db.migrate

    async def recording(conninfo: str) -> list[str]:
        migrated.append(conninfo)
        return await migrate(conninfo)

    monkeypatch.setattr(db, "migrate", recording)
    direct = psycopg.conninfo.make_conninfo(database_url, application_name="zx-migrations")
    served = await serve_gateway(gateway_settings(database_url, tmp_path, migration_database_url=direct))
    await stop_gateway(served)
    assert migrated == [direct]


# -- Supabase Auth: clock skew and the JWKS request -------------------------------------------------


def _hs256(iat_ahead: float) -> str:
    now = time.time()
    claims = {
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "iss": ISSUER,
        "iat": int(now + iat_ahead),
        "exp": int(now + 3600),
        "role": "authenticated",
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def test_a_token_issued_a_moment_ahead_is_accepted_one_a_minute_ahead_is_not() -> None:
    """PyJWT refuses ``iat > now + leeway`` (SDK ``jwt/api_jwt.py:482-483``): with no leeway, a gateway
    whose clock lags Supabase Auth's by a second refuses fresh tokens."""
    assert GatewaySettings(database_url=None).jwt_leeway_seconds == 30  # type: ignore[call-arg]
    verifier = JwtVerifier(JwtConfig(secret=JWT_SECRET, issuer=ISSUER))
    claims = await verifier.verify(_hs256(10))
    assert claims["aud"] == "authenticated"
    with pytest.raises(Unauthenticated) as info:
        await JwtVerifier(JwtConfig(secret=JWT_SECRET, issuer=ISSUER)).verify(_hs256(60))
    assert info.value.reason == "TOKEN_INVALID" and "ImmatureSignatureError" in str(info.value)


class _RecordingJwks(QuietHandler):
    """Supabase's /auth/v1/.well-known/jwks.json: 200 with {"keys": [...]}, recording what it was sent."""

    document = b"{}"
    headers_seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        type(self).headers_seen.append(dict(self.headers.items()))
        self.reply_json(200, self.document)


@pytest.fixture
def recording_jwks() -> Iterator[tuple[str, ec.EllipticCurvePrivateKey]]:
    key = ec.generate_private_key(ec.SECP256R1())
    _RecordingJwks.document = json.dumps({"keys": [es256_jwk(key, "key-1")]}).encode()
    _RecordingJwks.headers_seen = []
    with serve_http(_RecordingJwks) as port:
        yield jwks_address(port), key


async def test_the_jwks_is_fetched_with_the_gateways_user_agent(
    recording_jwks: tuple[str, ec.EllipticCurvePrivateKey],
) -> None:
    """PyJWKClient sends only the headers it is given, so by default urllib's ``Python-urllib/3.x``
    (SDK ``jwt/jwks_client.py:162``), which Cloudflare-fronted JWKS endpoints have refused with 403
    (jpadilla/pyjwt#1121)."""
    url, key = recording_jwks
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 300}
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "key-1"})
    verified = await JwtVerifier(JwtConfig(jwks_url=url, issuer=ISSUER)).verify(token)
    assert verified["sub"] == claims["sub"]
    assert _RecordingJwks.headers_seen
    assert all(h.get("User-Agent") == JWKS_USER_AGENT for h in _RecordingJwks.headers_seen)
