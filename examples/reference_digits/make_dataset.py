"""Write scikit-learn's 8x8 digits as a Zehanx dataset (the crawler's on-disk format).

    python make_dataset.py OUT_DIR [--seed 42]

Splits are stratified and seeded (70 / 15 / 15). Each JSONL row is {"image": [64 pixel values,
row-major], "digit": label}; schema.json names the task, target, image shape and value range, like
the crawler's ``sklearn.digits`` catalogue entry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

SPLITS = ("train", "validation", "test")


def _jsonl(images, labels) -> bytes:
    lines = [
        json.dumps({"image": [int(v) for v in x], "digit": int(y)}, separators=(",", ":"))
        for x, y in zip(images, labels, strict=False)
    ]
    return ("\n".join(lines) + "\n").encode()


def write_digits(out_dir: Path, seed: int = 42) -> dict:
    """Write the three splits and schema.json; return {split: {path, sha256, rows}} plus the schema."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x, y = bunch.data.astype(int), bunch.target.astype(int)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.30, stratify=y, random_state=seed)
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.50, stratify=y_rest, random_state=seed
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (xs, ys) in zip(SPLITS, ((x_train, y_train), (x_val, y_val), (x_test, y_test)), strict=True):
        data = _jsonl(xs, ys)
        (out_dir / f"{name}.jsonl").write_bytes(data)
        files[name] = {"path": f"{name}.jsonl", "rows": len(ys), "sha256": hashlib.sha256(data).hexdigest()}
    schema = {
        "format": "zehanx.dataset",
        "format_version": 1,
        "task": "image_classification",
        "target": "digit",
        "inputs": ["image"],
        "text_column": None,
        "time_column": None,
        "image": {
            "column": "image",
            "shape": [8, 8],
            "channels": 1,
            "value_range": [0, 16],
            "layout": "row-major",
        },
        "classes": [str(c) for c in range(10)],
        "columns": [
            {"name": "image", "type": "image", "role": "input", "nullable": False, "shape": [8, 8]},
            {"name": "digit", "type": "integer", "role": "target", "nullable": False},
        ],
        "split": {
            "method": "stratified",
            "seed": seed,
            "fractions": {"train": 0.7, "validation": 0.15, "test": 0.15},
        },
        "files": files,
    }
    schema_text = json.dumps(schema, indent=2)
    (out_dir / "schema.json").write_text(schema_text + "\n")
    return {"files": files, "schema_json": schema_text, "dir": out_dir}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    written = write_digits(args.out_dir, args.seed)
    print(json.dumps(written["files"], indent=2))
