"""Protobuf ↔ domain for the crawler: requests in, progress, datasets, profiles and previews out.

The servicer calls these and nothing else touches ``zehanx.crawler.v1`` messages; the domain modules
(``builder``, ``task``, ``store``...) never see a protobuf.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from zehanx.common.v1 import dataset_pb2, task_family_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import dataset_pb2 as crawler_dataset_pb2
from zehanx_runtime.enums import from_proto, proto_numbers
from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_crawler.catalogue import CatalogueEntry
from zehanx_crawler.domain import (
    BuildOptions,
    BuildRequest,
    BuiltDataset,
    Phase,
    Progress,
    Source,
    SourceKind,
    TaskFamily,
)

#: Rows of the training split shown as a preview, and the longest text kept of any value in them.
PREVIEW_ROWS = 20
PREVIEW_TEXT_CHARS = 500
#: A preview stops growing past this many bytes of JSON (a row of 10,000 columns is no preview).
PREVIEW_MAX_BYTES = 256 * 1024

TASK_FAMILIES = proto_numbers(TaskFamily, task_family_pb2.TaskFamily, "TASK_FAMILY_")
TASK_FAMILIES_IN = from_proto(TASK_FAMILIES)
PHASES = proto_numbers(Phase, pb.DatasetBuildPhase, "DATASET_BUILD_PHASE_")
#: Column types of ``schema.json`` / the profile, as the contract's ColumnType.
_COLUMN_TYPES = {
    "integer": dataset_pb2.COLUMN_TYPE_INTEGER,
    "number": dataset_pb2.COLUMN_TYPE_FLOAT,
    "boolean": dataset_pb2.COLUMN_TYPE_BOOLEAN,
    "category": dataset_pb2.COLUMN_TYPE_CATEGORICAL,
    "text": dataset_pb2.COLUMN_TYPE_TEXT,
    "date": dataset_pb2.COLUMN_TYPE_DATETIME,
    "datetime": dataset_pb2.COLUMN_TYPE_DATETIME,
    "image": dataset_pb2.COLUMN_TYPE_IMAGE,
}


def timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


# -- in --------------------------------------------------------------------------------------------


def to_build_request(
    request: pb.BuildDatasetRequest, *, firecrawl_api_key: str | None = None
) -> BuildRequest:
    """The domain request. The contract's rules were checked by the interceptor; what is left is ours."""
    violations: list[FieldViolation] = []
    sources: list[Source] = []
    for i, source in enumerate(request.sources):
        kind = source.WhichOneof("source")
        if kind == "url":
            sources.append(Source(SourceKind.URL, source.url.strip()))
        elif kind == "local_path":
            sources.append(Source(SourceKind.LOCAL_PATH, source.local_path))
        elif kind == "catalog_name":
            sources.append(Source(SourceKind.CATALOGUE, source.catalog_name))
        elif kind == "upload_id":
            sources.append(Source(SourceKind.UPLOAD, source.upload_id))
        else:  # pragma: no cover - protovalidate requires the oneof
            violations.append(FieldViolation(f"sources[{i}]", "exactly one of url, local_path, catalog_name"))
    if len(set(sources)) != len(sources):
        seen: set[Source] = set()
        for i, s in enumerate(sources):
            if s in seen:
                violations.append(FieldViolation(f"sources[{i}]", f"{s} is given twice", "DUPLICATE_SOURCE"))
            seen.add(s)
    options = request.options
    fractions = (0.8, 0.1, 0.1)
    if options.HasField("split_fractions"):
        f = options.split_fractions
        fractions = (f.train_fraction, f.validation_fraction, f.test_fraction)
    hint = options.target_column_hint
    if hint and not hint.strip():
        violations.append(
            FieldViolation(
                "options.target_column_hint", "must name a column, not only spaces", "BLANK_TARGET"
            )
        )
    if violations:
        raise InvalidArgument("invalid BuildDatasetRequest", violations=violations)
    return BuildRequest(
        prompt=request.prompt,
        sources=tuple(sources),
        options=BuildOptions(
            seed=options.seed if options.HasField("seed") else None,
            train_fraction=fractions[0],
            validation_fraction=fractions[1],
            test_fraction=fractions[2],
            max_rows=options.max_rows or None,
            max_bytes=options.max_bytes or None,
            target_column=hint.strip() or None,
            task=TASK_FAMILIES_IN.get(options.task_hint),
        ),
        job_id=request.job_id,
        firecrawl_api_key=firecrawl_api_key,
    )


# -- out -------------------------------------------------------------------------------------------


def _column_type(column: dict[str, Any]) -> int:
    kind = column["type"]
    if kind == "string":
        # Short repeated strings are categories; many distinct ones read as text.
        return (
            dataset_pb2.COLUMN_TYPE_CATEGORICAL
            if column.get("distinct", 0) <= 100
            else dataset_pb2.COLUMN_TYPE_TEXT
        )
    return _COLUMN_TYPES.get(kind, dataset_pb2.COLUMN_TYPE_UNSPECIFIED)


def _samples(values: list[Any]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v is None:
            continue
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        if text not in out:
            out.append(text[:200])
        if len(out) == 5:
            break
    return out


def profile_message(dataset: BuiltDataset, samples: dict[str, list[str]]) -> dataset_pb2.DatasetProfile:
    profile = dataset.profile
    columns = []
    for column in profile["columns"]:
        message = dataset_pb2.ColumnProfile(
            name=column["name"][:256],
            type=_column_type(column),  # type: ignore[arg-type]
            missing_count=column["missing"],
            distinct_count=column["distinct"],
            sample_values=samples.get(column["name"], []),
        )
        if column["type"] in ("integer", "number", "image") and "mean" in column:
            message.numeric.CopyFrom(
                dataset_pb2.NumericStats(
                    min=column["min"], max=column["max"], mean=column["mean"], stddev=column["std"]
                )
            )
        lengths = column.get("text_lengths")
        if lengths and column["type"] in ("text", "string"):
            message.text_length.CopyFrom(
                dataset_pb2.TextLengthStats(
                    min=lengths["min_chars"],
                    max=lengths["max_chars"],
                    mean=lengths["mean_chars"],
                    p50=lengths["median_chars"],
                    p95=lengths["p95_chars"],
                )
            )
        columns.append(message)
    classes = sorted(profile.get("classes", []), key=lambda c: -c["count"])
    labelled = sum(c["count"] for c in classes)
    return dataset_pb2.DatasetProfile(
        row_count=profile["rows"],
        columns=columns,
        classes=[
            dataset_pb2.ClassCount(
                label=str(c["label"])[:1024],
                count=c["count"],
                fraction=c["count"] / labelled if labelled else 0.0,
            )
            for c in classes
        ],
        imbalance_ratio=profile.get("balance", {}).get("imbalance_ratio", 0.0),
        # Exact duplicates are kept (row counts stay those of the source; copies share a split), so none
        # are dropped; the warnings say how many there are.
        duplicate_row_count=0,
        dropped_row_count=dataset.dropped_rows,
    )


def _cut(value: Any) -> Any:
    """A stored value for the preview: text cut to PREVIEW_TEXT_CHARS, containers cut inside."""
    if isinstance(value, str):
        return value[:PREVIEW_TEXT_CHARS]
    if isinstance(value, list):
        return [_cut(v) for v in value]
    if isinstance(value, dict):
        return {str(k)[:PREVIEW_TEXT_CHARS]: _cut(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON (and so a Struct shown to a browser) has no NaN or infinity
    return value


def preview_rows(path: str) -> list[struct_pb2.Struct]:
    """The first PREVIEW_ROWS rows of a JSONL split as stored, long text cut, for a preview."""
    rows: list[struct_pb2.Struct] = []
    used = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(rows) >= PREVIEW_ROWS:
                break
            record = _cut(json.loads(line))
            size = len(json.dumps(record, ensure_ascii=False))
            if rows and used + size > PREVIEW_MAX_BYTES:
                break
            used += size
            row = struct_pb2.Struct()
            row.update(record)
            rows.append(row)
    return rows


def dataset_message(dataset: BuiltDataset, samples: dict[str, list[str]]) -> crawler_dataset_pb2.Dataset:
    splits = dataset.splits
    schema_path = f"{dataset.directory}/schema.json"
    with open(schema_path, encoding="utf-8") as f:
        schema_json = f.read()
    train, validation, test = dataset.fractions
    return crawler_dataset_pb2.Dataset(
        id=dataset.id,
        name=dataset.name[:256],
        task_family=TASK_FAMILIES[dataset.task],
        target_column=dataset.target,
        explanation=dataset.explanation,
        ref=dataset_pb2.DatasetRef(
            dataset_id=dataset.id,
            train_uri=splits["train"].uri,
            validation_uri=splits["validation"].uri,
            test_uri=splits["test"].uri,
            format=dataset_pb2.DATASET_FILE_FORMAT_JSONL,
            schema_json=schema_json,
            train_sha256=splits["train"].sha256,
            validation_sha256=splits["validation"].sha256,
            test_sha256=splits["test"].sha256,
        ),
        profile=profile_message(dataset, samples),
        provenance=[
            dataset_pb2.Provenance(
                source=p.source[:4096],
                title=p.title[:1024],
                fetch_time=timestamp(p.fetched_at),
                sha256=p.sha256,
                size_bytes=p.bytes,
                license=p.licence[:1024],
                description=p.description[:4096],
            )
            for p in dataset.provenance
        ],
        split_seed=dataset.seed,
        split_fractions=dataset_pb2.SplitFractions(
            train_fraction=train, validation_fraction=validation, test_fraction=test
        ),
        train_row_count=splits["train"].rows,
        validation_row_count=splits["validation"].rows,
        test_row_count=splits["test"].rows,
        create_time=timestamp(dataset.created_at),
        warnings=dataset.notes,
        preview_rows=preview_rows(splits["train"].path),
    )


def catalogue_message(entry: CatalogueEntry) -> crawler_dataset_pb2.CatalogEntry:
    return crawler_dataset_pb2.CatalogEntry(
        name=entry.name,
        title=entry.title,
        description=entry.description,
        task_family=TASK_FAMILIES[entry.task],
        target_column=entry.target,
        row_count=entry.rows,
        license=entry.licence,
        origin=f"{entry.package}: sklearn.datasets.{entry.loader}",
        keywords=list(entry.keywords),
    )


def first_values(path: str, limit: int = 50) -> dict[str, list[str]]:
    """Up to five example values per column, from the first rows of the training split."""
    values: dict[str, list[Any]] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            for name, value in json.loads(line).items():
                values.setdefault(name, []).append(value)
    return {name: _samples(v) for name, v in values.items()}


def progress_response(sequence: int, when: datetime, event: Progress) -> pb.BuildDatasetResponse:
    return pb.BuildDatasetResponse(
        sequence=sequence,
        event_time=timestamp(when),
        progress=pb.BuildProgress(
            phase=PHASES[event.phase],
            message=event.message,
            source=event.source,
            bytes_done=event.bytes_done,
            rows_done=event.rows_done,
        ),
    )


def dataset_response(sequence: int, when: datetime, dataset: BuiltDataset) -> pb.BuildDatasetResponse:
    samples = first_values(dataset.splits["train"].path)
    return pb.BuildDatasetResponse(
        sequence=sequence, event_time=timestamp(when), dataset=dataset_message(dataset, samples)
    )
