"""Supabase Storage as a :class:`~zehanx_trainer.artifacts.BlobBackend` (storage3, the ``supabase`` SDK's
Storage client).

Used when the trainer is configured with a Supabase URL and a server key. The keys and the
content-addressed layout are those of :mod:`zehanx_trainer.artifacts`; integrity is checked by the
store above this backend (sha256 on every read), not trusted to the network.

SDK and service behaviour designed around (supabase / storage3 2.34.1, supabase/storage's
``src/internal/errors/codes.ts``):

- API failures raise ``StorageApiError`` with ``status`` and ``code`` read from the body's
  ``statusCode`` and ``error`` (storage3 ``_sync/file_api.py:81-92``); the service answers HTTP 400
  for every error below 500 and puts the real status in ``statusCode`` (``userStatusCode``).
  Transport failures surface as raw ``httpx`` exceptions.
- An upload to an existing key without upsert answers ``{"statusCode":"409","error":"Duplicate"}``,
  which for content-addressed blobs means the same bytes are already there.
- A missing bucket answers ``{"statusCode":"404","error":"Bucket not found"}`` (``ERRORS.NoSuchBucket``;
  newer renderers put ``NoSuchBucket`` in ``error``). On write the bucket is created, private, once
  (``create_bucket(id, options={"public": False})``) and the write retried; on read, or when it cannot
  be created, it is a configuration error naming ``ZX_TRAINER_SUPABASE_BUCKET``, never a missing blob.
- A key the service refuses (401/403, ``InvalidJWT``, ``Unauthorized``) is a configuration error
  naming ``ZX_TRAINER_SUPABASE_SERVICE_KEY``, not an outage.
- An object over the project's or the bucket's size limit answers ``EntityTooLarge``, status 413, "The
  object exceeded the maximum allowed size" (supabase.com/docs/guides/storage/debugging/error-codes;
  legacy body ``{"statusCode":"413","error":"Payload too large"}``). The Free plan caps one object at
  50 MB: a model larger than that is a configuration error that says so, never an outage to retry.

Keys. The new ``sb_secret_…`` keys are not JWTs: "A common mistake is sending a publishable or secret
key as a bearer token [...] The new API keys are not JWTs [...] put API keys in the apikey header"
(supabase.com/docs/guides/functions/auth-headers), and "Include the secret key directly in the apikey
header. An Authorization: Bearer header is not required" (supabase.com/kb/troubleshooting/
auth-error-401-unauthorized_missing_api_key-on-admin-endpoints-ac2afd). supabase-py's ``create_client``
always adds ``Authorization: Bearer <key>`` (supabase ``_sync/client.py:334-344``), so this backend
builds storage3's ``SyncStorageClient`` itself: an ``sb_secret_`` key goes in ``apikey`` alone (the
platform's gateway turns it into the service role); a legacy service_role JWT is sent both ways, as
the SDK does. A publishable key cannot write past Row Level Security and is refused at start.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
from zehanx_runtime.errors import FailedPrecondition, Unavailable

from zehanx_trainer.artifacts import BlobMissing

KEY_VARIABLE = "ZX_TRAINER_SUPABASE_SERVICE_KEY"
BUCKET_VARIABLE = "ZX_TRAINER_SUPABASE_BUCKET"
USER_AGENT = "zehanx-trainer"

_BUCKET_MISSING_CODES = {"bucket not found", "nosuchbucket"}
_DENIED_CODES = {"unauthorized", "invalidjwt", "accessdenied", "invalidsignature", "expiredtoken"}


def storage_headers(service_key: str) -> dict[str, str]:
    """The headers that carry ``service_key`` the way Supabase documents for its kind."""
    if service_key.startswith("sb_publishable_"):
        raise FailedPrecondition(
            f"{KEY_VARIABLE} is a publishable key (sb_publishable_…), which Row Level Security restricts; "
            "the trainer needs a secret key (sb_secret_…) or the legacy service_role key",
            reason="SUPABASE_KEY_NOT_SECRET",
            metadata={"variable": KEY_VARIABLE},
        )
    headers = {"apikey": service_key, "User-Agent": USER_AGENT}
    if not service_key.startswith("sb_secret_"):
        headers["Authorization"] = f"Bearer {service_key}"  # a legacy JWT key: as supabase-py sends it
    return headers


class SupabaseBlobBackend:
    """Blobs in one private Supabase Storage bucket, created on first write when missing."""

    def __init__(self, client: Any, bucket: str, *, create_bucket: bool = True) -> None:
        self._client = client
        self.bucket = bucket
        self._create_bucket = create_bucket
        self._bucket_lock = threading.Lock()
        self._bucket_created = False

    @classmethod
    def connect(
        cls,
        url: str,
        service_key: str,
        bucket: str,
        *,
        timeout_s: int = 120,
        create_bucket: bool = True,
        http_client: httpx.Client | None = None,
    ) -> SupabaseBlobBackend:
        """A backend on a server-key Storage client (never signed in as a user: see supabase-py#762)."""
        from storage3 import SyncStorageClient

        headers = storage_headers(service_key)
        session = http_client or httpx.Client(
            headers=headers, timeout=timeout_s, follow_redirects=True, http2=True
        )
        storage_url = url.rstrip("/") + "/storage/v1/"
        client = SyncStorageClient(storage_url, headers, http_client=session)
        return cls(client, bucket, create_bucket=create_bucket)

    def _bucket(self) -> Any:
        return self._client.from_(self.bucket)

    def put(self, key: str, data: bytes) -> bool:
        from storage3.exceptions import StorageApiError

        try:
            return self._upload(key, data)
        except StorageApiError as exc:
            if not _bucket_missing(exc):
                raise _classify("upload", key, exc, self.bucket) from exc
            self._ensure_bucket()
        try:
            return self._upload(key, data)
        except StorageApiError as exc:
            raise _classify("upload", key, exc, self.bucket) from exc

    def _upload(self, key: str, data: bytes) -> bool:
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
            raise
        except httpx.HTTPError as exc:
            raise _unavailable("upload", key, exc) from exc
        return True

    def _ensure_bucket(self) -> None:
        """Create the bucket, private, once; a bucket someone else created meanwhile is fine."""
        from storage3.exceptions import StorageApiError

        with self._bucket_lock:
            if self._bucket_created:
                return
            if not self._create_bucket:
                raise _bucket_missing_error(self.bucket, " (ZX_TRAINER_SUPABASE_CREATE_BUCKET is off)")
            try:
                self._client.create_bucket(self.bucket, options={"public": False})
            except StorageApiError as exc:
                if not (str(exc.status) == "409" or exc.code == "Duplicate"):
                    raise _classify("create bucket", self.bucket, exc, self.bucket) from exc
            except httpx.HTTPError as exc:
                raise _unavailable("create bucket", self.bucket, exc) from exc
            self._bucket_created = True

    def get(self, key: str) -> bytes:
        from storage3.exceptions import StorageApiError

        try:
            return self._bucket().download(key)
        except StorageApiError as exc:
            if _bucket_missing(exc) or _denied(exc):
                raise _classify("download", key, exc, self.bucket) from exc
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


def _bucket_missing(exc: Any) -> bool:
    return str(exc.code).lower() in _BUCKET_MISSING_CODES or "bucket not found" in str(exc.message).lower()


def _denied(exc: Any) -> bool:
    return str(exc.status) in ("401", "403") or str(exc.code).lower() in _DENIED_CODES


def _too_large(exc: Any) -> bool:
    return (
        str(exc.status) == "413"
        or str(exc.code).lower() in ("entitytoolarge", "payload too large")
        or "exceeded the maximum allowed size" in str(exc.message).lower()
    )


def _classify(action: str, key: str, exc: Any, bucket: str) -> Exception:
    if _bucket_missing(exc):
        return _bucket_missing_error(bucket)
    if _too_large(exc):
        return FailedPrecondition(
            f"Supabase Storage refused {key}: {getattr(exc, 'message', '') or 'the object is too large'}; "
            "the project's upload size limit (50 MB on the Free plan; Storage > Settings) or the bucket's "
            f"file size limit of {bucket!r} is below this model's size",
            reason="SUPABASE_OBJECT_TOO_LARGE",
            metadata={"backend": "supabase", "action": action},
        )
    if _denied(exc):
        return _denied_error(action, exc)
    return _unavailable(action, key, exc)


def _bucket_missing_error(bucket: str, why: str = "") -> FailedPrecondition:
    return FailedPrecondition(
        f"the Supabase Storage bucket {bucket!r} named by {BUCKET_VARIABLE} does not exist{why}; "
        "create it (private) in the Supabase dashboard, or let the trainer create it on its first write",
        reason="SUPABASE_BUCKET_MISSING",
        metadata={"backend": "supabase", "variable": BUCKET_VARIABLE},
    )


def _denied_error(action: str, exc: Any) -> FailedPrecondition:
    detail = getattr(exc, "message", None) or type(exc).__name__
    return FailedPrecondition(
        f"Supabase Storage refused to {action}: {detail}; {KEY_VARIABLE} must be a secret key (sb_secret_…) "
        "or the legacy service_role key of this project",
        reason="SUPABASE_KEY_REFUSED",
        metadata={"backend": "supabase", "action": action, "variable": KEY_VARIABLE},
    )


def _unavailable(action: str, key: str, exc: Exception) -> Unavailable:
    detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return Unavailable(
        f"Supabase Storage {action} of {key} failed: {detail}",
        reason="ARTIFACT_STORE_UNAVAILABLE",
        metadata={"backend": "supabase", "action": action},
    )
