"""A table whose input columns are one ordered sequence (UCR ArrowHead: t0..t250 and a label) is
recognised as a series, through the real BuildDataset stream, and said so in schema.json; columns
that only look like one (running numbers in their names) are not."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from crawler_support import Crawler
from zehanx.common.v1 import task_family_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx_crawler.cleaning import Column, Table
from zehanx_crawler.domain import TaskFamily
from zehanx_crawler.task import choose
from zehanx_runtime.errors import FailedPrecondition


def _dataset(messages: list[pb.BuildDatasetResponse]):
    assert messages and messages[-1].HasField("dataset")
    return messages[-1].dataset


async def test_arrowhead_columns_are_one_series_in_the_schema(crawler: Crawler, shared_data: Path) -> None:
    path = shared_data / "arrowhead" / "arrowhead_train.csv"
    dataset = _dataset(await crawler.build("classify arrowhead outlines", str(path)))
    # the crawler names the family (codegen's planner only checks it) and marks the series columns
    assert dataset.task_family == task_family_pb2.TASK_FAMILY_TIME_SERIES_CLASSIFICATION
    assert "task time_series_classification: " in dataset.explanation
    assert "251 columns t0 ... t250 are one ordered series" in dataset.explanation
    schema = json.loads(dataset.ref.schema_json)
    marked = [c["name"] for c in schema["columns"] if c.get("layout") == "series"]
    assert marked == [f"t{i}" for i in range(251)]
    assert schema["target"] == "label" and "label" not in marked
    assert schema["task"] == "time_series_classification"


def _table(columns: dict[str, list]) -> Table:
    return Table([Column(name, kind, values) for name, (kind, values) in columns.items()], [], [])


def test_running_numbers_in_names_alone_do_not_make_a_series(shared_data: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    labels = [1, 0] * 50
    # 30 real features of unrelated scales (areas in the thousands, ratios below one), renamed f1..f30
    bunch = load_breast_cancer()
    features = {f"f{j + 1}": ("number", [float(v) for v in bunch.data[:100, j]]) for j in range(30)}
    choice = choose(
        _table({**features, "label": ("integer", labels)}), "classify", target_hint="label", task_hint=None
    )
    assert choice.series_columns == [] and "series" not in choice.explanation
    # 32 columns on one scale but independent of each other (no neighbour correlation)
    rng = random.Random(0)
    noise = {f"t{j}": ("number", [rng.gauss(0, 1) for _ in labels]) for j in range(32)}
    choice = choose(
        _table({**noise, "label": ("integer", labels)}), "classify", target_hint="label", task_hint=None
    )
    assert choice.series_columns == [] and choice.task is TaskFamily.TABULAR_CLASSIFICATION
    # asked for a series classifier, the same columns are refused with the reason
    with pytest.raises(FailedPrecondition) as caught:
        choose(
            _table({**noise, "label": ("integer", labels)}),
            "classify",
            target_hint="label",
            task_hint=TaskFamily.TIME_SERIES_CLASSIFICATION,
        )
    assert caught.value.reason == "NO_SERIES_COLUMNS"
    # the real series passes the same rule (and 15 of its columns are too few)
    with open(shared_data / "arrowhead" / "arrowhead_train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    series = {f"t{i}": ("number", [float(r[f"t{i}"]) for r in rows]) for i in range(251)}
    target = {"label": ("integer", [int(r["label"]) for r in rows])}
    assert (
        len(choose(_table({**series, **target}), "classify", target_hint=None, task_hint=None).series_columns)
        == 251
    )
    short = {k: v for k, v in series.items() if int(k[1:]) < 15}
    assert (
        choose(_table({**short, **target}), "classify", target_hint=None, task_hint=None).series_columns == []
    )
    # one list column of 251 numbers per row is a series too; lists of different lengths are not
    packed = [[float(r[f"t{i}"]) for i in range(251)] for r in rows]
    choice = choose(
        _table({"outline": ("list", packed), **target}), "classify", target_hint=None, task_hint=None
    )
    assert choice.series_columns == ["outline"] and "one list of 251 numbers per row" in choice.explanation
    ragged = [v[: 100 + i] for i, v in enumerate(packed)]
    choice = choose(
        _table({"outline": ("list", ragged), **target}), "classify", target_hint=None, task_hint=None
    )
    assert choice.series_columns == []
