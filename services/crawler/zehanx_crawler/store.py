"""The dataset store: one folder per dataset, named by the sha256 of its ``schema.json``.

The dataset id (a UUID, as the contracts want) is derived from that sha256: ``uuid5(DATASET_NAMESPACE,
sha256)``, so the id, like the folder, is a pure function of the content.

``schema.json`` names the sha256 of every split file, so the folder name covers the data, the split and
the schema; the same rows split with the same seed land in the same folder however often they are built.
Folders are written under a temporary name and renamed into place, so a reader never sees half a
dataset. The crawler is the only service that opens this folder: a split file is named to others by
``zx-crawler:/datasets/<sha256>/<split>.jsonl`` (:func:`split_uri`), and the trainer reads it through
``CrawlerService.ReadDatasetFile``, which :meth:`DatasetStore.locate` serves. ``provenance.json`` (who built it, from where, when) is the only file rewritten by a later build
of the same content. The files a program reads are documented in ``docs/program_contract.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zehanx_runtime.errors import Internal, InvalidArgument, NotFound
from zehanx_runtime.transfer import FileInfo

from zehanx_crawler.cleaning import Table
from zehanx_crawler.domain import SplitFiles
from zehanx_crawler.splitting import SPLITS, Split
from zehanx_crawler.task import TaskChoice

FORMAT = "zehanx.dataset"
FORMAT_VERSION = 1
#: Namespace of dataset ids: ``uuid5(DATASET_NAMESPACE, sha256_of_schema_json)``.
DATASET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:zehanx:dataset")


#: How other services name a split file: ``zx-crawler:/datasets/<sha256 of schema.json>/<split>.jsonl``.
URI_SCHEME = "zx-crawler"
_SPLIT_URI = re.compile(
    r"^zx-crawler:/datasets/(?P<sha256>[0-9a-f]{64})/(?P<split>train|validation|test)\.jsonl$"
)


def split_uri(sha256: str, split: str) -> str:
    return f"{URI_SCHEME}:/datasets/{sha256}/{split}.jsonl"


def dataset_id_of(sha256: str) -> str:
    return str(uuid.uuid5(DATASET_NAMESPACE, sha256))


def _dumps(value: Any, *, indent: int | None = 2) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False).encode("utf-8")


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def jsonl_bytes(table: Table, indices: list[int]) -> bytes:
    names = table.names()
    columns = [c.values for c in table.columns]
    lines = []
    for i in indices:
        row = {name: col[i] for name, col in zip(names, columns, strict=True)}
        lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def schema_of(
    table: Table, choice: TaskChoice, split: Split, files: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    roles = {choice.target: "target", **{name: "input" for name in choice.inputs}}
    roles.update({name: "ignored" for name in choice.ignored})
    if choice.time_column:
        roles[choice.time_column] = "time"
    columns = []
    for col in table.columns:
        entry: dict[str, Any] = {
            "name": col.name,
            "type": col.type,
            "role": roles.get(col.name, "input"),
            "nullable": col.missing > 0,
        }
        entry.update(
            {
                k: v
                for k, v in col.facts.items()
                if k in ("shape", "channels", "value_range", "layout", "percent", "date_format")
            }
        )
        columns.append(entry)
    image = None
    if choice.image_shape:
        img = table.get("image")
        image = {
            "column": "image",
            **{k: img.facts[k] for k in ("shape", "channels", "value_range", "layout")},
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": choice.task.value,
        "target": choice.target,
        "inputs": list(choice.inputs),
        "text_column": choice.text_column,
        "time_column": choice.time_column,
        "image": image,
        "classes": list(choice.classes) if choice.task.is_classification else None,
        "columns": columns,
        "split": {
            "method": split.method,
            "seed": split.seed,
            "fractions": dict(zip(SPLITS, split.fractions, strict=True)),
        },
        "files": files,
    }


@dataclass
class Stored:
    id: str
    sha256: str
    directory: Path
    schema: dict[str, Any]
    splits: dict[str, SplitFiles]
    reused: bool


class DatasetStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(
        self,
        table: Table,
        choice: TaskChoice,
        split: Split,
        profile: dict[str, Any],
        provenance: dict[str, Any],
    ) -> Stored:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            files: dict[str, dict[str, Any]] = {}
            for name in SPLITS:
                data = jsonl_bytes(table, split.indices[name])
                _write(tmp / f"{name}.jsonl", data)
                files[name] = {
                    "path": f"{name}.jsonl",
                    "rows": len(split.indices[name]),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                }
            schema = schema_of(table, choice, split, files)
            schema_bytes = _dumps(schema)
            digest = hashlib.sha256(schema_bytes).hexdigest()
            dataset_id = dataset_id_of(digest)
            _write(tmp / "schema.json", schema_bytes)
            _write(tmp / "profile.json", _dumps(profile))
            _write(
                tmp / "provenance.json", _dumps({"dataset_id": dataset_id, "sha256": digest, **provenance})
            )
            final = self.root / digest
            reused = False
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if not (final / "schema.json").is_file():
                    raise
                existing = hashlib.sha256((final / "schema.json").read_bytes()).hexdigest()
                if existing != digest:
                    raise Internal(
                        f"dataset store corrupt: {final} does not match its name", reason="STORE_CORRUPT"
                    ) from exc
                reused = True
                staged = final / f".provenance-{uuid.uuid4().hex}.json"
                _write(staged, _dumps({"dataset_id": dataset_id, "sha256": digest, **provenance}))
                os.replace(staged, final / "provenance.json")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        splits = {
            name: SplitFiles(
                name=name,
                uri=split_uri(digest, name),
                path=str((final / f"{name}.jsonl").resolve()),
                rows=files[name]["rows"],
                sha256=files[name]["sha256"],
                bytes=files[name]["bytes"],
            )
            for name in SPLITS
        }
        return Stored(
            id=dataset_id,
            sha256=digest,
            directory=final.resolve(),
            schema=schema,
            splits=splits,
            reused=reused,
        )

    def locate(self, uri: str) -> tuple[Path, FileInfo]:
        """The local file a ``zx-crawler:`` URI names, and its size and sha256 as ``schema.json`` records.

        INVALID_ARGUMENT for a URI this store does not make; NOT_FOUND when the dataset or the file is
        not here (for example another crawler, with its own folder, built it). The folder's
        ``schema.json`` is checked against the folder's name first, so the sha256 handed out is the
        one the dataset was published with.
        """
        match = _SPLIT_URI.match(uri)
        if match is None:
            raise InvalidArgument(
                f"{uri[:200]!r} is not a dataset file URI of this crawler "
                "(zx-crawler:/datasets/<sha256>/<split>.jsonl)",
                reason="BAD_DATASET_URI",
            )
        digest, split = match["sha256"], match["split"]
        folder = self.root / digest
        try:
            schema_bytes = (folder / "schema.json").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"this crawler has no dataset {digest[:12]}… (its store is {self.root})",
                reason="DATASET_NOT_FOUND",
                metadata={"sha256": digest},
            ) from None
        if hashlib.sha256(schema_bytes).hexdigest() != digest:
            raise Internal(f"dataset store corrupt: {folder} does not match its name", reason="STORE_CORRUPT")
        try:
            entry = json.loads(schema_bytes)["files"][split]
            info = FileInfo(
                name=f"{split}.jsonl",
                size_bytes=int(entry["bytes"]),
                sha256=str(entry["sha256"]),
                media_type="application/jsonl",
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise Internal(
                f"dataset {digest[:12]}…: unreadable schema.json ({exc})", reason="STORE_CORRUPT"
            ) from None
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            raise NotFound(f"dataset {digest[:12]}… has no {split} file", reason="DATASET_NOT_FOUND")
        return path, info
