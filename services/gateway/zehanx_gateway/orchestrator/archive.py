"""The downloadable archive of a model, built from the trainer's stored artifact.

The trainer stores an artifact as ``manifests/<id>.json`` (path -> sha256 and size; the id is the
manifest's own sha256) and ``objects/sha256/<aa>/<sha256>`` blobs, and names it by the manifest's URI
(``TrainResult.artifact_uri``). The gateway reads that layout (never the trainer's code), checks every
byte against the manifest, and packs the files into one zip with fixed timestamps, so the same model
always makes the same archive (and the same sha256).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from zehanx_runtime import errors

_ID = re.compile(r"^[0-9a-f]{64}$")
_PATH = re.compile(r"^[A-Za-z0-9_.+=@,~-]+(/[A-Za-z0-9_.+=@,~-]+)*$")
_EPOCH = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Archive:
    """A zip of a model in a temporary file (deleted on :meth:`close`), and what it holds."""

    path: Path
    sha256: str
    size: int
    files: dict[str, int]
    model_card: str

    def chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            while block := handle.read(_CHUNK):
                yield block

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def _corrupt(artifact_id: str, what: str) -> errors.DomainError:
    return errors.Internal(
        f"the trainer's artifact {artifact_id} cannot be packed: {what}",
        reason="ARTIFACT_CORRUPT",
        metadata={"artifact_id": artifact_id},
    )


def _manifest_path(artifact_id: str, artifact_uri: str) -> Path:
    if not _ID.match(artifact_id):
        raise _corrupt(artifact_id, "its id is not a sha256")
    parsed = urlparse(artifact_uri)
    if parsed.scheme != "file":
        raise errors.FailedPrecondition(
            f"the trainer stored the model at {artifact_uri!r}; this gateway packs archives only from a "
            "local artifact folder (file:// URIs) shared with the trainer",
            reason="ARTIFACT_STORE_UNSUPPORTED",
            metadata={"artifact_uri": artifact_uri[:200]},
        )
    path = Path(unquote(parsed.path))
    if path.name != f"{artifact_id}.json" or path.parent.name != "manifests":
        raise _corrupt(artifact_id, f"its URI {artifact_uri!r} does not name its manifest")
    return path


def build_archive(artifact_id: str, artifact_uri: str, *, spool_dir: Path | None = None) -> Archive:
    """Read and verify the artifact, and zip it (blocking; run it in a thread)."""
    manifest_path = _manifest_path(artifact_id, artifact_uri)
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise errors.FailedPrecondition(
            f"the trainer's artifact {artifact_id} is not at {manifest_path}: the gateway and the trainer "
            "must share the artifact folder (ZX_HOME/artifacts)",
            reason="ARTIFACT_NOT_REACHABLE",
        ) from None
    if hashlib.sha256(raw).hexdigest() != artifact_id:
        raise _corrupt(artifact_id, "its manifest does not match its sha256")
    try:
        entries = json.loads(raw)["files"]
        files = {str(p): (str(e["sha256"]), int(e["size_bytes"])) for p, e in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _corrupt(artifact_id, f"unreadable manifest ({exc})") from None
    root = manifest_path.parent.parent
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(prefix="model-", suffix=".zip", dir=spool_dir, delete=False)
    out_path = Path(handle.name)
    card = ""
    try:
        with handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(files):
                sha, size = files[name]
                if not _PATH.match(name) or any(part in (".", "..") for part in name.split("/")):
                    raise _corrupt(artifact_id, f"bad file path {name!r:.100}")
                if not _ID.match(sha):
                    raise _corrupt(artifact_id, f"bad sha256 of {name}")
                try:
                    data = (root / "objects" / "sha256" / sha[:2] / sha).read_bytes()
                except FileNotFoundError:
                    raise _corrupt(artifact_id, f"the blob of {name} is missing") from None
                if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                    raise _corrupt(artifact_id, f"{name} does not match its sha256")
                if name == "MODEL_CARD.md":
                    card = data.decode("utf-8", errors="replace")
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        digest = hashlib.sha256()
        with open(out_path, "rb") as done:
            while block := done.read(_CHUNK):
                digest.update(block)
        return Archive(
            path=out_path,
            sha256=digest.hexdigest(),
            size=out_path.stat().st_size,
            files={name: size for name, (_, size) in files.items()},
            model_card=card,
        )
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise


async def build_archive_async(
    artifact_id: str, artifact_uri: str, *, spool_dir: Path | None = None
) -> Archive:
    return await asyncio.to_thread(build_archive, artifact_id, artifact_uri, spool_dir=spool_dir)
