"""zip, tar (plain, gz, bz2, xz) and single-file gzip/bzip2/xz, expanded in memory under hard caps.

Sizes written in archive headers are not trusted: every member is read in chunks and counted, and the
read stops at the cap. A member that expands more than ``max_ratio`` times (and past 8 MiB), an archive
that expands past ``max_bytes`` or lists more than ``max_members`` entries (files, folders, links: every
entry of a zip's central directory or a tar's headers) is refused as a bomb; a zip's central directory is
counted from its raw records before :mod:`zipfile` builds an object per entry. Nothing is
written to disk, so member paths (``../../etc``) cannot escape anywhere. Links, devices, folders, hidden
files and macOS resource forks are skipped.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import Protocol

from zehanx_runtime.errors import FailedPrecondition, ResourceExhausted

from zehanx_crawler.domain import Resource
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


class _Readable(Protocol):
    """A file-like source of bytes: a zip or tar member, a gzip/bz2/xz stream."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Budget:
    def __init__(self, archive: str, limits: ArchiveLimits, compressed: int) -> None:
        self.archive = archive
        self.limits = limits
        self.compressed = max(1, compressed)
        self.used = 0

    def read(self, stream: _Readable, member: str, member_compressed: int | None) -> bytes:
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
            f"{archive} lists more than {limits.max_members} entries; refused "
            "(ZX_CRAWLER_MAX_ARCHIVE_MEMBERS)",
            reason="ARCHIVE_TOO_MANY_MEMBERS",
            metadata={"source": archive, "limit_members": str(limits.max_members)},
        )


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_HEADER_SIZE = 46


def _zip_entries(data: bytes, stop_after: int) -> int:
    """How many entries a zip's central directory lists, counted the way :mod:`zipfile` will walk it
    (from the end record's size and position, not its entry count, which may lie), stopping once past
    ``stop_after``: at most ``stop_after + 1`` record headers are looked at, and no object is built.
    0 when there is no end record (:mod:`zipfile` then refuses the file)."""
    # As zipfile._EndRecData: the last 22 bytes when they are an end record without a comment, else
    # the last signature in the final 64 KiB + 22 bytes.
    end = len(data) - _EOCD.size
    if not (end >= 0 and data.startswith(b"PK\x05\x06", end) and data.endswith(b"\x00\x00")):
        end = data.rfind(b"PK\x05\x06", max(0, len(data) - (1 << 16) - _EOCD.size))
        if end < 0 or len(data) < end + _EOCD.size:
            return 0
    total, size_cd = _EOCD.unpack_from(data, end)[4:6]
    location = end
    locator = end - _ZIP64_LOCATOR.size
    if locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        record = locator - _ZIP64_EOCD.size
        if record >= 0 and data[record : record + 4] == b"PK\x06\x06":
            total, size_cd = _ZIP64_EOCD.unpack_from(data, record)[7:9]
            location = record
    if total > stop_after:
        return total
    # zipfile: the directory starts size_cd bytes before the end record (data may be prepended).
    pos = location - size_cd
    stop = location
    count = 0
    while 0 <= pos and pos + _CENTRAL_HEADER_SIZE <= stop and count <= stop_after:
        if data[pos : pos + 4] != b"PK\x01\x02":
            break
        name, extra, comment = struct.unpack_from("<3H", data, pos + 28)
        pos += _CENTRAL_HEADER_SIZE + name + extra + comment
        count += 1
    return count


def _zip(resource: Resource, limits: ArchiveLimits) -> list[Resource]:
    # Before zipfile reads the central directory into one ZipInfo per entry (5 M entries fit in
    # 256 MiB: gigabytes of objects), count its records (S2).
    _check_count(resource.name, _zip_entries(resource.data, limits.max_members), limits)
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
                # Every header counts (200 k folder entries in 1 MB of tar.gz took 5.5 s), and the
                # tarfile's own list of members stays within the cap.
                count += 1
                _check_count(resource.name, count, limits)
                if not info.isfile() or _skip(info.name):
                    continue
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
