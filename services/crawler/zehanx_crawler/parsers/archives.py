"""zip, tar (plain, gz, bz2, xz) and single-file gzip/bzip2/xz, expanded in memory under hard caps.

Sizes written in archive headers are not trusted: every member is read in chunks and counted, and the
read stops at the cap. A member that expands more than ``max_ratio`` times (and past 8 MiB), an archive
that expands past ``max_bytes`` or holds more than ``max_members`` files is refused as a bomb. Nothing is
written to disk, so member paths (``../../etc``) cannot escape anywhere. Links, devices, folders, hidden
files and macOS resource forks are skipped.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from zehanx_runtime.errors import FailedPrecondition, ResourceExhausted

from zehanx_crawler.model import Resource
from zehanx_crawler.sniff import Format

_CHUNK = 1024 * 1024
_RATIO_FLOOR = 8 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int
    max_members: int
    max_ratio: float
    max_depth: int


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class _Budget:
    def __init__(self, archive: str, limits: ArchiveLimits, compressed: int) -> None:
        self.archive = archive
        self.limits = limits
        self.compressed = max(1, compressed)
        self.used = 0

    def read(self, stream: BinaryIO, member: str, member_compressed: int | None) -> bytes:
        out = io.BytesIO()
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                return out.getvalue()
            self.used += len(chunk)
            size = out.tell() + len(chunk)
            if self.used > self.limits.max_bytes:
                raise ResourceExhausted(
                    f"{self.archive} expands past {_human(self.limits.max_bytes)} (stopped while reading "
                    f"{member}); refused as an archive bomb or an oversized archive",
                    reason="ARCHIVE_TOO_LARGE",
                    metadata={"source": self.archive, "limit_bytes": str(self.limits.max_bytes)},
                )
            basis = member_compressed if member_compressed else self.compressed
            if size > _RATIO_FLOOR and size / max(1, basis) > self.limits.max_ratio:
                raise ResourceExhausted(
                    f"{self.archive}: {member} expands more than {self.limits.max_ratio:.0f}x "
                    f"({_human(basis)} compressed, already {_human(size)}); refused as an archive bomb",
                    reason="ARCHIVE_BOMB",
                    metadata={"source": self.archive, "member": member},
                )
            out.write(chunk)


def _skip(name: str) -> bool:
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _member(parent: Resource, name: str, data: bytes) -> Resource:
    return Resource(
        uri=f"{parent.uri}!/{name}",
        name=name,
        data=data,
        fetched_at=parent.fetched_at,
        sha256=parent.sha256,
        licence=parent.licence,
        parent_uri=parent.parent_uri or parent.uri,
        depth=parent.depth + 1,
        source=parent.source,
    )


def _check_count(archive: str, count: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise ResourceExhausted(
            f"{archive} holds more than {limits.max_members} files; refused",
            reason="ARCHIVE_TOO_MANY_MEMBERS",
            metadata={"source": archive},
        )


def _zip(resource: Resource, limits: ArchiveLimits) -> list[Resource]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(resource.data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise FailedPrecondition(
            f"{resource.name}: not a readable zip archive ({exc})", reason="BAD_ARCHIVE"
        ) from None
    infos = [i for i in archive.infolist() if not i.is_dir() and not _skip(i.filename)]
    _check_count(resource.name, len(infos), limits)
    budget = _Budget(resource.name, limits, len(resource.data))
    members = []
    for info in infos:
        if info.flag_bits & 0x1:
            raise FailedPrecondition(f"{resource.name}: {info.filename} is encrypted", reason="BAD_ARCHIVE")
        if info.file_size > limits.max_bytes:
            raise ResourceExhausted(
                f"{resource.name}: {info.filename} declares {_human(info.file_size)} uncompressed, past the "
                f"{_human(limits.max_bytes)} cap; refused as an archive bomb or an oversized archive",
                reason="ARCHIVE_TOO_LARGE",
                metadata={"source": resource.name, "member": info.filename},
            )
        try:
            with archive.open(info) as stream:
                data = budget.read(stream, info.filename, info.compress_size)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise FailedPrecondition(
                f"{resource.name}: {info.filename} could not be read ({exc})", reason="BAD_ARCHIVE"
            ) from None
        members.append(_member(resource, info.filename, data))
    return members


def _tar(resource: Resource, limits: ArchiveLimits) -> list[Resource]:
    budget = _Budget(resource.name, limits, len(resource.data))
    members = []
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(resource.data), mode="r:*") as archive:
            for info in archive:
                if not info.isfile() or _skip(info.name):
                    continue
                count += 1
                _check_count(resource.name, count, limits)
                stream = archive.extractfile(info)
                if stream is None:
                    continue
                data = budget.read(stream, info.name, None)
                members.append(_member(resource, info.name, data))
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise FailedPrecondition(
            f"{resource.name}: not a readable tar archive ({exc})", reason="BAD_ARCHIVE"
        ) from None
    return members


def _single(resource: Resource, fmt: Format, limits: ArchiveLimits) -> list[Resource]:
    opener = {
        Format.GZIP: lambda b: gzip.GzipFile(fileobj=b),
        Format.BZIP2: lambda b: bz2.BZ2File(b),
        Format.XZ: lambda b: lzma.LZMAFile(b),
    }[fmt]
    budget = _Budget(resource.name, limits, len(resource.data))
    name = resource.name
    for ext in (".gz", ".gzip", ".bz2", ".xz"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    try:
        data = budget.read(opener(io.BytesIO(resource.data)), name, None)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise FailedPrecondition(
            f"{resource.name}: corrupt {fmt.value} data ({exc})", reason="BAD_ARCHIVE"
        ) from None
    if len(data) > 262 and data[257:262] == b"ustar":
        inner = Resource(
            uri=resource.uri,
            name=name,
            data=data,
            fetched_at=resource.fetched_at,
            sha256=resource.sha256,
            licence=resource.licence,
            parent_uri=resource.parent_uri,
            depth=resource.depth,
            source=resource.source,
        )
        return _tar(inner, limits)
    member = _member(resource, name, data)
    member.uri = resource.uri
    return [member]


def expand(resource: Resource, fmt: Format, limits: ArchiveLimits) -> list[Resource]:
    """The files inside an archive (one level); nested archives are expanded by the caller."""
    if resource.depth >= limits.max_depth:
        raise ResourceExhausted(
            f"{resource.name}: archives nested more than {limits.max_depth} deep; refused",
            reason="ARCHIVE_TOO_DEEP",
        )
    if fmt == Format.ZIP:
        return _zip(resource, limits)
    if fmt == Format.TAR:
        return _tar(resource, limits)
    return _single(resource, fmt, limits)
