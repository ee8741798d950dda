"""How a stored file crosses a service boundary: one header, then the bytes, checked on arrival.

Each store has one owner: the crawler owns its datasets, the trainer its model artifacts, the gateway
its download archives. No service opens another's folder (they may sit on different machines, or the
store may be a bucket). The owner answers a read with a server stream whose messages carry a ``part``
oneof: ``header`` (a ``zehanx.common.v1.FileHeader``: name, size, SHA-256, media type) first, then
``chunk`` bytes in order (``ReadDatasetFile``, ``ReadArtifact``).

Both ends use this module, so the rules live in one place:

- :func:`stream_file` (owner): the header, then chunks of at most :data:`CHUNK_BYTES` read from a
  local file off the event loop;
- :func:`receive_file` / :func:`receive_bytes` (reader): refuses a stream without a header first, a
  header larger than the reader accepts, more or fewer bytes than announced, or bytes whose SHA-256 is
  not the announced one or the one the reader was told to expect, before the reader uses any of it.
  The bytes are spooled to a temporary file (or kept in memory for small files); nothing half-received
  is left behind.

The module knows the messages only by their field names, so it does not depend on generated code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from zehanx_runtime.errors import Internal, ResourceExhausted

#: Bytes per chunk message: far below gRPC's message limit, large enough to keep the overhead low.
CHUNK_BYTES = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
R = TypeVar("R")


class _Header(Protocol):
    name: str
    size_bytes: int
    sha256: str
    media_type: str


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the owner announced and the reader verified."""

    name: str
    size_bytes: int
    sha256: str
    media_type: str


@dataclass(frozen=True)
class ReceivedFile:
    """A verified file spooled to ``path`` (the caller removes it, or calls :meth:`close`)."""

    info: FileInfo
    path: Path

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class TransferBroken(Internal):
    """The stream did not deliver what its header announced (reason TRANSFER_BROKEN), or the header
    announced another file than the reader expected (TRANSFER_UNEXPECTED_SHA256)."""

    def __init__(self, what: str, problem: str, *, reason: str = "TRANSFER_BROKEN") -> None:
        super().__init__(f"{what}: {problem}", reason=reason, metadata={"what": what[:200]})


async def stream_file(
    path: Path,
    info: FileInfo,
    make: Callable[..., R],
    header_type: Callable[..., Any],
    *,
    chunk_bytes: int = CHUNK_BYTES,
) -> AsyncIterator[R]:
    """The owner's side: ``make(header=header_type(...))``, then ``make(chunk=...)`` per block of ``path``.

    ``make`` is the response message class and ``header_type`` the ``FileHeader`` class. ``info`` is
    what the owner knows of the file; its size is checked again against the open file: a file that
    changed size is refused, not streamed (the reader checks the sha256).
    """
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        size = os.fstat(handle.fileno()).st_size
        if size != info.size_bytes:
            raise TransferBroken(info.name, f"the stored file is {size} bytes, not {info.size_bytes}")
        yield make(header=header_type(**header_fields(info)))
        while block := await asyncio.to_thread(handle.read, chunk_bytes):
            yield make(chunk=block)
    finally:
        handle.close()


def header_fields(info: FileInfo) -> dict[str, Any]:
    """Keyword arguments of a ``FileHeader`` message for ``info``."""
    return {
        "name": info.name,
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "media_type": info.media_type,
    }


def file_info(
    path: Path, *, name: str | None = None, media_type: str = "application/octet-stream"
) -> FileInfo:
    """Size and SHA-256 of a local file (blocking; run it in a thread for large files)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            size += len(block)
    return FileInfo(name=name or path.name, size_bytes=size, sha256=digest.hexdigest(), media_type=media_type)


def _info_of(header: _Header, what: str, max_bytes: int, expected_sha256: str | None) -> FileInfo:
    size, sha = int(header.size_bytes), str(header.sha256)
    if size < 0 or not _SHA256.match(sha):
        raise TransferBroken(what, "the header has no valid size and sha256")
    if size > max_bytes:
        raise ResourceExhausted(
            f"{what}: {size} bytes is more than this service accepts ({max_bytes} bytes)",
            reason="TRANSFER_TOO_LARGE",
            metadata={"what": what[:200], "size_bytes": str(size), "max_bytes": str(max_bytes)},
        )
    if expected_sha256 and sha != expected_sha256:
        raise TransferBroken(
            what,
            f"the owner sends sha256 {sha[:12]}…, expected {expected_sha256[:12]}…",
            reason="TRANSFER_UNEXPECTED_SHA256",
        )
    return FileInfo(name=str(header.name), size_bytes=size, sha256=sha, media_type=str(header.media_type))


async def _receive(
    responses: AsyncIterator[Any],
    what: str,
    max_bytes: int,
    expected_sha256: str | None,
    write: Callable[[bytes], object],
) -> FileInfo:
    info: FileInfo | None = None
    digest = hashlib.sha256()
    received = 0
    async for message in responses:
        part = message.WhichOneof("part")
        if info is None:
            if part != "header":
                raise TransferBroken(what, "the stream did not start with a header")
            info = _info_of(message.header, what, max_bytes, expected_sha256)
            continue
        if part != "chunk":
            raise TransferBroken(what, f"unexpected {part or 'empty'} message after the header")
        block = message.chunk
        received += len(block)
        if received > info.size_bytes:
            raise TransferBroken(what, f"more than the announced {info.size_bytes} bytes arrived")
        digest.update(block)
        write(block)
    if info is None:
        raise TransferBroken(what, "the stream ended before its header")
    if received != info.size_bytes:
        raise TransferBroken(what, f"the stream ended after {received} of {info.size_bytes} bytes")
    if digest.hexdigest() != info.sha256:
        raise TransferBroken(what, "the bytes do not match the announced sha256")
    return info


async def receive_bytes(
    responses: AsyncIterator[Any], *, what: str, max_bytes: int, expected_sha256: str | None = None
) -> tuple[FileInfo, bytes]:
    """A whole (small) file in memory, verified; see :func:`receive_file` for large ones."""
    parts: list[bytes] = []
    info = await _receive(responses, what, max_bytes, expected_sha256, parts.append)
    return info, b"".join(parts)


async def receive_file(
    responses: AsyncIterator[Any],
    *,
    what: str,
    max_bytes: int,
    spool_dir: Path | None = None,
    expected_sha256: str | None = None,
) -> ReceivedFile:
    """A file spooled to a temporary file in ``spool_dir``, verified; removed again on any failure."""
    if spool_dir is not None:
        os.makedirs(spool_dir, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="recv-", dir=spool_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            info = await _receive(responses, what, max_bytes, expected_sha256, out.write)
            out.flush()
        return ReceivedFile(info=info, path=path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
