"""Uploads: data files a user stores to use as job sources (``DataSource.upload_id``).

The bytes go to ``<upload root>/<user id>/<upload id>/<filename>``, a row in ``zehanx.uploads`` says
whose they are. A job's ``upload_id`` source is checked at CreateJob (it must be the caller's) and
turned into a ``local_path`` of that file by the orchestrator just before the crawler sees the job; the
crawler is allowed to read the upload root. So that nobody reads another user's upload by its path, a
``local_path`` source inside the upload root is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from zehanx_runtime import errors
from zehanx_runtime.errors import FieldViolation

from zehanx_gateway.domain import Principal, Upload

#: Longest file name in bytes most file systems store.
_NAME_MAX_BYTES = 255


class UploadStore(Protocol):
    async def add_upload(self, upload: Upload) -> Upload: ...

    async def get_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> Upload | None: ...

    async def upload_bytes(self, user_id: uuid.UUID) -> int: ...


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


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break


class UploadService:
    def __init__(self, store: UploadStore, root: Path, *, quota_bytes: int | None = None) -> None:
        self._store = store
        self._root = root
        self._quota = quota_bytes

    @property
    def root(self) -> Path:
        return self._root

    def path_of(self, upload: Upload) -> Path:
        return self._root / str(upload.user_id) / str(upload.id) / upload.filename

    async def upload(self, principal: Principal, filename: str, content: bytes) -> Upload:
        """Store the file, then its row; a failure leaves neither behind."""
        if len(filename.encode()) > _NAME_MAX_BYTES or filename.startswith("."):
            raise errors.InvalidArgument(
                "filename must be at most 255 bytes (UTF-8) and not start with '.'",
                violations=[
                    FieldViolation("filename", "at most 255 bytes, not starting with '.'", "filename.unfit")
                ],
            )
        if self._quota is not None:
            # Checked before writing (two uploads at once may pass it together: a soft limit).
            used = await self._store.upload_bytes(principal.user_id)
            if used + len(content) > self._quota:
                raise errors.ResourceExhausted(
                    f"your uploads would take {used + len(content)} bytes; the limit is {self._quota} "
                    "(ZX_GATEWAY_UPLOAD_QUOTA_BYTES)",
                    reason="UPLOAD_QUOTA_EXCEEDED",
                    metadata={"limit_bytes": str(self._quota), "used_bytes": str(used)},
                )
        upload = Upload(
            id=uuid.uuid4(),
            user_id=principal.user_id,
            filename=filename,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            create_time=datetime.now(UTC),
        )
        path = self.path_of(upload)
        try:
            await asyncio.to_thread(_write, path, content)
        except OSError as exc:
            raise errors.Unavailable(
                f"the upload could not be stored: {exc.strerror or exc}", reason="UPLOAD_STORE_FAILED"
            ) from None
        try:
            return await self._store.add_upload(upload)
        except BaseException:
            await asyncio.to_thread(_remove, path)
            raise

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
