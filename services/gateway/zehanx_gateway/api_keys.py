"""The caller's API keys over the API: the same keys (``zx_<id>_<secret>``, SHA-256 stored) and the
same table ``zx keys`` manages. The secret is returned once, by create; revoking works at once on
every replica (keys are looked up on every call, never cached)."""

from __future__ import annotations

import uuid
from typing import Protocol

from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_gateway.auth import new_api_key
from zehanx_gateway.domain import ApiKey, Principal


class ApiKeyStore(Protocol):
    async def add_api_key(
        self, user_id: uuid.UUID, key_id: str, secret_sha256: bytes, label: str
    ) -> ApiKey: ...

    async def list_api_keys(self, user_id: uuid.UUID | None = None) -> list[ApiKey]: ...

    async def revoke_user_api_key(self, user_id: uuid.UUID, key_id: str) -> ApiKey: ...


class ApiKeyService:
    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    async def create(self, principal: Principal, label: str) -> tuple[ApiKey, str]:
        """The new key and its whole secret (shown to the caller once, never stored)."""
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

    async def list(self, principal: Principal) -> list[ApiKey]:
        """The caller's keys, revoked ones included, newest first."""
        keys = await self._store.list_api_keys(principal.user_id)
        return sorted(keys, key=lambda k: (k.create_time, k.id), reverse=True)

    async def revoke(self, principal: Principal, key_id: str) -> ApiKey:
        return await self._store.revoke_user_api_key(principal.user_id, key_id)
