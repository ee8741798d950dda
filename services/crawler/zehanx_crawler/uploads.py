"""Files users uploaded to the gateway, as the gateway sent them here (``CrawlerService.PutSourceFile``).

The crawler never opens the gateway's upload folder (the two may run on different machines). Before a
build that names ``upload_id`` sources, the gateway streams each file here; it is checked on arrival
(:mod:`zehanx_runtime.transfer`) and kept as ``<root>/<upload id>/<file name>``, one file per upload.
A build then reads it like a local file, and names it to the user as ``upload <id> (<file name>)``,
never by a path on any host.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from zehanx_runtime.errors import InvalidArgument, NotFound
from zehanx_runtime.transfer import ReceivedFile

#: A file name as uploaded: no folders, no control characters, not "." or "..".
_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")


def upload_label(upload_id: str, name: str) -> str:
    """How the user knows an upload, in provenance, messages and warnings."""
    return f"upload {upload_id} ({name})"


class UploadInbox:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @staticmethod
    def check(upload_id: str, name: str) -> tuple[str, str]:
        try:
            canonical = str(uuid.UUID(upload_id))
        except ValueError:
            raise InvalidArgument(
                f"upload_id {upload_id[:80]!r} is not a UUID", reason="BAD_UPLOAD_ID"
            ) from None
        if not _NAME.match(name) or name in (".", "..") or name.startswith("."):
            raise InvalidArgument(f"{name[:80]!r} is not a file name", reason="BAD_FILE_NAME")
        return canonical, name

    def keep(self, upload_id: str, received: ReceivedFile) -> Path:
        """Move a verified file into place (blocking); an earlier copy of the same upload is replaced."""
        upload_id, name = self.check(upload_id, received.info.name)
        folder = self.root / upload_id
        fresh = self.root / f".new-{uuid.uuid4().hex}"
        fresh.mkdir(parents=True)
        try:
            os.replace(received.path, fresh / name)
            old = self.root / f".old-{uuid.uuid4().hex}"
            if folder.exists():
                os.replace(folder, old)
            os.replace(fresh, folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
        return folder / name

    def resolve(self, upload_id: str) -> Path:
        """The file of an upload the gateway sent; NOT_FOUND when it sent none."""
        try:
            folder = self.root / str(uuid.UUID(upload_id))
        except ValueError:
            raise InvalidArgument(
                f"upload_id {upload_id[:80]!r} is not a UUID", reason="BAD_UPLOAD_ID"
            ) from None
        files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        if len(files) != 1:
            raise NotFound(
                f"upload {upload_id} was not sent to this crawler (the gateway sends it with "
                "PutSourceFile before the build)",
                reason="UPLOAD_NOT_RECEIVED",
            )
        return files[0]
