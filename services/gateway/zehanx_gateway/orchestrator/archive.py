"""The downloadable archive of a model, received from its owner, the trainer.

The trainer owns the model artifacts (a local folder or a bucket the gateway never opens). At
publishing the gateway asks it for the model as one zip (``TrainerService.ReadArtifact``): the trainer
builds it from the artifact's verified files, always the same bytes for the same artifact, and streams
it; :mod:`zehanx_runtime.transfer` checks the size and sha256 the stream announced as the bytes arrive.
The gateway then keeps its own copy in its archive store to serve downloads, and takes the model card
for the model record from the zip.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zehanx_runtime import errors, transfer

#: Largest archive the gateway accepts from the trainer (the trainer's own cap on a model's files is
#: ZX_TRAINER_MAX_MODEL_BYTES, 1 GiB by default; zipped they are no larger).
MAX_ARCHIVE_BYTES = 8 * 1024**3
#: Largest model card taken into the model record.
MAX_CARD_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Archive:
    """A received, verified zip of a model in a temporary file (deleted on :meth:`close`)."""

    path: Path
    sha256: str
    size: int
    model_card: str

    def chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            while block := handle.read(_CHUNK):
                yield block

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


async def receive_archive(
    artifact_id: str, responses: AsyncIterator[Any], *, spool_dir: Path | None = None
) -> Archive:
    """Spool and verify the trainer's ``ReadArtifact`` stream, and read the model card from it."""
    received = await transfer.receive_file(
        responses,
        what=f"the archive of the trainer's artifact {artifact_id}",
        max_bytes=MAX_ARCHIVE_BYTES,
        spool_dir=spool_dir,
    )
    try:
        card = await asyncio.to_thread(_model_card, received.path, artifact_id)
    except BaseException:
        received.close()
        raise
    return Archive(received.path, received.info.sha256, received.info.size_bytes, card)


def _model_card(path: Path, artifact_id: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo("MODEL_CARD.md")
            except KeyError:
                return ""
            if info.file_size > MAX_CARD_BYTES:
                return ""
            with archive.open(info) as card:
                return card.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")
    except zipfile.BadZipFile as exc:
        raise errors.Internal(
            f"the trainer's archive of artifact {artifact_id} is not a zip file ({exc})",
            reason="ARTIFACT_CORRUPT",
            metadata={"artifact_id": artifact_id},
        ) from None
