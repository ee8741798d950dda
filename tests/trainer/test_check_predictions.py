"""check_predictions: a resident predictor's parsed answer passes exactly the checks a one-shot run's
predictions.jsonl passes in parse_predictions (same results, same refusals)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from zehanx_trainer.evaluation import MAX_PREDICTION_DEPTH, check_predictions, parse_predictions

GOOD: list[Any] = [
    {"prediction": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1}},
    {"prediction": 2.5},
    {"prediction": [1, [2.0, None]], "probabilities": {}},
    {"prediction": True, "probabilities": {"a": 1}},
]


def test_a_good_answer_gives_what_the_file_parser_gives() -> None:
    lines = "".join(json.dumps(p) + "\n" for p in GOOD).encode()
    assert check_predictions(GOOD, len(GOOD), None) == parse_predictions(lines, len(GOOD), None)


def deep(levels: int) -> Any:
    value: Any = 1.0
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ([{"prediction": "a", "probabilities": {"a": float("nan")}}], "not finite"),
        ([{"prediction": float("inf")}], "not finite"),
        ([{"prediction": 10**400}], "does not fit a double"),
        ([{"prediction": deep(MAX_PREDICTION_DEPTH + 1)}], "nests deeper"),
        ([{"label": "a"}], 'a "prediction" key'),
        (["a"], 'a "prediction" key'),
        ([{"prediction": "a", "probabilities": {"a": "high"}}], "finite numbers"),
        ([{"prediction": "a"}, {"prediction": "b"}], "expected 1 predictions"),
    ],
)
def test_a_bad_answer_is_refused_naming_why(answer: list[Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_predictions(answer, 1, None)
