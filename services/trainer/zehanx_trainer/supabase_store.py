"""Supabase Storage as a :class:`~zehanx_trainer.artifacts.BlobBackend` (the ``supabase`` SDK).

Used when the trainer is configured with a Supabase URL and service key. The keys and the
content-addressed layout are those of :mod:`zehanx_trainer.artifacts`; integrity is checked by the
store above this backend (sha256 on every read), not trusted to the network.

SDK behaviour designed around (supabase 2.34.1 / storage3): API failures raise ``StorageApiError``
with ``status`` and ``code``; transport failures surface as raw ``httpx`` exceptions; an upload to an
existing key without upsert answers 409 ``Duplicate``, which for content-addressed blobs means the
same bytes are already there.
"""

from __future__ import annotations

from typing import Any

import httpx
from zehanx_runtime.errors import Unavailable

from zehanx_trainer.artifacts import BlobMissing


class SupabaseBlobBackend:
    """Blobs in one Supabase Storage bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    @classmethod
    def connect(
        cls,
        url: str,
        service_key: str,
        bucket: str,
        *,
        timeout_s: int = 120,
        http_client: httpx.Client | None = None,
    ) -> SupabaseBlobBackend:
        """A backend on a service-role client (never signed in as a user: see supabase-py#762)."""
        from supabase import ClientOptions, create_client

        options = ClientOptions(
            storage_client_timeout=timeout_s,
            auto_refresh_token=False,
            persist_session=False,
            httpx_client=http_client,
        )
        return cls(create_client(url, service_key, options=options), bucket)

    def _bucket(self) -> Any:
        return self._client.storage.from_(self.bucket)

    def put(self, key: str, data: bytes) -> bool:
        from storage3.exceptions import StorageApiError

        try:
            self._bucket().upload(
                key,
                data,
                {"content-type": "application/octet-stream", "cache-control": "31536000", "upsert": "false"},
            )
        except StorageApiError as exc:
            if str(exc.status) == "409" or exc.code == "Duplicate":
                return False
            raise _unavailable("upload", key, exc) from exc
        except httpx.HTTPError as exc:
            raise _unavailable("upload", key, exc) from exc
        return True

    def get(self, key: str) -> bytes:
        from storage3.exceptions import StorageApiError

        try:
            return self._bucket().download(key)
        except StorageApiError as exc:
            if str(exc.status) in ("400", "404") and exc.code in ("not_found", "NoSuchKey", "InternalError"):
                raise BlobMissing(key) from exc
            if "not found" in str(exc.message).lower():
                raise BlobMissing(key) from exc
            raise _unavailable("download", key, exc) from exc
        except httpx.HTTPError as exc:
            raise _unavailable("download", key, exc) from exc

    def delete(self, key: str) -> None:
        from storage3.exceptions import StorageApiError

        try:
            self._bucket().remove([key])
        except (StorageApiError, httpx.HTTPError) as exc:
            raise _unavailable("remove", key, exc) from exc

    def uri(self, key: str) -> str:
        return f"supabase://{self.bucket}/{key}"


def _unavailable(action: str, key: str, exc: Exception) -> Unavailable:
    detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return Unavailable(
        f"Supabase Storage {action} of {key} failed: {detail}",
        reason="ARTIFACT_STORE_UNAVAILABLE",
        metadata={"backend": "supabase", "action": action},
    )
