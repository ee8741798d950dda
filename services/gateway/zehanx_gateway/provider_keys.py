"""The users' own provider keys (Groq, Firecrawl, E2B): sealed at rest, never shown back or logged.

Each key is sealed with AES-256-GCM under a key-encryption key derived (HKDF-SHA256) from the
gateway's ``ZX_GATEWAY_SECRETS_KEY`` (or ``$ZX_HOME/secrets-key``), with a fresh 96-bit nonce, and with
additional data naming its user and provider, so a sealed key copied to another row does not open.
Only a hint (a few characters of each end) is stored in the clear.

The orchestrator opens the job owner's keys (:meth:`ProviderKeyService.keys_for`) and sends each only to
the service that uses it, as call metadata; nothing here logs or returns a whole key.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zehanx_runtime import errors

from zehanx_gateway.domain import Principal, Provider, SealedProviderKey

SETTING = "ZX_GATEWAY_SECRETS_KEY"
_HKDF_INFO = b"zehanx provider keys v1"


class ProviderKeyStore(Protocol):
    async def put_provider_key(
        self, user_id: uuid.UUID, provider: Provider, nonce: bytes, sealed: bytes, hint: str
    ) -> SealedProviderKey: ...

    async def list_provider_keys(self, user_id: uuid.UUID) -> list[SealedProviderKey]: ...

    async def delete_provider_key(self, user_id: uuid.UUID, provider: Provider) -> None: ...


def derive_key(secret: str) -> bytes:
    """The AES-256 key-encryption key of a secrets-key setting (any string; a long random one)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret.encode())


def hint_of(secret: str) -> str:
    """First 4 and last 4 characters around an ellipsis ("gsk_…a1b2"); fewer for short keys, so at
    most half of any key shows."""
    n = min(4, len(secret) // 4)
    return f"{secret[:n]}…{secret[-n:]}" if n else "…"


def _aad(user_id: uuid.UUID, provider: Provider) -> bytes:
    return f"zehanx:{user_id}:{provider.value}".encode()


class ProviderKeyService:
    def __init__(self, store: ProviderKeyStore, secrets_key: str | None) -> None:
        self._store = store
        self._aead = AESGCM(derive_key(secrets_key)) if secrets_key else None

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise errors.FailedPrecondition(
                f"this gateway has no key to encrypt provider keys with: set {SETTING} (or let zx up "
                "create $ZX_HOME/secrets-key)",
                reason="SECRETS_KEY_UNSET",
                metadata={"setting": SETTING},
            )
        return self._aead

    async def set(self, principal: Principal, provider: Provider, secret: str) -> SealedProviderKey:
        cipher = self._cipher()
        nonce = os.urandom(12)
        sealed = cipher.encrypt(nonce, secret.encode(), _aad(principal.user_id, provider))
        return await self._store.put_provider_key(principal.user_id, provider, nonce, sealed, hint_of(secret))

    async def list(self, principal: Principal) -> list[SealedProviderKey]:
        return await self._store.list_provider_keys(principal.user_id)

    async def delete(self, principal: Principal, provider: Provider) -> None:
        await self._store.delete_provider_key(principal.user_id, provider)

    async def keys_for(self, user_id: uuid.UUID) -> Mapping[Provider, str]:
        """The user's keys, opened (for the orchestrator only). FAILED_PRECONDITION when one cannot be
        opened: a job must not quietly run on the operator's key instead of the user's."""
        stored = await self._store.list_provider_keys(user_id)
        if not stored:
            return {}
        cipher = self._cipher()
        opened: dict[Provider, str] = {}
        for item in stored:
            try:
                opened[item.provider] = cipher.decrypt(
                    item.nonce, item.sealed, _aad(user_id, item.provider)
                ).decode()
            except (InvalidTag, UnicodeDecodeError):
                raise errors.FailedPrecondition(
                    f"your stored {item.provider.value.title()} key ({item.hint}) cannot be opened with this "
                    f"gateway's {SETTING} (was it changed?); set the key again",
                    reason="PROVIDER_KEY_UNREADABLE",
                    metadata={"provider": item.provider.value},
                ) from None
        return opened
