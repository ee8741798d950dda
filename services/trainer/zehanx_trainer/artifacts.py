"""The artifact store: a published model's files, content-addressed and verified on every read.

Layout (the same keys on every backend; only the trainer reads it: other services get a model as one
zip through ``TrainerService.ReadArtifact``, built by :mod:`zehanx_trainer.archive`)::

    objects/sha256/<first two hex digits>/<sha256>   one blob per distinct file content
    manifests/<artifact id>.json                      the artifact: path -> sha256 and size, metadata

The artifact id is the sha256 of the manifest's bytes, so a manifest is verified like a blob. A
publish writes every blob first and the manifest last; if it fails or is cancelled it removes what
it created, so an artifact either exists whole or not at all. Every read recomputes the sha256 and
refuses bytes that do not match.

Backends are :class:`BlobBackend` ports: :class:`LocalBlobBackend` (a folder, the default) and
``SupabaseBlobBackend`` (Supabase Storage, in :mod:`zehanx_trainer.clients.supabase`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from zehanx_runtime.errors import Internal, InvalidArgument, NotFound

MANIFEST_VERSION = 1
_ID = re.compile(r"^[0-9a-f]{64}$")
_PATH = re.compile(r"^[A-Za-z0-9_.+=@,~-]+(/[A-Za-z0-9_.+=@,~-]+)*$")
T = TypeVar("T")


class BlobMissing(Exception):
    """The backend has no object under this key."""


class BlobBackend(Protocol):
    """Where the bytes live. Blocking calls; the store runs them off the event loop."""

    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key``; False when the key already existed (nothing written)."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises :class:`BlobMissing`."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        ...

    def uri(self, key: str) -> str:
        """A URI naming ``key`` for humans and other services."""
        ...


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ArtifactManifest:
    """A published artifact: its files and free-form string metadata."""

    artifact_id: str
    created_time: str
    files: dict[str, ArtifactFile]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files.values())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key(sha256: str) -> str:
    return f"objects/sha256/{sha256[:2]}/{sha256}"


def manifest_key(artifact_id: str) -> str:
    return f"manifests/{artifact_id}.json"


def _manifest_bytes(
    created_time: str, files: Mapping[str, ArtifactFile], metadata: Mapping[str, str]
) -> bytes:
    body = {
        "version": MANIFEST_VERSION,
        "created_time": created_time,
        "files": {p: {"sha256": f.sha256, "size_bytes": f.size_bytes} for p, f in sorted(files.items())},
        "metadata": dict(sorted(metadata.items())),
    }
    return json.dumps(body, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def _parse_manifest(artifact_id: str, data: bytes) -> ArtifactManifest:
    try:
        body = json.loads(data)
        if body["version"] != MANIFEST_VERSION:
            raise ValueError(f"manifest version {body['version']!r} is not {MANIFEST_VERSION}")
        files = {
            path: ArtifactFile(path=path, sha256=str(entry["sha256"]), size_bytes=int(entry["size_bytes"]))
            for path, entry in body["files"].items()
        }
        metadata = {str(k): str(v) for k, v in body.get("metadata", {}).items()}
        return ArtifactManifest(artifact_id, str(body["created_time"]), files, metadata)
    except (ValueError, KeyError, TypeError) as exc:
        raise Internal(
            f"artifact {artifact_id} has an unreadable manifest: {exc}",
            reason="ARTIFACT_CORRUPT",
            metadata={"artifact_id": artifact_id},
        ) from None


def check_artifact_id(artifact_id: str) -> str:
    if not _ID.match(artifact_id):
        raise InvalidArgument(
            "artifact id must be 64 lowercase hex digits",
            reason="BAD_ARTIFACT_ID",
            metadata={"id": artifact_id[:80]},
        )
    return artifact_id


async def _finish(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a thread; if we are cancelled meanwhile, wait for it to end first.

    A cancelled await would otherwise leave the thread running, and the rollback could race a write
    that lands after it.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class ArtifactStore:
    """Content-addressed artifacts over any :class:`BlobBackend`."""

    def __init__(self, backend: BlobBackend) -> None:
        self.backend = backend

    async def publish(
        self, files: Mapping[str, bytes], metadata: Mapping[str, str] | None = None
    ) -> ArtifactManifest:
        """Store ``files`` (path -> bytes) as one artifact; all or nothing."""
        if not files:
            raise InvalidArgument("an artifact needs at least one file")
        for path in files:
            if not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
                raise InvalidArgument(f"bad artifact file path {path!r:.120}", reason="BAD_ARTIFACT_PATH")
        entries = {
            path: ArtifactFile(path=path, sha256=sha256_hex(data), size_bytes=len(data))
            for path, data in files.items()
        }
        created_time = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        manifest = _manifest_bytes(created_time, entries, metadata or {})
        artifact_id = sha256_hex(manifest)
        created: list[str] = []
        try:
            written: set[str] = set()
            for path, data in files.items():
                key = object_key(entries[path].sha256)
                if key in written:
                    continue
                written.add(key)
                if await _finish(self.backend.put, key, data):
                    created.append(key)
            key = manifest_key(artifact_id)
            if await _finish(self.backend.put, key, manifest):
                created.append(key)
        except BaseException:
            # Manifest first: once it is gone the artifact does not exist, whatever else fails.
            for key in reversed(created):
                with contextlib.suppress(Exception):
                    await _finish(self.backend.delete, key)
            raise
        return ArtifactManifest(artifact_id, created_time, entries, dict(metadata or {}))

    async def manifest(self, artifact_id: str) -> ArtifactManifest:
        check_artifact_id(artifact_id)
        try:
            data = await asyncio.to_thread(self.backend.get, manifest_key(artifact_id))
        except BlobMissing:
            raise NotFound(
                f"no artifact {artifact_id}",
                reason="ARTIFACT_NOT_FOUND",
                metadata={"artifact_id": artifact_id},
            ) from None
        if sha256_hex(data) != artifact_id:
            raise Internal(
                f"artifact {artifact_id}: manifest bytes do not match their sha256",
                reason="ARTIFACT_CORRUPT",
                metadata={"artifact_id": artifact_id},
            )
        return _parse_manifest(artifact_id, data)

    async def read(self, manifest: ArtifactManifest, path: str) -> bytes:
        """One file of an artifact, verified against the manifest's sha256 and size."""
        entry = manifest.files.get(path)
        if entry is None:
            raise NotFound(
                f"artifact {manifest.artifact_id} has no file {path!r:.120}", reason="ARTIFACT_FILE_NOT_FOUND"
            )
        try:
            data = await asyncio.to_thread(self.backend.get, object_key(entry.sha256))
        except BlobMissing:
            raise Internal(
                f"artifact {manifest.artifact_id}: the blob of {path} is missing",
                reason="ARTIFACT_CORRUPT",
                metadata={"artifact_id": manifest.artifact_id, "path": path},
            ) from None
        if len(data) != entry.size_bytes or sha256_hex(data) != entry.sha256:
            raise Internal(
                f"artifact {manifest.artifact_id}: {path} does not match its sha256 (corrupted or tampered)",
                reason="ARTIFACT_CORRUPT",
                metadata={"artifact_id": manifest.artifact_id, "path": path},
            )
        return data

    async def read_all(self, manifest: ArtifactManifest) -> dict[str, bytes]:
        return {path: await self.read(manifest, path) for path in sorted(manifest.files)}

    def uri(self, artifact_id: str) -> str:
        """URI of an artifact's manifest."""
        return self.backend.uri(manifest_key(artifact_id))

    def file_uri(self, manifest: ArtifactManifest, path: str) -> str:
        return self.backend.uri(object_key(manifest.files[path].sha256))


class LocalBlobBackend:
    """Blobs as files under a root folder; every write lands whole (temp file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _PATH.match(key) or ".." in key.split("/"):
            raise InvalidArgument(f"bad key {key!r:.120}")
        return self.root / key

    def put(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, target)  # atomic, and never replaces an object a concurrent publish wrote
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(key) from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()
