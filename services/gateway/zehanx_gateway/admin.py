"""Operator actions on the gateway's database: the one module of the gateway that the CLI calls.

What the public API rightly does not offer: the first API key, made before anyone could call
``CreateApiKey`` (``zx up``); any user's keys, listed and revoked (``zx keys``); an email and password
for a user the CLI made (``zx account password``). They run on the gateway's own migrations, store and
key check, so a key made here works at once on every replica and a key revoked here stops at once.

    async with open_registry(url) as admin:
        created = await admin.create_key("local", label="laptop")

The CLI also reads the gateway's settings classes (to find the database, to diagnose and to document
them); nothing else of the gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from zehanx_runtime import errors

from zehanx_gateway import accounts, db
from zehanx_gateway.auth import check_api_key, new_api_key, parse_api_key
from zehanx_gateway.db import TRANSACTION_POOLER_PORT, is_transaction_pooler, redact
from zehanx_gateway.domain import ApiKey
from zehanx_gateway.settings import GatewaySettings
from zehanx_gateway.store import PostgresUserStore
from zehanx_gateway.store.accounts import PostgresAccountStore

__all__ = [
    "TRANSACTION_POOLER_PORT",
    "Admin",
    "ApiKey",
    "CreatedKey",
    "configured_database_url",
    "is_transaction_pooler",
    "open_registry",
    "redact",
]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    #: The whole key, shown once to its owner and never stored (only its SHA-256 is).
    token: str


class Admin:
    """Keys and accounts of any user, by name. Every method raises domain errors (NOT_FOUND for an
    unknown user or key, UNAVAILABLE when the database is)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._users = PostgresUserStore(pool)
        self._accounts = PostgresAccountStore(pool)

    async def create_key(self, user: str, label: str = "") -> CreatedKey:
        """A new API key for the user named ``user`` (made on first use)."""
        user_id = await self._users.user_by_name(user, create=True)
        key = new_api_key()
        record = await self._users.add_api_key(user_id, key.key_id, key.secret_sha256, label)
        return CreatedKey(record, key.token)

    async def list_keys(self, user: str | None = None) -> list[ApiKey]:
        """Every key (of ``user`` only, when given), revoked ones included, oldest first."""
        user_id = await self._users.user_by_name(user) if user else None
        return await self._users.list_api_keys(user_id)

    async def revoke_key(self, key: str) -> ApiKey:
        """Revoke a key named by its id or by the whole key; a revoked key stays as it was revoked."""
        parsed = parse_api_key(key)
        return await self._users.revoke_api_key(parsed[0] if parsed else key)

    async def ensure_local_key(self, user: str, current: str, *, label: str = "made by zx up") -> str | None:
        """None while ``current`` is a key the gateway accepts (the gateway's own check); otherwise (empty,
        malformed, unknown after a purge, revoked) a new key for ``user``, whose whole key is returned."""
        if current:
            try:
                await check_api_key(self._users, current)
                return None
            except errors.Unauthenticated:
                pass
        return (await self.create_key(user, label)).token

    async def set_password(self, user: str, email: str, password: str) -> str:
        """Give the existing user named ``user`` an email and password (or replace them) and sign out
        their sessions; returns the normalised email (see :func:`zehanx_gateway.accounts.set_password`)."""
        user_id = await self._users.user_by_name(user)
        return await accounts.set_password(self._accounts, user_id, email, password)


@asynccontextmanager
async def open_registry(url: str) -> AsyncIterator[Admin]:
    """Bring the database at ``url`` to the gateway's schema, then an :class:`Admin` over a small pool,
    closed on exit. RuntimeError naming the database (password hidden) when it cannot be prepared."""
    try:
        await db.migrate(url)
    except Exception as exc:
        raise RuntimeError(f"cannot prepare the database ({redact(url)}): {exc}") from exc
    pool = await db.open_pool(url, min_size=1, max_size=2)
    try:
        yield Admin(pool)
    finally:
        await pool.close()


def configured_database_url() -> str | None:
    """The gateway's database URL as the gateway reads it (``ZX_GATEWAY_DATABASE_URL``, or
    ``ZX_DATABASE_URL``); None when unset. pydantic's ValidationError when the gateway's settings are
    invalid."""
    configured = GatewaySettings().database_url
    return configured.get_secret_value() if configured is not None else None
