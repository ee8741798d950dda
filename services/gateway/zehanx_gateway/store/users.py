"""Users and what belongs to each: API keys, sealed provider keys and settings.

The accounts of the embedded sign-in (emails, password hashes, sessions) are next door, in
:mod:`.accounts`. API keys are read on every call, never cached,
so a revoked key stops working at once on every replica; only a key's SHA-256 is stored.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.types.json import Jsonb
from zehanx_runtime import errors

from zehanx_gateway.domain import ApiKey, Provider, SealedProviderKey, StoredApiKey, UserSettings
from zehanx_gateway.store.base import PoolStore, translated


def _api_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        user_name=row.get("user_name"),
        label=row["label"],
        create_time=row["create_time"],
        revoke_time=row["revoke_time"],
    )


def _sealed_key(row: dict[str, Any]) -> SealedProviderKey:
    return SealedProviderKey(
        user_id=row["user_id"],
        provider=Provider(row["provider"]),
        nonce=bytes(row["nonce"]),
        sealed=bytes(row["sealed"]),
        hint=row["hint"],
        update_time=row["update_time"],
    )


class PostgresUserStore(PoolStore):
    """Users, API keys, provider keys and user settings."""

    # -- users and API keys --------------------------------------------------------------------

    @translated
    async def ensure_user(self, user_id: uuid.UUID) -> None:
        """Record a user first seen through a JWT (its subject)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "insert into zehanx.users (id) values (%s) on conflict (id) do nothing", (user_id,)
            )

    @translated
    async def user_by_name(self, name: str, *, create: bool = False) -> uuid.UUID:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("select id from zehanx.users where name = %s", (name,))
            row = await cur.fetchone()
            if row:
                return row["id"]
            if not create:
                raise errors.NotFound(f"no user named {name!r}", reason="USER_NOT_FOUND")
            cur = await conn.execute(
                "insert into zehanx.users (id, name) values (%s, %s) "
                "on conflict (name) do update set name = excluded.name returning id",
                (uuid.uuid4(), name),
            )
            row = await cur.fetchone()
            assert row is not None
            return row["id"]

    @translated
    async def add_api_key(self, user_id: uuid.UUID, key_id: str, secret_sha256: bytes, label: str) -> ApiKey:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "insert into zehanx.api_keys (id, user_id, secret_sha256, label) values (%s, %s, %s, %s) "
                "returning *, (select name from zehanx.users where id = %s) as user_name",
                (key_id, user_id, secret_sha256, label, user_id),
            )
            row = await cur.fetchone()
            assert row is not None
            return _api_key(row)

    @translated
    async def find_api_key(self, key_id: str) -> StoredApiKey | None:
        """What the key check needs of a key (owner, secret hash, revoke time), or None. Read on every
        call: no cache, so a revoked key stops working at once on every replica."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select user_id, secret_sha256, revoke_time from zehanx.api_keys where id = %s", (key_id,)
            )
            row = await cur.fetchone()
            if row is None:
                return None
            return StoredApiKey(row["user_id"], bytes(row["secret_sha256"]), row["revoke_time"])

    @translated
    async def list_api_keys(self, user_id: uuid.UUID | None = None) -> list[ApiKey]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select k.*, u.name as user_name from zehanx.api_keys k join zehanx.users u on u.id = k.user_id "
                "where %(user)s::uuid is null or k.user_id = %(user)s order by k.create_time, k.id",
                {"user": user_id},
            )
            return [_api_key(row) for row in await cur.fetchall()]

    @translated
    async def revoke_api_key(self, key_id: str, *, user_id: uuid.UUID | None = None) -> ApiKey:
        """Revoke a key (a revoked one stays as it is). With ``user_id`` (a user revoking their own),
        anyone else's key is NOT_FOUND; without it (an operator), any user's."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "update zehanx.api_keys k set revoke_time = coalesce(k.revoke_time, now()) "
                "where k.id = %s and (%s::uuid is null or k.user_id = %s) "
                "returning k.*, (select name from zehanx.users u where u.id = k.user_id) as user_name",
                (key_id, user_id, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(
                f"no API key {key_id!r}", reason="API_KEY_NOT_FOUND", metadata={"key_id": key_id}
            )
        return _api_key(row)

    # -- provider keys (sealed) ---------------------------------------------------------------------------

    @translated
    async def put_provider_key(
        self, user_id: uuid.UUID, provider: Provider, nonce: bytes, sealed: bytes, hint: str
    ) -> SealedProviderKey:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                insert into zehanx.provider_keys (user_id, provider, nonce, sealed, hint)
                values (%s, %s, %s, %s, %s)
                on conflict (user_id, provider) do update
                set nonce = excluded.nonce, sealed = excluded.sealed, hint = excluded.hint, update_time = now()
                returning *
                """,
                (user_id, provider.value, nonce, sealed, hint),
            )
            row = await cur.fetchone()
            assert row is not None
            return _sealed_key(row)

    @translated
    async def list_provider_keys(self, user_id: uuid.UUID) -> list[SealedProviderKey]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.provider_keys where user_id = %s order by provider", (user_id,)
            )
            return [_sealed_key(r) for r in await cur.fetchall()]

    @translated
    async def delete_provider_key(self, user_id: uuid.UUID, provider: Provider) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "delete from zehanx.provider_keys where user_id = %s and provider = %s",
                (user_id, provider.value),
            )

    # -- user settings --------------------------------------------------------------------------------------

    @translated
    async def get_user_settings(self, user_id: uuid.UUID) -> UserSettings:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select settings, update_time from zehanx.user_settings where user_id = %s", (user_id,)
            )
            row = await cur.fetchone()
        if row is None:
            return UserSettings(settings={}, update_time=None)
        return UserSettings(settings=row["settings"], update_time=row["update_time"])

    @translated
    async def put_user_settings(self, user_id: uuid.UUID, settings: dict[str, Any]) -> UserSettings:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                insert into zehanx.user_settings (user_id, settings) values (%s, %s)
                on conflict (user_id) do update set settings = excluded.settings, update_time = now()
                returning settings, update_time
                """,
                (user_id, Jsonb(settings)),
            )
            row = await cur.fetchone()
            assert row is not None
            return UserSettings(settings=row["settings"], update_time=row["update_time"])
