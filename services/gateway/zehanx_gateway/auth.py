"""Who is calling: API keys and Supabase Auth JWTs, checked for every RPC (unary and streaming alike).

The runtime's interceptor calls :meth:`Authenticator.check` before every non-health call. A caller
sends ``authorization: Bearer <credential>`` (or ``x-api-key: <key>``):

- an API key ``zx_<id>_<secret>``: looked up by id on every call (no cache, so a revoked key stops
  working at once on every replica) and compared by SHA-256 in constant time;
- a session of this gateway's own accounts (the edge's ``/auth/v1``): an HS256 JWT whose ``iss`` is
  :data:`SESSION_ISSUER`, verified only with the key the gateway generated (never a configured secret)
  and only with its own issuer and audience (:data:`SESSION_AUDIENCE`), so it is never a valid
  Supabase token and a Supabase token is never one of these;
- otherwise a JWT of the identity provider: HS256 with the project's secret (32 bytes or more), or
  RS256/ES256 against a JWKS (Supabase's asymmetric signing keys); ``exp`` is required, ``aud`` and
  ``iss`` are checked when configured (Supabase: ``authenticated`` and
  ``https://<ref>.supabase.co/auth/v1``), ``sub`` must be a UUID.

The principal records how the caller authenticated and, for a JWT, when the user last signed in
(``auth_time``, else the newest ``amr`` timestamp, else ``iat``): creating an API key from a browser
session needs a recent sign-in (see :mod:`zehanx_gateway.api_keys`).

The principal is put in a context variable: the check runs in the same asyncio task as the handler
(the interceptor awaits it just before calling the handler), so :func:`current_principal` inside a
handler returns the caller of that very call and never another's.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from zehanx_runtime import errors

from zehanx_gateway.domain import AuthMethod, Principal, StoredApiKey

API_KEY_PREFIX = "zx_"
_API_KEY_LENGTH = len("zx_") + 16 + 1 + 43
_API_KEY_RE = re.compile(r"^zx_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("zx_principal", default=None)


def current_principal() -> Principal:
    """The authenticated caller of the RPC being handled (set by :meth:`Authenticator.check`)."""
    principal = _principal.get()
    if principal is None:
        raise errors.Unauthenticated(
            "this call carries no verified credentials", reason="CREDENTIALS_MISSING"
        )
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _principal.set(principal)


# -- API keys --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key_id: str
    secret_sha256: bytes
    #: The whole key, shown once to its owner and never stored.
    token: str


def new_api_key() -> NewApiKey:
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return NewApiKey(key_id, hashlib.sha256(secret.encode()).digest(), f"{API_KEY_PREFIX}{key_id}_{secret}")


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    if len(token) != _API_KEY_LENGTH:
        return None
    match = _API_KEY_RE.match(token)
    return (match.group(1), match.group(2)) if match else None


class KeyLookup(Protocol):
    async def find_api_key(self, key_id: str) -> StoredApiKey | None: ...


async def check_api_key(keys: KeyLookup, credential: str) -> Principal:
    """The caller an API key ``zx_<id>_<secret>`` stands for: looked up by id, compared by SHA-256 in
    constant time. UNAUTHENTICATED when it is malformed, unknown, wrong or revoked (the one key check:
    the gateway's every call and ``zx up``'s test of its stored key both go through here)."""
    parsed = parse_api_key(credential)
    if parsed is None:
        raise _unauth("the API key is malformed", "API_KEY_MALFORMED")
    key_id, secret = parsed
    found = await keys.find_api_key(key_id)
    digest = hashlib.sha256(secret.encode()).digest()
    if found is None or not hmac.compare_digest(found.secret_sha256, digest):
        raise _unauth("the API key is not valid", "API_KEY_INVALID")
    if found.revoke_time is not None:
        raise _unauth("the API key has been revoked", "API_KEY_REVOKED")
    return Principal(user_id=found.user_id, method=AuthMethod.API_KEY, credential_id=key_id)


class UserRegistry(Protocol):
    async def ensure_user(self, user_id: uuid.UUID) -> None: ...


# -- JWTs ------------------------------------------------------------------------------------------

#: ``iss`` and ``aud`` of the sessions this gateway's own accounts sign: never Supabase's
#: (``https://<ref>.supabase.co/auth/v1``, ``authenticated``), so neither kind passes for the other.
SESSION_ISSUER = "urn:zehanx:gateway:session"
SESSION_AUDIENCE = "urn:zehanx:gateway"
#: The shortest HS256 secret accepted (RFC 7518 3.2: a key of at least the hash's size).
MIN_HS256_SECRET_BYTES = 32

#: Sent with the JWKS request: PyJWKClient's default is urllib's ``Python-urllib/3.x`` (SDK
#: ``jwt/jwks_client.py:162`` passes only the headers given), which Cloudflare-fronted JWKS endpoints
#: have answered with 403 (jpadilla/pyjwt#1121).
JWKS_USER_AGENT = "zehanx-gateway"


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """How to verify JWTs. At least one of ``secret``, ``jwks_url``, ``jwks_json``."""

    secret: str | None = None
    jwks_url: str | None = None
    jwks_json: str | None = None
    audience: str | None = "authenticated"
    issuer: str | None = None
    #: Clock skew allowed on ``exp``, ``nbf`` and ``iat``: PyJWT refuses ``iat > now + leeway``, so with
    #: none a token from an issuer whose clock is a moment ahead would be refused.
    leeway_seconds: float = 30.0
    #: Claims required besides ``exp``, ``sub`` (and ``aud``/``iss`` when configured).
    required_claims: tuple[str, ...] = ()
    #: How long a fetched JWKS is used before it is fetched again; a key removed from the JWKS stops
    #: verifying within about twice this (tokens verified with it are re-verified after this long too).
    jwks_cache_seconds: float = 300.0

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.jwks_url or self.jwks_json)


_VERIFIED_CACHE_SIZE = 10_000

_ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"]


class JwtVerifier:
    """Verifies a JWT's signature and claims; raises UNAUTHENTICATED with a precise reason."""

    def __init__(self, config: JwtConfig) -> None:
        if not config.enabled:
            raise ValueError("JwtVerifier needs a secret, a JWKS URL or a JWKS document")
        if config.secret and len(config.secret.encode()) < MIN_HS256_SECRET_BYTES:
            raise ValueError(
                f"the HS256 JWT secret is {len(config.secret.encode())} bytes: it must be at least "
                f"{MIN_HS256_SECRET_BYTES} (a short secret can be brute-forced from one token)"
            )
        self._config = config
        #: Tokens already verified, with their claims and until when the verification holds (``exp``;
        #: for JWKS-verified tokens at most ``jwks_cache_seconds``, so a key removed from the JWKS
        #: stops working): the same bytes verify the same way, so a reused token skips the crypto.
        self._verified: OrderedDict[str, tuple[Mapping[str, Any], float]] = OrderedDict()
        self._keyset = jwt.PyJWKSet.from_json(config.jwks_json) if config.jwks_json else None
        # No per-kid key cache (PyJWKClient's cache_keys never expires): the JWKS document itself is
        # cached for jwks_cache_seconds, so a removed key is noticed at the next fetch.
        self._client = (
            jwt.PyJWKClient(
                config.jwks_url,
                cache_keys=False,
                lifespan=config.jwks_cache_seconds,
                headers={"User-Agent": JWKS_USER_AGENT},
            )
            if config.jwks_url
            else None
        )

    async def verify(self, token: str) -> Mapping[str, Any]:
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            claims, until = cached
            if until > now:
                self._verified.move_to_end(token)
                return claims
            del self._verified[token]
        claims, fetched_key = await self._verify(token)
        until = float(claims["exp"]) + self._config.leeway_seconds
        if fetched_key:
            until = min(until, now + self._config.jwks_cache_seconds)
        self._verified[token] = (claims, until)
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> tuple[Mapping[str, Any], bool]:
        """The claims, and whether the key came from a fetched JWKS (which may drop it later)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauth("the credential is neither an API key nor a JWT", "CREDENTIALS_MALFORMED") from None
        alg = header.get("alg")
        if alg == "HS256":
            if not self._config.secret:
                raise _unauth("HS256 tokens are not accepted here", "TOKEN_ALGORITHM")
            key: Any = self._config.secret
            algorithms = ["HS256"]
            fetched = False
        elif alg in _ASYMMETRIC:
            key = await self._signing_key(header)
            algorithms = [alg]
            fetched = self._client is not None and self._keyset is None
        else:
            raise _unauth(f"token algorithm {alg!r} is not accepted", "TOKEN_ALGORITHM")
        options: dict[str, Any] = {"require": ["exp", "sub", *self._config.required_claims]}
        if self._config.audience:
            options["require"].append("aud")
        if self._config.issuer:
            options["require"].append("iss")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_seconds,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise _unauth("the token has expired", "TOKEN_EXPIRED") from None
        except jwt.InvalidAudienceError:
            raise _unauth("the token is for another audience", "TOKEN_AUDIENCE") from None
        except jwt.InvalidIssuerError:
            raise _unauth("the token is from another issuer", "TOKEN_ISSUER") from None
        except jwt.InvalidSignatureError:
            raise _unauth("the token's signature does not verify", "TOKEN_SIGNATURE") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauth(f"the token lacks the {exc.claim!r} claim", "TOKEN_CLAIMS") from None
        except jwt.InvalidTokenError as exc:
            raise _unauth(f"the token is not valid: {type(exc).__name__}", "TOKEN_INVALID") from None
        return claims, fetched

    async def _signing_key(self, header: Mapping[str, Any]) -> Any:
        kid = header.get("kid")
        if self._keyset is not None:
            for candidate in self._keyset.keys:
                if kid is None or candidate.key_id == kid:
                    return candidate.key
            raise _unauth("the token's signing key is not one of ours", "TOKEN_SIGNATURE")
        if self._client is None:
            raise _unauth("asymmetric tokens are not accepted here (no JWKS configured)", "TOKEN_ALGORITHM")
        client = self._client
        try:
            # PyJWKClient fetches with urllib (blocking): keep it off the event loop.
            signing = await asyncio.to_thread(client.get_signing_key, kid) if kid else None
            if signing is None:
                keys = await asyncio.to_thread(client.get_signing_keys)
                if len(keys) != 1:
                    raise _unauth("the token names no signing key (kid)", "TOKEN_SIGNATURE")
                signing = keys[0]
        except jwt.PyJWKClientConnectionError as exc:
            raise errors.Unavailable(
                "the signing keys (JWKS) cannot be fetched right now", reason="JWKS_UNAVAILABLE"
            ) from exc
        except jwt.PyJWKClientError:
            raise _unauth("the token's signing key is not one of ours", "TOKEN_SIGNATURE") from None
        return signing.key


def _unauth(message: str, reason: str) -> errors.Unauthenticated:
    return errors.Unauthenticated(message, reason=reason)


# -- the per-call check ----------------------------------------------------------------------------


class Authenticator:
    """The gateway's ``extra_check``: authenticates the caller and records the principal."""

    def __init__(
        self,
        keys: KeyLookup,
        users: UserRegistry,
        jwt_verifier: JwtVerifier | None = None,
        *,
        sessions: JwtVerifier | None = None,
    ) -> None:
        """``jwt_verifier``: the identity provider's JWTs (Supabase); ``sessions``: the sessions of this
        gateway's own accounts (``iss`` :data:`SESSION_ISSUER`), None where they are off."""
        self._keys = keys
        self._users = users
        self._jwt = jwt_verifier
        self._sessions = sessions
        self._known_users: OrderedDict[uuid.UUID, None] = OrderedDict()

    async def check(self, method: str, metadata: Mapping[str, str], request: Any) -> None:
        _principal.set(None)
        credential = _credential(metadata)
        if credential.startswith(API_KEY_PREFIX):
            principal = await check_api_key(self._keys, credential)
        elif self._jwt is not None or self._sessions is not None:
            principal = await self._token(credential)
        else:
            raise _unauth(
                "not an API key, and this gateway accepts no JWTs (no JWT secret or JWKS configured)",
                "CREDENTIALS_MALFORMED",
            )
        _principal.set(principal)

    async def _token(self, credential: str) -> Principal:
        # Which verifier is chosen by the unverified ``iss`` only; each then requires its own issuer,
        # audience and key, so a forged ``iss`` only picks a verifier that refuses the token.
        if _unverified_issuer(credential) == SESSION_ISSUER:
            if self._sessions is None:
                raise _unauth(
                    "this gateway's own sessions are off here (an identity provider signs users in)",
                    "TOKEN_ISSUER",
                )
            claims = await self._sessions.verify(credential)
        elif self._jwt is not None:
            claims = await self._jwt.verify(credential)
        else:
            raise _unauth(
                "not an API key nor a session of this gateway, and it accepts no other JWTs "
                "(no JWT secret or JWKS configured)",
                "CREDENTIALS_MALFORMED",
            )
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise _unauth("the token's subject is not a user id (UUID)", "TOKEN_CLAIMS") from None
        if user_id not in self._known_users:
            await self._users.ensure_user(user_id)
            self._known_users[user_id] = None
            if len(self._known_users) > 100_000:
                self._known_users.popitem(last=False)
        return Principal(
            user_id=user_id, method=AuthMethod.JWT, credential_id=str(user_id), auth_time=auth_time_of(claims)
        )


def _unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def auth_time_of(claims: Mapping[str, Any]) -> float | None:
    """When the user behind a JWT last signed in: ``auth_time`` (OpenID Connect; this gateway's sessions),
    else the newest ``amr`` timestamp (Supabase), else ``iat``; None when the token says nothing."""
    value = claims.get("auth_time")
    if _is_time(value):
        return float(value)
    amr = claims.get("amr")
    if isinstance(amr, list):
        stamps = [
            float(entry["timestamp"])
            for entry in amr
            if isinstance(entry, dict) and _is_time(entry.get("timestamp"))
        ]
        if stamps:
            return max(stamps)
    value = claims.get("iat")
    return float(value) if _is_time(value) else None


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2**40


def _credential(metadata: Mapping[str, str]) -> str:
    header = metadata.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauth("authorization must be 'Bearer <API key or JWT>'", "CREDENTIALS_MALFORMED")
        return value.strip()
    key = metadata.get("x-api-key")
    if key:
        return key.strip()
    raise _unauth(
        "no credentials: send 'authorization: Bearer <API key or JWT>' (create a key with `zx keys create`)",
        "CREDENTIALS_MISSING",
    )


def jwks_document(jwks: str | Mapping[str, Any]) -> str:
    """A JWKS as JSON text (accepts a mapping), validated as a key set."""
    text = jwks if isinstance(jwks, str) else json.dumps(jwks)
    jwt.PyJWKSet.from_json(text)
    return text
