"""Row-level security as a Supabase project would apply it.

The test database gets what Supabase provides before our migrations run: the ``anon`` and
``authenticated`` roles, and ``auth.uid()`` reading the JWT's ``sub`` from ``request.jwt.claims``
(exactly how PostgREST passes a user's token to PostgreSQL). Then a session that sets the role and the
claims, as PostgREST does per request, must see only that user's rows, and none of the API key hashes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.rows import dict_row
from zehanx_gateway import db
from zehanx_gateway.auth import new_api_key
from zehanx_gateway.domain import NewJob, NewModel, PendingEvent
from zehanx_gateway.store import PostgresRegistry

SUPABASE_PRELUDE = """
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
end
$$;
create schema if not exists auth;
create or replace function auth.uid() returns uuid
language sql stable as $$
    select nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                           (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')), '')::uuid
$$;
grant usage on schema auth to anon, authenticated;
"""


@pytest.fixture
async def supabase_registry(database_url: str) -> AsyncIterator[tuple[PostgresRegistry, str]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SUPABASE_PRELUDE)
    await db.migrate(database_url)
    pool = await db.open_pool(database_url, max_size=4)
    try:
        yield PostgresRegistry(pool), database_url
    finally:
        await pool.close()


async def seed(registry: PostgresRegistry, name: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A user with an API key, a job with two events, and a model; returns (user, job, model) ids."""
    user_id = await registry.user_by_name(name, create=True)
    key = new_api_key()
    await registry.add_api_key(user_id, key.key_id, key.secret_sha256, "rls")
    prompt = f"{name}'s sentiment model"
    job, _ = await registry.create_job(
        user_id, NewJob(prompt, {}, None, hashlib.sha256(prompt.encode()).digest())
    )
    await registry.append_events([PendingEvent(job.id, "log", {"line": f"hello from {name}"})])
    model = await registry.create_model(
        user_id,
        NewModel(
            job.id,
            f"{name}'s model",
            prompt,
            "TASK_FAMILY_TEXT_CLASSIFICATION",
            "accuracy",
            {},
            "",
            hashlib.sha256(name.encode()).hexdigest(),
            1,
        ),
    )
    return user_id, job.id, model.id


def as_user(url: str, user_id: uuid.UUID | None, role: str = "authenticated") -> psycopg.Connection:
    """A connection that behaves like PostgREST serving a request with this user's JWT (autocommit,
    so that a refused statement does not roll the role back)."""
    conn = psycopg.connect(url, row_factory=dict_row, autocommit=True)
    conn.execute(f"set role {role}")
    claims = {"sub": str(user_id), "role": role} if user_id else {"role": role}
    conn.execute("select set_config('request.jwt.claims', %s, false)", (json.dumps(claims),))
    return conn


async def test_rls_shows_each_supabase_user_only_their_own_rows(
    supabase_registry: tuple[PostgresRegistry, str],
) -> None:
    registry, url = supabase_registry
    alice, alice_job, alice_model = await seed(registry, "alice")
    bob, bob_job, bob_model = await seed(registry, "bob")

    with as_user(url, alice) as conn:
        assert conn.execute("select auth.uid() as uid").fetchone() == {"uid": alice}
        assert [r["id"] for r in conn.execute("select id from zehanx.users")] == [alice]
        assert [r["id"] for r in conn.execute("select id from zehanx.jobs")] == [alice_job]
        events = conn.execute("select distinct job_id from zehanx.job_events").fetchall()
        assert [r["job_id"] for r in events] == [alice_job]
        assert [r["id"] for r in conn.execute("select id from zehanx.models")] == [alice_model]
        # Asking for bob's rows by id finds nothing: hidden, not refused.
        assert conn.execute("select * from zehanx.jobs where id = %s", (bob_job,)).fetchall() == []
        assert conn.execute("select * from zehanx.models where id = %s", (bob_model,)).fetchall() == []

    with as_user(url, bob) as conn:
        assert [r["id"] for r in conn.execute("select id from zehanx.jobs")] == [bob_job]


async def test_rls_users_cannot_read_key_hashes_or_write_around_the_gateway(
    supabase_registry: tuple[PostgresRegistry, str],
) -> None:
    registry, url = supabase_registry
    alice, alice_job, _ = await seed(registry, "alice")
    with as_user(url, alice) as conn:
        assert conn.execute("select current_user as who").fetchone() == {"who": "authenticated"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from zehanx.api_keys")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from zehanx.provider_keys")  # sealed or not, never exposed
        assert conn.execute("select * from zehanx.uploads").fetchall() == []
        assert conn.execute("select * from zehanx.user_settings").fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update zehanx.jobs set state = 'SUCCEEDED' where id = %s", (alice_job,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from zehanx.models")
        assert conn.execute("select current_user as who").fetchone() == {"who": "authenticated"}
    # The anonymous role sees nothing at all.
    with as_user(url, None, role="anon") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select * from zehanx.jobs")
    job = await registry.get_job(alice_job, user_id=alice)
    assert job.state.value == "QUEUED"


async def test_without_supabase_the_tables_still_enable_rls_and_skip_the_policies(database_url: str) -> None:
    await db.migrate(database_url)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "select c.relname, c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'zehanx' and c.relkind = 'r' and c.relname <> 'schema_migrations' order by 1"
        ).fetchall()
        policies = conn.execute(
            "select count(*) as n from pg_policies where schemaname = 'zehanx'"
        ).fetchone()
    assert {r["relname"]: r["relrowsecurity"] for r in rows} == {
        "accounts": True,
        "api_keys": True,
        "job_events": True,
        "jobs": True,
        "models": True,
        "provider_keys": True,
        "session_keys": True,
        "session_retired_tokens": True,
        "sessions": True,
        "sign_in_failures": True,
        "sign_in_known_clients": True,
        "sign_up_attempts": True,
        "uploads": True,
        "user_settings": True,
        "users": True,
    }
    assert policies == {"n": 0}
