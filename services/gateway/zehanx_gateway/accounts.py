"""Accounts of the embedded default: sign up, sign in, renew and sign out with an email and a password.

The gateway is then its own small identity provider, shaped like Supabase Auth so that one token
format serves both: a session is a short-lived HS256 JWT with Supabase's claims (``sub`` the user id,
``aud`` and ``role`` ``authenticated``, ``exp``, ``iss`` when configured, ``email``, ``session_id``),
signed with the gateway's JWT secret and checked by the gateway's ordinary JWT path
(:class:`~zehanx_gateway.auth.JwtVerifier`) on every call, plus a refresh token that renews it.

- Passwords: argon2id (argon2-cffi's defaults), hashed and verified off the event loop. An unknown
  email costs the same verification as a wrong password, so timing does not tell which emails exist.
- Guessing: failed sign-ins are counted per email and per client address over a sliding window in
  PostgreSQL (so every replica sees them); beyond the limits sign-in answers RESOURCE_EXHAUSTED with
  the seconds to wait, even for the right password.
- Sign-ups: counted per client address over a sliding window, also in PostgreSQL; beyond the limit
  sign-up answers RESOURCE_EXHAUSTED with the seconds to wait (accounts cannot be minted in bulk).
- Refresh tokens: 256 random bits, stored as SHA-256, rotated on each use (a stolen, already-used
  token is refused); sign-out revokes the session (``local``) or every session of the user (``global``).
  An access token already issued stays valid until its ``exp`` (minutes), as with Supabase.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import argon2
import jwt
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool
from zehanx_runtime import errors
from zehanx_runtime.errors import FieldViolation

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


@dataclass(frozen=True, slots=True)
class Account:
    user_id: uuid.UUID
    email: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    """What a sign-in returns: the access JWT, when it expires, and the refresh token."""

    access_token: str
    expires_in: int
    expires_at: int
    refresh_token: str
    user_id: uuid.UUID
    email: str
    session_id: uuid.UUID


class AccountStore(Protocol):
    async def create_account(self, email: str, password_hash: str) -> uuid.UUID: ...
    async def find_account(self, email: str) -> Account | None: ...
    async def email_of(self, user_id: uuid.UUID) -> str | None: ...
    async def recent_failures(self, email: str, client: str, window_s: float) -> tuple[int, int, float]: ...
    async def record_failure(self, email: str, client: str, window_s: float) -> None: ...
    async def recent_sign_ups(self, client: str, window_s: float) -> tuple[int, float]: ...
    async def record_sign_up(self, client: str, window_s: float) -> None: ...
    async def start_session(
        self, session_id: uuid.UUID, user_id: uuid.UUID, refresh_sha256: bytes
    ) -> None: ...
    async def rotate_session(
        self, old_sha256: bytes, new_sha256: bytes
    ) -> tuple[uuid.UUID, uuid.UUID] | None: ...
    async def revoke_sessions(self, user_id: uuid.UUID, session_id: uuid.UUID | None) -> int: ...
    async def revoke_by_refresh(self, refresh_sha256: bytes) -> int: ...
    async def set_password(self, user_id: uuid.UUID, email: str, password_hash: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How sessions are signed and limited."""

    secret: str
    audience: str = "authenticated"
    issuer: str | None = None
    access_seconds: int = 900
    max_failures_per_email: int = 5
    max_failures_per_client: int = 50
    failure_window_seconds: float = 900.0
    max_sign_ups_per_client: int = 10
    sign_up_window_seconds: float = 3600.0


class AccountService:
    """Sign-up, sign-in, refresh and sign-out over an :class:`AccountStore`."""

    def __init__(
        self, store: AccountStore, config: SessionConfig, *, hasher: argon2.PasswordHasher | None = None
    ) -> None:
        if len(config.secret) < 32:
            raise ValueError("the JWT secret that signs sessions must be at least 32 characters")
        self._store = store
        self._config = config
        self._hasher = hasher or argon2.PasswordHasher()
        # Verified against when the email is unknown, so both cases cost one argon2 verification.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def sign_up(self, email: str, password: str, *, client: str = "") -> Session:
        if client:
            window = self._config.sign_up_window_seconds
            count, oldest_age = await self._store.recent_sign_ups(client, window)
            if count >= self._config.max_sign_ups_per_client:
                wait = max(1, int(window - oldest_age) + 1)
                raise errors.ResourceExhausted(
                    f"too many sign-ups from this address; try again in {wait} s",
                    reason="TOO_MANY_SIGN_UPS",
                    metadata={"retry_after_seconds": str(wait)},
                )
            # Every attempt counts, refused ones too: probing which emails are taken costs the same.
            await self._store.record_sign_up(client, window)
        email = _checked(email, password)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        user_id = await self._store.create_account(email, password_hash)
        return await self._new_session(user_id, email)

    async def sign_in(self, email: str, password: str, *, client: str = "") -> Session:
        email = (email or "").strip().lower()
        if not email or not password:
            raise errors.InvalidArgument(
                "email and password are required",
                violations=[
                    FieldViolation(name, "is required", "required")
                    for name, value in (("email", email), ("password", password))
                    if not value
                ],
                reason="VALIDATION_FAILED",
            )
        window = self._config.failure_window_seconds
        by_email, by_client, oldest_age = await self._store.recent_failures(email, client, window)
        if (
            by_email >= self._config.max_failures_per_email
            or by_client >= self._config.max_failures_per_client
        ):
            wait = max(1, int(window - oldest_age) + 1)
            raise errors.ResourceExhausted(
                f"too many failed sign-ins; try again in {wait} s",
                reason="TOO_MANY_SIGN_IN_ATTEMPTS",
                metadata={"retry_after_seconds": str(wait)},
            )
        account = await self._store.find_account(email)
        stored = account.password_hash if account else self._dummy_hash
        if not await asyncio.to_thread(self._verify, stored, password) or account is None:
            await self._store.record_failure(email, client, window)
            raise errors.Unauthenticated("invalid email or password", reason="INVALID_CREDENTIALS")
        return await self._new_session(account.user_id, email)

    async def refresh(self, refresh_token: str) -> Session:
        digest = hashlib.sha256((refresh_token or "").encode()).digest()
        new_token = _refresh_token()
        rotated = await self._store.rotate_session(digest, hashlib.sha256(new_token.encode()).digest())
        if rotated is None:
            raise errors.Unauthenticated(
                "the refresh token is not valid (used, revoked or unknown): sign in again",
                reason="REFRESH_TOKEN_INVALID",
            )
        session_id, user_id = rotated
        email = await self._store.email_of(user_id) or ""
        return self._session(user_id, email, session_id, new_token)

    async def sign_out(self, access_token: str, *, everywhere: bool = True) -> int:
        """Revoke the token's session (or all the user's sessions); returns how many were revoked."""
        claims = self.verify(access_token)
        user_id = uuid.UUID(str(claims["sub"]))
        session = None if everywhere else uuid.UUID(str(claims["session_id"]))
        return await self._store.revoke_sessions(user_id, session)

    async def sign_out_refresh(self, refresh_token: str) -> int:
        """Revoke the session a refresh token belongs to (sign-out without a valid access token)."""
        if not refresh_token:
            return 0
        return await self._store.revoke_by_refresh(hashlib.sha256(refresh_token.encode()).digest())

    def verify(self, token: str) -> Mapping[str, Any]:
        """The claims of a session token this service signed (UNAUTHENTICATED otherwise)."""
        try:
            claims = jwt.decode(
                token,
                self._config.secret,
                algorithms=["HS256"],
                audience=self._config.audience,
                issuer=self._config.issuer,
                options={"require": ["exp", "sub", "session_id"]},
            )
        except jwt.ExpiredSignatureError:
            raise errors.Unauthenticated("the session has expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise errors.Unauthenticated(
                "not a session token of this gateway", reason="TOKEN_INVALID"
            ) from None
        return claims

    # -- helpers ----------------------------------------------------------------------------------

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False

    async def _new_session(self, user_id: uuid.UUID, email: str) -> Session:
        session_id = uuid.uuid4()
        token = _refresh_token()
        await self._store.start_session(session_id, user_id, hashlib.sha256(token.encode()).digest())
        return self._session(user_id, email, session_id, token)

    def _session(self, user_id: uuid.UUID, email: str, session_id: uuid.UUID, refresh: str) -> Session:
        now = int(time.time())
        expires_at = now + self._config.access_seconds
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "aud": self._config.audience,
            "role": "authenticated",
            "iat": now,
            "exp": expires_at,
            "email": email,
            "session_id": str(session_id),
            "amr": [{"method": "password", "timestamp": now}],
        }
        if self._config.issuer:
            claims["iss"] = self._config.issuer
        access = jwt.encode(claims, self._config.secret, algorithm="HS256")
        return Session(access, self._config.access_seconds, expires_at, refresh, user_id, email, session_id)


async def set_password(store: AccountStore, user_id: uuid.UUID, email: str, password: str) -> str:
    """Give an existing user (say the CLI's ``local`` user) an email and password, or replace them, so
    the dashboard shows that user's jobs and models; the user's sessions are signed out. Returns the
    normalised email."""
    email = _checked(email, password)
    password_hash = await asyncio.to_thread(argon2.PasswordHasher().hash, password)
    await store.set_password(user_id, email, password_hash)
    await store.revoke_sessions(user_id, None)
    return email


def _checked(email: str, password: str) -> str:
    """The normalised email, or INVALID_ARGUMENT naming every bad field."""
    email = (email or "").strip().lower()
    violations = []
    if not _EMAIL_RE.match(email) or len(email) > 320:
        violations.append(FieldViolation("email", "must be an email address", "email"))
    if len(password or "") < MIN_PASSWORD:
        violations.append(
            FieldViolation("password", f"must be at least {MIN_PASSWORD} characters", "min_len")
        )
    elif len(password) > MAX_PASSWORD:
        violations.append(FieldViolation("password", f"must be at most {MAX_PASSWORD} characters", "max_len"))
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise errors.InvalidArgument(
            f"cannot sign up: {summary}", violations=violations, reason="VALIDATION_FAILED"
        )
    return email


def _refresh_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


class PostgresAccountStore:
    """:class:`AccountStore` in the gateway's PostgreSQL (migration 0004_accounts)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create_account(self, email: str, password_hash: str) -> uuid.UUID:
        user_id = uuid.uuid4()
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("insert into zehanx.users (id) values (%s)", (user_id,))
                await conn.execute(
                    "insert into zehanx.accounts (user_id, email, password_hash) values (%s, %s, %s)",
                    (user_id, email, password_hash),
                )
        except pg_errors.UniqueViolation:
            raise errors.AlreadyExists(
                "an account with this email exists: sign in instead", reason="EMAIL_TAKEN"
            ) from None
        return user_id

    async def set_password(self, user_id: uuid.UUID, email: str, password_hash: str) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    """
                    insert into zehanx.accounts (user_id, email, password_hash) values (%s, %s, %s)
                    on conflict (user_id) do update
                      set email = excluded.email, password_hash = excluded.password_hash
                    """,
                    (user_id, email, password_hash),
                )
        except pg_errors.UniqueViolation:
            raise errors.AlreadyExists(
                "another user's account has this email", reason="EMAIL_TAKEN"
            ) from None

    async def find_account(self, email: str) -> Account | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select user_id, email, password_hash from zehanx.accounts where email = %s", (email,)
            )
            row = await cur.fetchone()
        return Account(row["user_id"], row["email"], row["password_hash"]) if row else None

    async def email_of(self, user_id: uuid.UUID) -> str | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute("select email from zehanx.accounts where user_id = %s", (user_id,))
            row = await cur.fetchone()
        return row["email"] if row else None

    async def recent_failures(self, email: str, client: str, window_s: float) -> tuple[int, int, float]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                select
                  count(*) filter (where email = %(email)s) as by_email,
                  count(*) filter (where client = %(client)s and %(client)s <> '') as by_client,
                  coalesce(extract(epoch from now() - min(attempt_time)), 0)::float8 as oldest_age
                from zehanx.sign_in_failures
                where attempt_time > now() - make_interval(secs => %(window)s)
                  and (email = %(email)s or (client = %(client)s and %(client)s <> ''))
                """,
                {"email": email, "client": client, "window": window_s},
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row["by_email"]), int(row["by_client"]), float(row["oldest_age"])

    async def record_failure(self, email: str, client: str, window_s: float) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "insert into zehanx.sign_in_failures (email, client) values (%s, %s)", (email, client)
            )
            await conn.execute(
                "delete from zehanx.sign_in_failures where attempt_time < now() - make_interval(secs => %s)",
                (window_s * 2,),
            )

    async def recent_sign_ups(self, client: str, window_s: float) -> tuple[int, float]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                select count(*) as n,
                  coalesce(extract(epoch from now() - min(attempt_time)), 0)::float8 as oldest_age
                from zehanx.sign_up_attempts
                where client = %s and attempt_time > now() - make_interval(secs => %s)
                """,
                (client, window_s),
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row["n"]), float(row["oldest_age"])

    async def record_sign_up(self, client: str, window_s: float) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("insert into zehanx.sign_up_attempts (client) values (%s)", (client,))
            await conn.execute(
                "delete from zehanx.sign_up_attempts where attempt_time < now() - make_interval(secs => %s)",
                (window_s * 2,),
            )

    async def revoke_by_refresh(self, refresh_sha256: bytes) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "update zehanx.sessions set revoke_time = now() "
                "where refresh_sha256 = %s and revoke_time is null",
                (refresh_sha256,),
            )
            return cur.rowcount

    async def start_session(self, session_id: uuid.UUID, user_id: uuid.UUID, refresh_sha256: bytes) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "insert into zehanx.sessions (id, user_id, refresh_sha256) values (%s, %s, %s)",
                (session_id, user_id, refresh_sha256),
            )

    async def rotate_session(
        self, old_sha256: bytes, new_sha256: bytes
    ) -> tuple[uuid.UUID, uuid.UUID] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                update zehanx.sessions set refresh_sha256 = %s, refresh_time = now()
                where refresh_sha256 = %s and revoke_time is null
                returning id, user_id
                """,
                (new_sha256, old_sha256),
            )
            row = await cur.fetchone()
        return (row["id"], row["user_id"]) if row else None

    async def revoke_sessions(self, user_id: uuid.UUID, session_id: uuid.UUID | None) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                update zehanx.sessions set revoke_time = now()
                where user_id = %s and revoke_time is null and (%s::uuid is null or id = %s::uuid)
                """,
                (user_id, session_id, session_id),
            )
            return cur.rowcount
