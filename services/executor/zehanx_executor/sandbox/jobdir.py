"""The job folder: a size-capped tmpfs mounted by the host ``nosymfollow,nosuid,nodev``, filled with the
job's files, and read back after the run without following links.

Everything that touches the folder after the program ran goes through directory file descriptors with
``O_NOFOLLOW``, checks ``S_ISREG`` and ``st_nlink == 1``, and never chowns or chmods through a path
(judge0 CVE-2024-28185/28189, compiler-explorer #6026). ``nosymfollow`` on the mount is the second wall:
even a path lookup from the host through a planted symlink fails with ELOOP.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zehanx_executor.domain import JobFile
from zehanx_runtime.errors import ResourceExhausted

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_NOSYMFOLLOW = 0x100
MNT_DETACH = 0x2

MAX_COLLECTED_FILES = 10_000
MAX_DEPTH = 32
_COPY_CHUNK = 1 << 20


def mount_tmpfs(target: Path, *, size_bytes: int, uid: int, gid: int) -> None:
    """Mount a fresh tmpfs of ``size_bytes`` at ``target``, owned by ``uid:gid``, mode 0700."""
    opts = f"size={size_bytes},mode=0700,uid={uid},gid={gid}".encode()
    flags = MS_NOSUID | MS_NODEV | MS_NOSYMFOLLOW
    if _libc.mount(b"zx-job", str(target).encode(), b"tmpfs", flags, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):  # not mounted
            return
        if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def is_mountpoint(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


def _open_dir_chain(root_fd: int, parts: list[str], *, create: bool, uid: int, gid: int) -> int:
    """Open (and optionally create) ``parts`` below ``root_fd`` without following links; returns an fd."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    os.fchown(nfd, uid, gid)
                except FileExistsError:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            else:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A produced file found by :meth:`JobDir.scan`."""

    path: str
    size: int
    sha256: str
    inode: int


@dataclass(frozen=True, slots=True)
class _Seen:
    size: int
    sha256: str


class JobDir:
    """One job folder on the host. ``prepare`` → (the run) → ``collect`` → ``destroy``."""

    def __init__(self, path: Path, *, uid: int, gid: int, size_bytes: int, tmpfs: bool = True) -> None:
        self.path = path
        self.uid, self.gid, self.size_bytes = uid, gid, size_bytes
        self.tmpfs = tmpfs  # False only for the unsafe development runner: a plain folder, no size cap
        self.mounted = False
        self._inputs: dict[str, _Seen] = {}

    def prepare(self, files: Iterable[JobFile]) -> None:
        self.path.mkdir(mode=0o700)
        if self.tmpfs:
            mount_tmpfs(self.path, size_bytes=self.size_bytes, uid=self.uid, gid=self.gid)
        self.mounted = True
        root = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for f in files:
                self._write(root, f.path, f.data, f.executable)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG):
                raise ResourceExhausted(
                    f"the job's files do not fit in its disk limit of {self.size_bytes} bytes",
                    reason="JOB_FILES_TOO_LARGE",
                ) from exc
            raise
        finally:
            os.close(root)

    def _write(self, root: int, rel: str, data: bytes, executable: bool) -> None:
        *dirs, name = rel.split("/")
        dfd = _open_dir_chain(root, dirs, create=True, uid=self.uid, gid=self.gid)
        try:
            mode = 0o755 if executable else 0o644
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dfd)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view[:_COPY_CHUNK])
                    view = view[n:]
                os.fchown(fd, self.uid, self.gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)
        self._inputs[rel] = _Seen(len(data), hashlib.sha256(data).hexdigest())

    def disk_used(self) -> int:
        """Bytes in use in the job folder's tmpfs."""
        if not self.mounted or not self.tmpfs:
            return 0
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def scan(self, pattern: re.Pattern[str] | None) -> tuple[list[FoundFile], int]:
        """Regular, single-link files matching ``pattern`` that are new or changed since ``prepare``.
        Returns them (sorted by path) and how many entries were refused (links, specials, over caps).
        Call only once the job's processes are gone, so nothing changes under the scan."""
        found: list[FoundFile] = []
        rejected = 0
        if not self.mounted or pattern is None:
            return found, rejected
        root = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        stack: list[tuple[int, str, int]] = [(root, "", 0)]
        count = 0
        while stack:
            dfd, prefix, depth = stack.pop()
            try:
                try:
                    names = sorted(os.listdir(dfd))
                except OSError:
                    rejected += 1
                    continue
                for name in names:
                    count += 1
                    if count > MAX_COLLECTED_FILES:
                        rejected += 1
                        continue
                    rel = prefix + name
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except OSError:
                        rejected += 1
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        if depth >= MAX_DEPTH:
                            rejected += 1
                            continue
                        try:
                            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                        except OSError:
                            rejected += 1
                            continue
                        stack.append((sub, rel + "/", depth + 1))
                        continue
                    if not pattern.match(rel):
                        continue
                    item = self._check_file(dfd, name, rel)
                    if item is None:
                        rejected += 1
                    elif item is not _UNCHANGED:
                        assert isinstance(item, FoundFile)
                        found.append(item)
            finally:
                os.close(dfd)
        found.sort(key=lambda f: f.path)
        return found, rejected

    def _open_file(self, dfd: int, name: str) -> int | None:
        """Open a file of the job for reading: no symlink (O_NOFOLLOW), regular, exactly one link."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd)
        except OSError:
            return None  # a symlink (ELOOP) or gone
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            return None
        return fd

    def _check_file(self, dfd: int, name: str, rel: str) -> FoundFile | object | None:
        fd = self._open_file(dfd, name)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            digest = hashlib.sha256()
            size = 0
            while chunk := os.read(fd, _COPY_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            sha = digest.hexdigest()
        finally:
            os.close(fd)
        seen = self._inputs.get(rel)
        if seen is not None and seen.size == size and seen.sha256 == sha:
            return _UNCHANGED
        return FoundFile(rel, size, sha, st.st_ino)

    def read_chunks(self, found: FoundFile, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
        """(offset, data) chunks of a scanned file, opened again without following links."""
        *dirs, name = found.path.split("/")
        root = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            dfd = _open_dir_chain(root, dirs, create=False, uid=self.uid, gid=self.gid)
        finally:
            os.close(root)
        try:
            fd = self._open_file(dfd, name)
        finally:
            os.close(dfd)
        if fd is None or os.fstat(fd).st_ino != found.inode:
            if fd is not None:
                os.close(fd)
            raise OSError(errno.ESTALE, f"{found.path} changed after it was scanned")
        try:
            offset = 0
            while offset < found.size:
                data = os.read(fd, min(chunk_bytes, found.size - offset))
                if not data:
                    break
                yield offset, data
                offset += len(data)
        finally:
            os.close(fd)

    def destroy(self) -> None:
        if self.mounted and self.tmpfs:
            unmount(self.path)
        elif self.mounted:
            shutil.rmtree(self.path, ignore_errors=True)
        self.mounted = False
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()


_UNCHANGED = object()
