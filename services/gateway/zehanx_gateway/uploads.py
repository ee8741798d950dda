"""Uploads: data files a user stores to use as job sources (``DataSource.upload_id``).

The bytes go to ``<upload root>/<user id>/<upload id>/<filename>``, a row in ``zehanx.uploads`` says
whose they are. A job's ``upload_id`` source is checked at CreateJob (it must be the caller's) and
turned into a ``local_path`` of that file by the orchestrator just before the crawler sees the job; the
crawler is allowed to read the upload root. So that nobody reads another user's upload by its path, a
``local_path`` source inside the upload root is refused.

Quota: an upload's bytes are charged before its file is written. The store checks the user's quota and
their uploads in progress and inserts the row pending, all under one per-user lock, so N uploads at
once cannot pass the quota together; the row is completed once the file is stored, or deleted (and
the file removed) when storing fails or the call is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from zehanx_runtime import errors
from zehanx_runtime.errors import FieldViolation
from zehanx_runtime.logging import get_logger

from zehanx_gateway.domain import Principal, Upload

#: Longest file name in bytes most file systems store.
_NAME_MAX_BYTES = 255
#: A pending upload older than this was left by a gateway that died while writing it.
_STALE_RESERVATION = timedelta(hours=1)

log = get_logger("zehanx.gateway.uploads")


class UploadStore(Protocol):
    async def reserve_upload(
        self, upload: Upload, *, quota_bytes: int | None, max_in_progress: int | None, stale_after: timedelta
    ) -> list[Upload]: ...

    async def complete_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> Upload: ...

    async def release_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> None: ...

    async def get_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> Upload | None: ...


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{uuid.uuid4().hex}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break


class UploadService:
    def __init__(
        self,
        store: UploadStore,
        root: Path,
        *,
        quota_bytes: int | None = None,
        max_in_progress: int | None = None,
    ) -> None:
        self._store = store
        self._root = root
        self._quota = quota_bytes
        self._max_in_progress = max_in_progress
        #: Clean-ups of failed or cancelled uploads still running (kept referenced until done).
        self._undoing: set[asyncio.Task[None]] = set()

    @property
    def root(self) -> Path:
        return self._root

    def path_of(self, upload: Upload) -> Path:
        return self._root / str(upload.user_id) / str(upload.id) / upload.filename

    async def upload(self, principal: Principal, filename: str, content: bytes) -> Upload:
        """Charge its bytes (the row, pending), store the file, complete the row; a failure or a
        cancelled call leaves neither behind. RESOURCE_EXHAUSTED beyond the quota or the number of
        uploads in progress."""
        if len(filename.encode()) > _NAME_MAX_BYTES or filename.startswith("."):
            raise errors.InvalidArgument(
                "filename must be at most 255 bytes (UTF-8) and not start with '.'",
                violations=[
                    FieldViolation("filename", "at most 255 bytes, not starting with '.'", "filename.unfit")
                ],
            )
        upload = Upload(
            id=uuid.uuid4(),
            user_id=principal.user_id,
            filename=filename,
            size_bytes=len(content),
            sha256=await asyncio.to_thread(_sha256, content),  # 32 MiB: about 0.1 s, off the loop
            create_time=datetime.now(UTC),
        )
        stale = await self._store.reserve_upload(
            upload,
            quota_bytes=self._quota,
            max_in_progress=self._max_in_progress,
            stale_after=_STALE_RESERVATION,
        )
        for left in stale:
            await asyncio.to_thread(_remove, self.path_of(left))
        path = self.path_of(upload)
        # The write runs in a thread that a cancelled call cannot stop: the clean-up waits for it, so
        # no file outlives its row (nor a row its file).
        write = asyncio.ensure_future(asyncio.to_thread(_write, path, content))
        try:
            await asyncio.shield(write)
            return await self._store.complete_upload(upload.id, user_id=upload.user_id)
        except BaseException as exc:
            undo = asyncio.ensure_future(self._undo(upload, write))
            self._undoing.add(undo)
            undo.add_done_callback(self._undoing.discard)
            with contextlib.suppress(Exception):
                await asyncio.shield(undo)
            if isinstance(exc, OSError):
                raise errors.Unavailable(
                    f"the upload could not be stored: {exc.strerror or exc}", reason="UPLOAD_STORE_FAILED"
                ) from None
            raise

    async def _undo(self, upload: Upload, write: asyncio.Future[None]) -> None:
        """Remove a failed upload's file (once its write has ended) and free its bytes."""
        with contextlib.suppress(BaseException):
            await write
        try:
            await asyncio.to_thread(_remove, self.path_of(upload))
            await self._store.release_upload(upload.id, user_id=upload.user_id)
        except Exception as exc:  # the reservation expires on its own (see _STALE_RESERVATION)
            log.warning("upload clean-up failed", upload_id=str(upload.id), error=str(exc))

    async def check_sources(self, principal: Principal, sources: Sequence[Mapping[str, Any]]) -> None:
        """CreateJob's check: every ``upload_id`` is one of the caller's uploads, and no ``local_path``
        points into the upload folder. INVALID_ARGUMENT naming each bad source otherwise."""
        violations: list[FieldViolation] = []
        for index, source in enumerate(sources):
            if source.get("upload_id"):
                if await self._find(principal.user_id, str(source["upload_id"])) is None:
                    violations.append(
                        FieldViolation(
                            f"job.sources[{index}].upload_id",
                            "no upload of yours has this id (UploadFile returns it)",
                            "UPLOAD_NOT_FOUND",
                        )
                    )
            elif source.get("local_path") and self.inside_root(str(source["local_path"])):
                violations.append(
                    FieldViolation(
                        f"job.sources[{index}].local_path",
                        "the upload folder (or a folder holding it) cannot be read by path: name "
                        "uploaded files by their upload_id",
                        "LOCAL_PATH_IN_UPLOADS",
                    )
                )
        if violations:
            raise errors.InvalidArgument(
                "; ".join(f"{v.field}: {v.description}" for v in violations),
                violations=violations,
                reason=violations[0].reason,
            )

    async def resolve(self, user_id: uuid.UUID, upload_id: str) -> Path:
        """The stored file of the user's upload (for the orchestrator)."""
        upload = await self._find(user_id, upload_id)
        if upload is None:
            raise errors.NotFound(
                f"upload {upload_id} is not one of the job owner's uploads",
                reason="UPLOAD_NOT_FOUND",
                metadata={"upload_id": upload_id},
            )
        path = self.path_of(upload)
        if not await asyncio.to_thread(path.is_file):
            raise errors.FailedPrecondition(
                f"the file of upload {upload_id} ({upload.filename}) is missing from the upload folder",
                reason="UPLOAD_MISSING",
                metadata={"upload_id": upload_id},
            )
        return path

    def inside_root(self, local_path: str) -> bool:
        """True when ``local_path`` (symlinks resolved as far as they exist) is in the upload folder, or
        is a folder that holds it (reading that folder would read every user's uploads)."""
        try:
            resolved = Path(local_path).expanduser().resolve()
        except (OSError, RuntimeError):
            return False
        root = self._root.expanduser().resolve()
        return resolved.is_relative_to(root) or root.is_relative_to(resolved)

    async def _find(self, user_id: uuid.UUID, upload_id: str) -> Upload | None:
        try:
            parsed = uuid.UUID(upload_id)
        except ValueError:
            return None
        return await self._store.get_upload(parsed, user_id=user_id)
