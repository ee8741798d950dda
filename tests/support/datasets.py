"""Small datasets written the way the crawler writes them, for suites that need one to train on."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from zehanx.common.v1 import dataset_pb2

#: ``schema.json`` of :func:`tiny_rows`: a two-class table, label = x > 0.
TINY_SCHEMA = {
    "format": "zehanx.dataset",
    "format_version": 1,
    "task": "tabular_classification",
    "target": "label",
    "inputs": ["x"],
    "classes": ["neg", "pos"],
}


def tiny_rows() -> dict[str, list[dict[str, object]]]:
    """Train 60, validation 20 and test 30 rows of one number ``x`` and its sign as ``label``."""

    def split(n: int, offset: int) -> list[dict[str, object]]:
        return [
            {"x": ((i * 37 + offset) % 41) - 20.5, "label": "pos" if ((i * 37 + offset) % 41) > 20 else "neg"}
            for i in range(n)
        ]

    return {"train": split(60, 0), "validation": split(20, 7), "test": split(30, 13)}


def write_dataset(root: Path, rows: dict[str, list[dict]], schema: dict) -> dataset_pb2.DatasetRef:
    """Write each split as ``<split>.jsonl`` and ``schema.json`` under ``root``, as the crawler does, and
    return the ``DatasetRef`` naming them (``file://`` URIs, their SHA-256, a new dataset id)."""
    root.mkdir(parents=True, exist_ok=True)
    shas = {}
    for split, split_rows in rows.items():
        data = "".join(json.dumps(r) + "\n" for r in split_rows).encode()
        (root / f"{split}.jsonl").write_bytes(data)
        shas[split] = hashlib.sha256(data).hexdigest()
    schema_json = json.dumps(schema)
    (root / "schema.json").write_text(schema_json)
    return dataset_pb2.DatasetRef(
        dataset_id=str(uuid.uuid4()),
        train_uri=(root / "train.jsonl").as_uri(),
        validation_uri=(root / "validation.jsonl").as_uri(),
        test_uri=(root / "test.jsonl").as_uri(),
        format=dataset_pb2.DATASET_FILE_FORMAT_JSONL,
        schema_json=schema_json,
        train_sha256=shas["train"],
        validation_sha256=shas["validation"],
        test_sha256=shas["test"],
    )
