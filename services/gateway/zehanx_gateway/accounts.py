"""Accounts of the embedded default: sign up, sign in, renew and sign out with an email and a password.

The gateway is then its own small identity provider, with Supabase Auth's REST shape (so that one page
client serves both) but tokens of its own: a session is a short-lived HS256 JWT (``sub`` the user id,
``iss`` :data:`~zehanx_gateway.auth.SESSION_ISSUER`, ``aud`` :data:`~zehanx_gateway.auth.SESSION_AUDIENCE`,
``exp``, ``iat``, ``auth_time``, ``email``, ``session_id``) signed with a key the gateway generated itself
(:func:`zehanx_gateway.store.accounts.session_key`, kept in PostgreSQL for every replica), never with a configured secret: a local
session is never a valid Supabase token and a Supabase token is never a local session. The gateway's
JWT path (:class:`~zehanx_gateway.auth.Authenticator`) checks it on every call, on both ports. With
Supabase configured the local accounts are off (see ``zehanx_gateway.edge.auth_routes``).

- Passwords: argon2id (argon2-cffi's defaults), hashed and verified off the event loop. An unknown
  email costs the same verification as a wrong password, so timing does not tell which emails exist.
- Guessing: an attempt takes its slot in PostgreSQL before any password is hashed: under advisory locks
  on the email and on the client, the recent attempts are counted and, below the limits, a row is
  written, all in one transaction (so concurrent attempts cannot all pass one check); a right password
  deletes its row, a wrong one leaves it. Limits over a sliding window: per email from one client
  (``max_failures_per_email``, even the right password is refused from there), per client
  (``max_failures_per_client``), and per email from every client together
  (``max_failures_per_email_total``), which does not apply to a client that has signed in to that
  account before (``known_client_days``): anyone can still exhaust an email's limit from their own
  addresses, but not lock its owner out of the places they sign in from.
  A client is an IPv4 address or an IPv6 /64 (see ``zehanx_gateway.edge.auth_routes.client_bucket``).
- Sign-ups: counted per client over a sliding window the same way (slot taken before hashing); beyond
  the limit sign-up answers RESOURCE_EXHAUSTED with the seconds to wait.
- Refresh tokens: 256 random bits, stored as SHA-256, rotated on each use. A session lasts at most
  ``lifetime_seconds`` from its sign-in and ends after ``idle_seconds`` without a refresh. A refresh
  token that was already rotated away, presented again, means it was copied: the whole session is
  revoked, so the copy's newer tokens stop too. Sign-out revokes the session (``local``) or every
  session of the user (``global``), as does a password change; an access token already issued stays
  valid until its ``exp`` (minutes), as with Supabase. API keys are not sessions and stay valid (they
  are revoked one by one); creating one from a session needs a recent sign-in (``auth_time``).
- Input: lengths are checked before any pattern runs, and the email pattern is linear.
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
from typing import Any, Literal, Protocol

import argon2
import jwt
from zehanx_runtime import errors
from zehanx_runtime.errors import FieldViolation

from zehanx_gateway import metrics
from zehanx_gateway.auth import SESSION_AUDIENCE, SESSION_ISSUER

#: Linear: every ``.``-separated label is a run of characters that are not ``.``, so no two ways to
#: split the text exist (the old ``[^@\s]+\.[^@\s]+`` tried every dot: quadratic). Applied only to
#: text already known to be at most MAX_EMAIL characters.
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+")
MAX_EMAIL = 320
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


@dataclass(frozen=True, slots=True)
class SignInLimits:
    """Failed sign-ins allowed within ``window_s``; see the module's notes."""

    per_email: int
    per_client: int
    per_email_total: int
    window_s: float
    known_client_s: float


@dataclass(frozen=True, slots=True)
class Rotation:
    """What presenting a refresh token did: ``ok`` (rotated), ``invalid`` (unknown or revoked),
    ``reused`` (an old token of a live session: the session is now revoked) or ``expired`` (past
    its idle or absolute lifetime: revoked)."""

    outcome: Literal["ok", "invalid", "reused", "expired"]
    session_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    auth_time: float = 0.0


class AccountStore(Protocol):
    async def create_account(self, email: str, password_hash: str) -> uuid.UUID: ...
    async def find_account(self, email: str) -> Account | None: ...
    async def email_of(self, user_id: uuid.UUID) -> str | None: ...
    async def take_sign_in_slot(
        self, email: str, client: str, limits: SignInLimits
    ) -> tuple[int | None, float]: ...
    async def sign_in_succeeded(self, attempt_id: int, email: str, client: str) -> None: ...
    async def take_sign_up_slot(self, client: str, limit: int, window_s: float) -> float | None: ...
    async def start_session(
        self, session_id: uuid.UUID, user_id: uuid.UUID, refresh_sha256: bytes, lifetime_s: float
    ) -> float: ...
    async def rotate_session(
        self, old_sha256: bytes, new_sha256: bytes, *, idle_s: float, lifetime_s: float
    ) -> Rotation: ...
    async def revoke_sessions(self, user_id: uuid.UUID, session_id: uuid.UUID | None) -> int: ...
    async def revoke_by_refresh(self, refresh_sha256: bytes) -> int: ...
    async def set_password(self, user_id: uuid.UUID, email: str, password_hash: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How sessions are signed and limited."""

    #: The key the gateway generated (:func:`zehanx_gateway.store.accounts.session_key`); never a secret configured from outside.
    secret: str
    access_seconds: int = 900
    #: A session ends this long after its sign-in, however often it is renewed.
    lifetime_seconds: float = 30 * 86_400.0
    #: A session ends when not renewed for this long.
    idle_seconds: float = 7 * 86_400.0
    max_failures_per_email: int = 5
    max_failures_per_client: int = 50
    max_failures_per_email_total: int = 20
    failure_window_seconds: float = 900.0
    known_client_days: float = 30.0
    max_sign_ups_per_client: int = 10
    sign_up_window_seconds: float = 3600.0


class AccountService:
    """Sign-up, sign-in, refresh and sign-out over an :class:`AccountStore`."""

    def __init__(
        self, store: AccountStore, config: SessionConfig, *, hasher: argon2.PasswordHasher | None = None
    ) -> None:
        if len(config.secret.encode()) < 32:
            raise ValueError("the key that signs sessions must be at least 32 bytes")
        self._store = store
        self._config = config
        self._hasher = hasher or argon2.PasswordHasher()
        # Verified against when the email is unknown, so both cases cost one argon2 verification.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._limits = SignInLimits(
            per_email=config.max_failures_per_email,
            per_client=config.max_failures_per_client,
            per_email_total=config.max_failures_per_email_total,
            window_s=config.failure_window_seconds,
            known_client_s=config.known_client_days * 86_400.0,
        )

    async def sign_up(self, email: str, password: str, *, client: str = "") -> Session:
        if client:
            # The slot is taken (checked and counted in one transaction) before anything is hashed;
            # every attempt counts, refused ones too: probing which emails are taken costs the same.
            wait = await self._store.take_sign_up_slot(
                client, self._config.max_sign_ups_per_client, self._config.sign_up_window_seconds
            )
            if wait is not None:
                seconds = max(1, int(wait) + 1)
                metrics.RATE_LIMITED.labels("sign_up").inc()
                raise errors.ResourceExhausted(
                    f"too many sign-ups from this address; try again in {seconds} s",
                    reason="TOO_MANY_SIGN_UPS",
                    metadata={"retry_after_seconds": str(seconds)},
                )
        email = _checked(email, password)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        user_id = await self._store.create_account(email, password_hash)
        return await self._new_session(user_id, email)

    async def sign_in(self, email: str, password: str, *, client: str = "") -> Session:
        email = email or ""
        if len(email) <= MAX_EMAIL + 64:  # lengths first: a long text is refused as it is
            email = email.strip().lower()
        password = password or ""
        violations = [
            FieldViolation(name, "is required", "required")
            for name, value in (("email", email), ("password", password))
            if not value
        ]
        if len(email) > MAX_EMAIL:
            violations.append(FieldViolation("email", f"must be at most {MAX_EMAIL} characters", "max_len"))
        if len(password) > MAX_PASSWORD:
            violations.append(
                FieldViolation("password", f"must be at most {MAX_PASSWORD} characters", "max_len")
            )
        if violations:
            raise errors.InvalidArgument(
                "email and password are required (" + ", ".join(v.field for v in violations) + ")",
                violations=violations,
                reason="VALIDATION_FAILED",
            )
        attempt_id, retry_after = await self._store.take_sign_in_slot(email, client, self._limits)
        if attempt_id is None:
            wait = max(1, int(retry_after) + 1)
            metrics.RATE_LIMITED.labels("sign_in").inc()
            metrics.SIGN_IN_FAILURES.labels("rate_limited").inc()
            raise errors.ResourceExhausted(
                f"too many failed sign-ins; try again in {wait} s",
                reason="TOO_MANY_SIGN_IN_ATTEMPTS",
                metadata={"retry_after_seconds": str(wait)},
            )
        account = await self._store.find_account(email)
        stored = account.password_hash if account else self._dummy_hash
        if not await asyncio.to_thread(self._verify, stored, password) or account is None:
            # The attempt's row stays: it is the failure counted against the limits.
            metrics.SIGN_IN_FAILURES.labels("invalid_credentials").inc()
            raise errors.Unauthenticated("invalid email or password", reason="INVALID_CREDENTIALS")
        await self._store.sign_in_succeeded(attempt_id, email, client)
        return await self._new_session(account.user_id, email)

    async def refresh(self, refresh_token: str) -> Session:
        digest = hashlib.sha256((refresh_token or "").encode()).digest()
        new_token = _refresh_token()
        rotated = await self._store.rotate_session(
            digest,
            hashlib.sha256(new_token.encode()).digest(),
            idle_s=self._config.idle_seconds,
            lifetime_s=self._config.lifetime_seconds,
        )
        if rotated.outcome == "reused":
            raise errors.Unauthenticated(
                "this refresh token was already used, so it may have been copied: the session is now "
                "signed out everywhere it was used; sign in again",
                reason="REFRESH_TOKEN_REUSED",
            )
        if rotated.outcome == "expired":
            raise errors.Unauthenticated(
                "the session has expired (signed in too long ago, or unused too long): sign in again",
                reason="SESSION_EXPIRED",
            )
        if rotated.outcome != "ok" or rotated.session_id is None or rotated.user_id is None:
            raise errors.Unauthenticated(
                "the refresh token is not valid (revoked or unknown): sign in again",
                reason="REFRESH_TOKEN_INVALID",
            )
        email = await self._store.email_of(rotated.user_id) or ""
        return self._session(rotated.user_id, email, rotated.session_id, new_token, rotated.auth_time)

    async def sign_out(self, access_token: str, *, everywhere: bool = True) -> int:
        """Revoke the token's session (or all the user's sessions); returns how many were revoked.
        API keys are not sessions: they stay valid."""
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
                audience=SESSION_AUDIENCE,
                issuer=SESSION_ISSUER,
                options={"require": ["exp", "sub", "session_id", "iss", "aud"]},
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
        auth_time = await self._store.start_session(
            session_id, user_id, hashlib.sha256(token.encode()).digest(), self._config.lifetime_seconds
        )
        return self._session(user_id, email, session_id, token, auth_time)

    def _session(
        self, user_id: uuid.UUID, email: str, session_id: uuid.UUID, refresh: str, auth_time: float
    ) -> Session:
        now = int(time.time())
        expires_at = now + self._config.access_seconds
        claims: dict[str, Any] = {
            "iss": SESSION_ISSUER,
            "aud": SESSION_AUDIENCE,
            "sub": str(user_id),
            "iat": now,
            "exp": expires_at,
            "auth_time": int(auth_time),
            "email": email,
            "session_id": str(session_id),
            "amr": [{"method": "password", "timestamp": int(auth_time)}],
        }
        access = jwt.encode(claims, self._config.secret, algorithm="HS256")
        return Session(access, self._config.access_seconds, expires_at, refresh, user_id, email, session_id)


async def set_password(store: AccountStore, user_id: uuid.UUID, email: str, password: str) -> str:
    """Give an existing user (say the CLI's ``local`` user) an email and password, or replace them, so
    the dashboard shows that user's jobs and models; the user's sessions are signed out (their API
    keys stay: revoke them with ``zx keys revoke``). Returns the normalised email."""
    email = _checked(email, password)
    password_hash = await asyncio.to_thread(argon2.PasswordHasher().hash, password)
    await store.set_password(user_id, email, password_hash)
    await store.revoke_sessions(user_id, None)
    return email


def _checked(email: str, password: str) -> str:
    """The normalised email, or INVALID_ARGUMENT naming every bad field. Lengths are checked first:
    no pattern ever runs on more than MAX_EMAIL characters."""
    email = email or ""
    violations = []
    if len(email) > MAX_EMAIL + 64:  # room for surrounding blanks, still bounded
        violations.append(FieldViolation("email", f"must be at most {MAX_EMAIL} characters", "max_len"))
    else:
        email = email.strip().lower()
        if len(email) > MAX_EMAIL:
            violations.append(FieldViolation("email", f"must be at most {MAX_EMAIL} characters", "max_len"))
        elif not _EMAIL_RE.fullmatch(email):
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
