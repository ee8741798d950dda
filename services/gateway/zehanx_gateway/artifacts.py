"""Where model archives live: a port, and a local content-addressed folder behind it.

The gateway keeps the archives it serves: the orchestrator streams each published model from the
trainer (``TrainerService.ReadArtifact``) and puts it here; DownloadModel reads it and DeleteModel
removes it. :class:`LocalArtifactStore` keeps each archive at ``<root>/sha256/<aa>/<full hex digest>``,
written through a temporary file and an atomic rename, and verifies the SHA-256 of the whole file
before serving any byte of it: a corrupted or truncated archive is DATA_LOSS, never silently served.

An archive never changes once stored, so it is hashed once per process: after a successful check the
file's identity (inode, size, modification and change times) is remembered, and later reads of the
same unchanged file (a resumed download) skip the hash. A read at ``offset == size`` sends nothing and
hashes nothing. (Stamping at ``put`` instead would trust a file rewritten in place within the same
file-system clock tick; the first read pays for one hash instead.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from zehanx_gateway.domain import DataLoss, OutOfRange

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_READ = 1024 * 1024
#: Verified archives remembered per process (least recently used dropped first).
_VERIFIED_CACHE = 4096


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    sha256: str
    size: int


class ArtifactStore(Protocol):
    """Content-addressed archive storage."""

    async def put(self, chunks: Iterable[bytes]) -> ArtifactInfo:
        """Store bytes; returns their SHA-256 and size (storing the same bytes twice keeps one copy)."""
        ...

    async def size(self, sha256: str) -> int:
        """Size of a stored archive; DATA_LOSS when it is missing."""
        ...

    def read(self, sha256: str, *, offset: int = 0, chunk_size: int = _READ) -> AsyncIterator[bytes]:
        """The archive's bytes from ``offset``, verified against ``sha256`` before the first chunk."""
        ...

    async def delete(self, sha256: str) -> bool:
        """Remove an archive; False when it was not there."""
        ...


class LocalArtifactStore:
    """Archives in a local folder, named by their SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        #: sha256 -> identity of the file whose bytes were last verified to hash to it.
        self._verified: OrderedDict[str, tuple[int, int, int, int, int]] = OrderedDict()

    def path_of(self, sha256: str) -> Path:
        if not _DIGEST.match(sha256):
            raise ValueError(f"not a lower-case hex SHA-256: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    async def put(self, chunks: Iterable[bytes]) -> ArtifactInfo:
        return await asyncio.to_thread(self._put, chunks)

    def _put(self, chunks: Iterable[bytes]) -> ArtifactInfo:
        staging = self.root / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, temp_name = tempfile.mkstemp(dir=staging)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            final = self.path_of(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp_name, final)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return ArtifactInfo(sha256=sha256, size=size)

    async def size(self, sha256: str) -> int:
        try:
            return (await asyncio.to_thread(self.path_of(sha256).stat)).st_size
        except FileNotFoundError:
            raise _missing(sha256) from None

    async def read(self, sha256: str, *, offset: int = 0, chunk_size: int = _READ) -> AsyncIterator[bytes]:
        path = self.path_of(sha256)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise _missing(sha256) from None
        try:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            if offset > size:
                raise OutOfRange(
                    f"offset {offset} is beyond the archive's {size} bytes", reason="OFFSET_BEYOND_END"
                )
            if offset == size:
                return  # nothing to send (a finished download resumed): nothing to verify either
            identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            if self._verified.get(sha256) == identity:
                self._verified.move_to_end(sha256)
            else:
                actual = await asyncio.to_thread(_hash_file, handle)
                if actual != sha256:
                    self._verified.pop(sha256, None)
                    raise DataLoss(
                        f"the stored archive {sha256} is corrupted (its bytes hash to {actual})",
                        reason="ARCHIVE_CORRUPTED",
                    )
                self._verified[sha256] = identity
                if len(self._verified) > _VERIFIED_CACHE:
                    self._verified.popitem(last=False)
            handle.seek(offset)
            while True:
                chunk = await asyncio.to_thread(handle.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def delete(self, sha256: str) -> bool:
        self._verified.pop(sha256, None)
        try:
            await asyncio.to_thread(self.path_of(sha256).unlink)
        except FileNotFoundError:
            return False
        return True


def _hash_file(handle: object) -> str:
    digest = hashlib.sha256()
    handle.seek(0)  # type: ignore[attr-defined]
    while block := handle.read(_READ):  # type: ignore[attr-defined]
        digest.update(block)
    return digest.hexdigest()


def _missing(sha256: str) -> DataLoss:
    return DataLoss(f"the archive {sha256} is missing from the artifact store", reason="ARCHIVE_MISSING")
