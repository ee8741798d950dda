"""The downloadable archive of a stored model: one zip, the same bytes every time it is built.

``TrainerService.ReadArtifact`` streams it; the gateway keeps a copy to serve downloads. It is built
here, by the store's owner, from the artifact's files as :class:`~zehanx_trainer.artifacts.ArtifactStore`
reads them (each checked against the manifest's sha256 and size), whatever backend holds them (a
local folder or Supabase Storage). Entries are in name order with fixed timestamps and permissions, so
one artifact always gives one archive sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

from zehanx_runtime.transfer import FileInfo, file_info

from zehanx_trainer.artifacts import ArtifactManifest, ArtifactStore

MEDIA_TYPE = "application/zip"
#: Files zipped without compression (binary tensors).
STORED_SUFFIXES = (".safetensors",)
_EPOCH = (1980, 1, 1, 0, 0, 0)


async def build_archive(
    store: ArtifactStore, artifact_id: str, *, spool_dir: Path | None = None
) -> tuple[Path, FileInfo]:
    """Zip artifact ``artifact_id`` into a temporary file; the caller removes it.

    NOT_FOUND for an unknown artifact; INTERNAL ARTIFACT_CORRUPT when a file does not match the manifest.
    """
    manifest = await store.manifest(artifact_id)
    if spool_dir is not None:
        await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="archive-", suffix=".zip", dir=spool_dir)
    path = Path(name)
    try:
        with (
            os.fdopen(fd, "wb") as handle,
            zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as out,
        ):
            for entry in sorted(manifest.files):
                data = await store.read(manifest, entry)
                await asyncio.to_thread(_add, out, entry, data)
        info = await asyncio.to_thread(file_info, path, name=_archive_name(manifest), media_type=MEDIA_TYPE)
        return path, info
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


def _add(out: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    # Weights are float tensors that deflate barely shrinks, at ~35 MB/s on this machine (a 1 GiB
    # model would take half a minute to publish): stored as they are; text files are deflated.
    info.compress_type = zipfile.ZIP_STORED if name.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
    out.writestr(info, data)


def _archive_name(manifest: ArtifactManifest) -> str:
    return f"model-{manifest.artifact_id[:12]}.zip"
