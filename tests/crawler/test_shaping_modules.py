"""The crawler's dataset-shaping modules on their own, in memory: cleaning (raw cells to typed columns,
every repair noted), splitting (seeded, stratified, temporal, duplicates kept together) and profiling
(counts, balance, per-split class counts). No server, no files: these run on a fresh clone too."""

from __future__ import annotations

from collections import Counter

import pytest
from zehanx_crawler.cleaning import Column, Table, clean, clean_names, concat
from zehanx_crawler.domain import RawTable, TaskFamily
from zehanx_crawler.profiling import profile
from zehanx_crawler.splitting import SPLITS, split
from zehanx_crawler.task import TaskChoice
from zehanx_runtime.errors import FailedPrecondition

FRACTIONS = (0.7, 0.15, 0.15)


def _raw(columns: list[str], rows: list[list[object]], origin: str = "t.csv") -> RawTable:
    return RawTable(columns=columns, rows=rows, origin=origin, format="csv")


# -- cleaning -----------------------------------------------------------------------------------------


def test_numbers_with_separators_currency_and_percent_become_numbers_and_the_repair_is_noted() -> None:
    table = clean(
        _raw(
            ["Population", "Share", "Price"],
            [["1,723,337", "85.76%", "$1,200"], ["12", "3%", "$3.50"], ["n/a", "-", "$0.99"]],
        ),
        max_columns=10,
    )
    population, share, price = table.columns
    assert (population.type, population.values) == ("integer", [1723337, 12, None])
    assert (share.type, share.values, share.facts) == ("number", [85.76, 3.0, None], {"percent": True})
    assert (price.type, price.values) == ("number", [1200.0, 3.5, 0.99])
    notes = " | ".join(table.notes)
    assert "'Population': read as numbers" in notes and "'n/a' read as missing" in notes
    assert "'Share': percent values kept as numbers" in notes


def test_dates_in_one_format_become_iso_and_booleans_categories_and_text_are_told_apart() -> None:
    rows = [
        [
            f"{day:02d}/03/2024",
            "true" if day % 2 else "false",
            "red" if day % 3 else "blue",
            f"a long {day} " * 6,
        ]
        for day in range(1, 21)
    ]
    table = clean(_raw(["when", "flag", "colour", "review"], rows), max_columns=10)
    when, flag, colour, review = table.columns
    assert when.type == "date" and when.values[0] == "2024-03-01" and when.values[19] == "2024-03-20"
    assert any("rewritten as ISO 8601" in note for note in table.notes)
    assert (flag.type, flag.values[:2]) == ("boolean", [True, False])
    assert (colour.type, colour.distinct) == ("category", 2)
    assert review.type == "text"


def test_empty_rows_and_columns_are_dropped_and_said_so() -> None:
    table = clean(_raw(["a", "empty", "b"], [["1", "", "x"], ["", " ", ""], ["2", None, "y"]]), max_columns=5)
    assert table.names() == ["a", "b"]
    assert table.n_rows == 2
    assert "dropped 1 empty rows" in table.notes
    assert "dropped column 'empty': no values" in table.notes


def test_too_many_columns_or_none_with_a_value_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as wide:
        clean(_raw([f"c{i}" for i in range(6)], [["1"] * 6]), max_columns=5)
    assert wide.value.reason == "TOO_MANY_COLUMNS"
    with pytest.raises(FailedPrecondition) as empty:
        clean(_raw(["a", "b"], [["", None], ["NA", ""]]), max_columns=5)
    assert empty.value.reason == "NO_USABLE_TABLE"


def test_names_are_cleaned_invented_numbered_and_cut() -> None:
    notes: list[str] = []
    names = clean_names(["  Name\u00a0 ", "", "name", "x" * 500], notes)
    assert names[:3] == ["Name", "column_2", "name_2"]
    assert len(names[3]) == 200
    assert notes == ["1 column names longer than 200 characters cut to that length"]


def test_tables_with_the_same_columns_stack_in_the_first_ones_order() -> None:
    stacked = concat([_raw(["a", "B"], [[1, 2]], "one.csv"), _raw(["b", "A"], [[20, 10]], "two.csv")])
    assert stacked.rows == [[1, 2], [10, 20]]
    assert stacked.notes[-1] == "2 sources with the same columns stacked: one.csv (1 rows), two.csv (1 rows)"


# -- splitting ----------------------------------------------------------------------------------------


def test_a_stratified_split_is_seeded_complete_disjoint_and_keeps_each_class_in_proportion() -> None:
    labels: list[object] = ["spam"] * 20 + ["ham"] * 80
    first = split(labels, 100, TaskFamily.TEXT_CLASSIFICATION, FRACTIONS, seed=7)
    assert first == split(labels, 100, TaskFamily.TEXT_CLASSIFICATION, FRACTIONS, seed=7)
    assert first != split(labels, 100, TaskFamily.TEXT_CLASSIFICATION, FRACTIONS, seed=8)
    assert first.method == "stratified"
    every = [i for name in SPLITS for i in first.indices[name]]
    assert sorted(every) == list(range(100))
    counts = {name: Counter(labels[i] for i in first.indices[name]) for name in SPLITS}
    assert counts["train"] == {"spam": 14, "ham": 56}
    assert counts["validation"] == {"spam": 3, "ham": 12}
    assert counts["test"] == {"spam": 3, "ham": 12}
    assert first.indices["train"] != sorted(first.indices["train"])  # the split files are shuffled


def test_a_series_is_split_in_time_order_oldest_for_training() -> None:
    parts = split(None, 20, TaskFamily.TIME_SERIES_FORECASTING, FRACTIONS, seed=1)
    assert parts.method == "temporal"
    assert parts.indices == {
        "train": list(range(14)),
        "validation": [14, 15, 16],
        "test": [17, 18, 19],
    }


def test_identical_rows_always_land_in_the_same_split() -> None:
    groups = [i // 5 for i in range(60)]  # twelve groups of five copies
    parts = split(None, 60, TaskFamily.TABULAR_REGRESSION, FRACTIONS, seed=3, groups=groups)
    assert parts.method == "random"
    where = {i: name for name in SPLITS for i in parts.indices[name]}
    for group in range(12):
        assert len({where[i] for i in range(60) if groups[i] == group}) == 1, group


def test_too_few_rows_are_refused_with_the_minimum() -> None:
    with pytest.raises(FailedPrecondition) as few:
        split(None, 9, TaskFamily.TABULAR_REGRESSION, FRACTIONS, seed=0)
    assert few.value.reason == "TOO_FEW_ROWS" and "at least 10" in few.value.message


# -- profiling ----------------------------------------------------------------------------------------


def test_the_profile_counts_rows_missing_duplicates_classes_and_their_split_counts() -> None:
    n = 40
    labels = ["yes"] * 30 + ["no"] * 10
    table = Table(
        [
            Column("size", "number", [float(i % 10) if i != 3 else None for i in range(n)]),
            Column("label", "category", list(labels)),
        ],
        [],
        [],
    )
    parts = split(list(labels), n, TaskFamily.TABULAR_CLASSIFICATION, (0.5, 0.25, 0.25), seed=0)
    choice = TaskChoice(
        task=TaskFamily.TABULAR_CLASSIFICATION,
        target="label",
        inputs=["size"],
        explanation="test",
        classes=["yes", "no"],
    )
    got = profile(table, choice, parts)
    assert got["rows"] == n
    # Each class is cut by largest remainder (30: 15, 7.5, 7.5; 10: 5, 2.5, 2.5), a tie going to the
    # earlier split: validation gets both halves.
    assert got["split_rows"] == {"train": 20, "validation": 11, "test": 9}
    assert got["missing_values"] == {"size": 1} and got["missing_cells"] == 1
    # The 30 "yes" rows hold sizes 0-9 three times each, but row 3's size is missing: 9 x 2 + 1 copies;
    # the 10 "no" rows are all different.
    assert got["duplicate_rows"] == 19
    size, label = got["columns"]
    assert (size["role"], size["min"], size["max"], size["missing"]) == ("input", 0.0, 9.0, 1)
    assert label["role"] == "target" and label["top_values"] == [["yes", 30], ["no", 10]]
    yes, no = got["classes"]
    assert (yes["label"], yes["count"], yes["share"]) == ("yes", 30, 0.75)
    assert yes["split_counts"] == {"train": 15, "validation": 8, "test": 7}
    assert (no["label"], no["count"], no["split_counts"]) == (
        "no",
        10,
        {"train": 5, "validation": 3, "test": 2},
    )
    assert got["balance"] == {
        "majority_class": "yes",
        "majority_share": 0.75,
        "minority_class": "no",
        "minority_share": 0.25,
        "imbalance_ratio": 3.0,
    }
