"""Reading a dataset's split files for a run: from their owner, verified sha256, rows for evaluation.

The trainer reads the three split files itself, through a :class:`DatasetFiles` port chosen by the
URI's scheme: ``zx-crawler:`` files come from the crawler over ``CrawlerService.ReadDatasetFile``
(:mod:`zehanx_trainer.clients.crawler`; the crawler's folder is never opened here), and ``file://``
URIs (a caller's own files) only from folders the operator listed in ``ZX_TRAINER_DATASET_ROOTS``. Train and validation go into the sandbox verbatim
(``data/train.<ext>``, ``data/validation.<ext>``, ``data/schema.json``); the test split never does:
only its input columns are written, as ``test_inputs.jsonl``, into the evaluation sandbox, and its
targets stay here for scoring.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from zehanx_runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied

from zehanx_trainer.evaluation import TaskKind

#: File extension of each format, as staged for the program.
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
_FREQUENCY_SEASONS = {
    "h": 24,
    "hour": 24,
    "hourly": 24,
    "d": 7,
    "day": 7,
    "daily": 7,
    "w": 52,
    "week": 52,
    "weekly": 52,
    "m": 12,
    "ms": 12,
    "month": 12,
    "monthly": 12,
    "q": 4,
    "qs": 4,
    "quarter": 4,
    "quarterly": 4,
}


@dataclass(frozen=True)
class DatasetSpec:
    """The dataset of a run (the domain form of ``zehanx.common.v1.DatasetRef``)."""

    dataset_id: str
    train_uri: str
    validation_uri: str
    test_uri: str
    format: str
    schema_json: str
    train_sha256: str
    validation_sha256: str
    test_sha256: str


@dataclass(frozen=True)
class TaskSpec:
    """What the trainer needs from the plan to evaluate: the kind, the target, the input columns."""

    family: str
    kind: TaskKind
    target_column: str
    input_columns: tuple[str, ...]
    metric_name: str


@dataclass
class LoadedDataset:
    """The bytes of the splits (verified) and the parsed schema."""

    spec: DatasetSpec
    train: bytes
    validation: bytes
    test: bytes
    schema: dict[str, Any]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.spec.format]

    def rows(self, split: str) -> list[dict[str, Any]]:
        data = {"train": self.train, "validation": self.validation, "test": self.test}[split]
        return parse_rows(data, self.spec.format, split)

    def total_bytes(self) -> int:
        return len(self.train) + len(self.validation) + len(self.test)


class DatasetFiles(Protocol):
    """Where a split file's bytes come from; the bytes are checked against ``sha256`` before use."""

    async def read(self, uri: str, sha256: str, what: str, max_bytes: int) -> bytes: ...


class LocalDatasetFiles:
    """``file://`` URIs (or absolute paths) inside the operator's dataset folders."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = list(roots)

    async def read(self, uri: str, sha256: str, what: str, max_bytes: int) -> bytes:
        if not self.roots:
            raise FailedPrecondition(
                f"{what}: {uri[:200]!r} is a local file, and this trainer reads no local dataset files "
                "(datasets come from the crawler; set ZX_TRAINER_DATASET_ROOTS to allow a folder)",
                reason="UNSUPPORTED_DATASET_URI",
            )
        return await asyncio.to_thread(read_verified, uri, sha256, self.roots, what, max_bytes)


class DatasetFileRouter:
    """Each URI to the reader of its scheme: ``zx-crawler`` to the crawler, ``file`` to local folders."""

    def __init__(self, local: LocalDatasetFiles, remote: Mapping[str, DatasetFiles] | None = None) -> None:
        self.local = local
        self.remote = dict(remote or {})

    async def read(self, uri: str, sha256: str, what: str, max_bytes: int) -> bytes:
        scheme = urlparse(uri).scheme
        if scheme in ("", "file"):
            return await self.local.read(uri, sha256, what, max_bytes)
        reader = self.remote.get(scheme)
        if reader is None:
            hint = (
                "set ZX_TRAINER_CRAWLER_ADDRESS to the crawler's host:port (zx up does)"
                if scheme == "zx-crawler"
                else "this trainer reads zx-crawler: and file:// URIs"
            )
            raise FailedPrecondition(
                f"{what}: no reader for {scheme}: URIs ({hint})", reason="UNSUPPORTED_DATASET_URI"
            )
        return await reader.read(uri, sha256, what, max_bytes)


def resolve_file_uri(uri: str, roots: list[Path], what: str) -> Path:
    """A ``file://`` URI (or absolute path) inside one of ``roots``; symlinks resolved first."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"{what}: file URI names a remote host {parsed.netloc!r}", reason="BAD_DATASET_URI"
            )
        raw = unquote(parsed.path)
    elif parsed.scheme == "" and uri.startswith("/"):
        raw = uri
    else:
        raise FailedPrecondition(
            f"{what}: not a file:// URI (scheme {parsed.scheme!r})", reason="UNSUPPORTED_DATASET_URI"
        )
    path = Path(raw).resolve()
    for root in roots:
        if path.is_relative_to(root.resolve()):
            return path
    raise PermissionDenied(
        f"{what}: {path} is outside the dataset folders this trainer may read",
        reason="DATASET_OUTSIDE_ROOTS",
        metadata={"path": str(path)[:512]},
    )


def read_verified(uri: str, sha256: str, roots: list[Path], what: str, max_bytes: int) -> bytes:
    path = resolve_file_uri(uri, roots, what)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FailedPrecondition(
                f"{what}: {size} bytes is more than this trainer stages ({max_bytes} bytes)",
                reason="DATASET_TOO_LARGE",
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise FailedPrecondition(f"{what}: {path} does not exist", reason="DATASET_MISSING") from None
    except IsADirectoryError:
        raise FailedPrecondition(
            f"{what}: {path} is a folder, not a file", reason="DATASET_MISSING"
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if sha256 and actual != sha256:
        raise FailedPrecondition(
            f"{what}: {path} does not match its sha256 (expected {sha256[:12]}…, found {actual[:12]}…)",
            reason="DATASET_SHA256_MISMATCH",
        )
    return data


async def load_dataset(spec: DatasetSpec, files: DatasetFiles, *, max_bytes: int) -> LoadedDataset:
    if spec.format not in EXTENSIONS:
        raise InvalidArgument(f"dataset format {spec.format!r} is not supported", reason="BAD_DATASET_FORMAT")
    try:
        schema = json.loads(spec.schema_json)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"dataset.schema_json is not JSON: {exc}", reason="BAD_SCHEMA") from None
    if not isinstance(schema, dict):
        raise InvalidArgument("dataset.schema_json must be a JSON object", reason="BAD_SCHEMA")
    train = await files.read(spec.train_uri, spec.train_sha256, "dataset.train_uri", max_bytes)
    validation = await files.read(
        spec.validation_uri, spec.validation_sha256, "dataset.validation_uri", max_bytes
    )
    test = await files.read(spec.test_uri, spec.test_sha256, "dataset.test_uri", max_bytes)
    return LoadedDataset(spec=spec, train=train, validation=validation, test=test, schema=schema)


def parse_rows(data: bytes, fmt: str, split: str) -> list[dict[str, Any]]:
    """Rows of a split file as dicts (CSV values stay strings, as the program sees them)."""
    try:
        if fmt == "jsonl":
            rows = []
            for number, line in enumerate(data.decode("utf-8-sig").split("\n"), start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"line {number} is not a JSON object")
                rows.append(row)
            return rows
        if fmt == "csv":
            return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise FailedPrecondition(
            f"the {split} split is not valid {fmt}: {exc}", reason="BAD_DATASET_FILE"
        ) from None


def input_columns(task: TaskSpec, rows: list[dict[str, Any]]) -> list[str]:
    """The columns a model reads: the plan's, or every column but the target."""
    if task.input_columns:
        return list(task.input_columns)
    seen: dict[str, None] = {}
    for row in rows[:1000]:
        for name in row:
            if name != task.target_column:
                seen.setdefault(name, None)
    return list(seen)


def inputs_jsonl(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    """The input columns of ``rows`` as JSONL: the targets never leave the trainer."""
    lines = [json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False, default=str) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def targets(task: TaskSpec, rows: list[dict[str, Any]], split: str) -> list[Any]:
    """The target column of ``rows``; numeric for regression and forecasting."""
    values = []
    for i, row in enumerate(rows):
        if task.target_column not in row:
            raise FailedPrecondition(
                f"row {i + 1} of the {split} split has no target column {task.target_column!r}",
                reason="TARGET_MISSING",
            )
        value = row[task.target_column]
        if task.kind is not TaskKind.CLASSIFICATION:
            value = _as_float(value, split, i)
        values.append(value)
    return values


def _as_float(value: Any, split: str, index: int) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FailedPrecondition(
            f"row {index + 1} of the {split} split: target {value!r:.40} is not a number",
            reason="TARGET_NOT_NUMERIC",
        ) from None
    if not math.isfinite(number):
        raise FailedPrecondition(
            f"row {index + 1} of the {split} split: target is not finite", reason="TARGET_NOT_NUMERIC"
        )
    return number


def season_length(schema: dict[str, Any]) -> int:
    """The seasonal period for the seasonal-naive baseline: stated in schema.json or from the frequency."""
    for holder in (schema, schema.get("forecasting") or {}, schema.get("time_series") or {}):
        if not isinstance(holder, dict):
            continue
        for key in ("season_length", "seasonality", "seasonal_period", "period"):
            value = holder.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
        frequency = holder.get("frequency") or holder.get("freq")
        if isinstance(frequency, str) and frequency.strip().lower() in _FREQUENCY_SEASONS:
            return _FREQUENCY_SEASONS[frequency.strip().lower()]
    return 1
