"""The caller's API keys over the API: the same keys (``zx_<id>_<secret>``, SHA-256 stored) and the
same table ``zx keys`` manages. The secret is returned once, by create; revoking works at once on
every replica (keys are looked up on every call, never cached).

A key outlives the session that made it: signing out (everywhere) and changing the password end
sessions, not keys (revoke those with RevokeApiKey or ``zx keys revoke``). So a browser session (a JWT)
may create a key only within ``recent_sign_in_seconds`` of its sign-in: a stolen access or refresh token
cannot be turned into lasting access. A caller using an API key may always create keys."""

from __future__ import annotations

import time
import uuid
from typing import Protocol

from zehanx_runtime.errors import FieldViolation, InvalidArgument, PermissionDenied

from zehanx_gateway.auth import new_api_key
from zehanx_gateway.domain import ApiKey, AuthMethod, Principal


class ApiKeyStore(Protocol):
    async def add_api_key(
        self, user_id: uuid.UUID, key_id: str, secret_sha256: bytes, label: str
    ) -> ApiKey: ...

    async def list_api_keys(self, user_id: uuid.UUID | None = None) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str, *, user_id: uuid.UUID | None = None) -> ApiKey: ...


class ApiKeyService:
    def __init__(self, store: ApiKeyStore, *, recent_sign_in_seconds: float = 600.0) -> None:
        self._store = store
        self._recent_sign_in_s = recent_sign_in_seconds

    async def create(self, principal: Principal, label: str) -> tuple[ApiKey, str]:
        """The new key and its whole secret (shown to the caller once, never stored)."""
        self._check_recent_sign_in(principal)
        if "\x00" in label:
            raise InvalidArgument(
                "label contains a NUL character",
                violations=[
                    FieldViolation("label", "must not contain NUL (U+0000) characters", "string.no_nul")
                ],
            )
        key = new_api_key()
        record = await self._store.add_api_key(principal.user_id, key.key_id, key.secret_sha256, label)
        return record, key.token

    def _check_recent_sign_in(self, principal: Principal) -> None:
        if principal.method == AuthMethod.API_KEY:
            return
        if principal.method != AuthMethod.JWT:
            raise PermissionDenied("this credential cannot create API keys", reason="RECENT_SIGN_IN_REQUIRED")
        limit = int(self._recent_sign_in_s)
        age = None if principal.auth_time is None else time.time() - principal.auth_time
        if age is None or age > self._recent_sign_in_s:
            when = (
                "says nothing about when you signed in"
                if age is None
                else f"is from {int(age) // 60} min ago"
            )
            raise PermissionDenied(
                f"creating an API key needs a recent sign-in (within {max(1, limit // 60)} min), and this "
                f"session's sign-in {when}: sign out, sign in again and create the key then",
                reason="RECENT_SIGN_IN_REQUIRED",
                metadata={"max_age_seconds": str(limit)},
            )

    async def list(self, principal: Principal) -> list[ApiKey]:
        """The caller's keys, revoked ones included, newest first."""
        keys = await self._store.list_api_keys(principal.user_id)
        return sorted(keys, key=lambda k: (k.create_time, k.id), reverse=True)

    async def revoke(self, principal: Principal, key_id: str) -> ApiKey:
        return await self._store.revoke_api_key(key_id, user_id=principal.user_id)
