"""The JSON of Predict's hot path (orjson) gives exactly what json gives: the same values, the same
refusals, the standard library where the two differ; and the predictor's runner works with or without
orjson in the sandbox's Python."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from zehanx_trainer import fastjson
from zehanx_trainer.evaluation import check_predictions, parse_predictions
from zehanx_trainer.prediction import predictions_jsonl
from zehanx_trainer.serving import RUNNER_PATH

TEXTS = [
    b'{"a": 1, "b": [1.5, -2, "x", null, true]}',
    b"18446744073709551616",  # 2**64: orjson would read a float
    b'{"n": -9223372036854775809}',  # below -2**63
    b"[12345678901234567890123]",
    b'{"p": 0.0012345678901234567}',  # a long fraction: not an integer
    b"NaN",  # json reads it (its callers refuse it)
    b"[1e400]",  # json: inf
    b'"\\ud800"',  # a lone surrogate escape
    '"\u00e9t\u00e9"'.encode(),
]


@pytest.mark.parametrize("text", TEXTS)
def test_loads_gives_what_json_gives(text: bytes) -> None:
    got, want = fastjson.loads(text), json.loads(text)
    assert json.dumps(got) == json.dumps(want)  # NaN compares unequal to itself; its text does not
    assert type(got) is type(want)
    if isinstance(want, dict) and "n" in want:
        assert type(got["n"]) is int


@pytest.mark.parametrize("text", [b"[1,]", b"{", b"\xff", b"[1] x", b'"a\tb"'])
def test_loads_refuses_what_json_refuses_with_its_message(text: bytes) -> None:
    with pytest.raises(ValueError) as got:
        fastjson.loads(text)
    with pytest.raises(ValueError) as want:
        json.loads(text)
    assert str(got.value) == str(want.value)


def test_long_integers_are_found_and_fractions_are_not() -> None:
    assert fastjson.may_hold_long_int(b'{"a": 1234567890123456789}')
    assert fastjson.may_hold_long_int(b"[-1234567890123456789]")
    assert fastjson.may_hold_long_int(b"1234567890123456789")
    assert not fastjson.may_hold_long_int(b'{"a": 123456789012345678, "b": 0.00123456789012345678901}')


def test_dumps_refuses_nan_and_writes_none_and_long_integers_as_json_does() -> None:
    with pytest.raises(ValueError):
        fastjson.dumps({"rows": [{"x": math.nan}]})
    with pytest.raises(TypeError):
        fastjson.dumps({"rows": [object()]})
    for value in ({"rows": [{"x": None}]}, {"rows": [{"x": 2**70}]}, {"rows": [{"x": "é", "y": 1.5}]}):
        assert json.loads(fastjson.dumps(value)) == value


ANSWERS: list[Any] = [
    {"prediction": "setosa", "probabilities": {"setosa": 0.75, "versicolor": 0.25}},
    {"prediction": 3},
    {"prediction": 2**70, "probabilities": None},
    {"prediction": None, "probabilities": {}},
    {"prediction": False, "probabilities": 0},
    {"prediction": 1.5, "probabilities": {"a": 1}},  # an integer probability: the long way
    {"prediction": [{"prediction": 1}, {"prediction": 2}]},  # looks like two lines once written
    {"prediction": '},{"prediction":', "probabilities": {'},{"prediction":': 1.0}},
    {"prediction": "a", "note": "kept out of the answer"},
]


def test_usual_and_unusual_answers_check_and_write_as_the_file_parser_reads_them() -> None:
    lines = "".join(json.dumps(a) + "\n" for a in ANSWERS).encode()
    checked = check_predictions(ANSWERS, len(ANSWERS), None)
    assert checked == parse_predictions(lines, len(ANSWERS), None)
    written = predictions_jsonl(checked)
    assert written.count(b"\n") == len(ANSWERS)
    back = [json.loads(line) for line in written.splitlines()]
    assert [(b["prediction"], b.get("probabilities", {})) for b in back] == checked
    assert type(back[2]["prediction"]) is int


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({"prediction": "a", "extra": math.nan}, "not finite"),  # a key beside the usual ones
        ({"prediction": "a", "probabilities": {"a": math.inf}}, "finite numbers|not finite"),
        ({"prediction": "a", "probabilities": {"a": True}}, "finite numbers"),
        ({"prediction": "a", "probabilities": ["a"]}, "finite numbers"),
        ({"prediction": 10**400}, "does not fit a double"),
        ({"prediction": -math.inf}, "not finite"),
        ({"probabilities": {"a": 1.0}}, 'a "prediction" key'),
    ],
)
def test_the_one_pass_check_refuses_what_the_long_way_refuses(answer: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_predictions([answer], 1, None)


PROGRAM = """
def load(model_dir):
    return None


def predict(state, rows):
    return [
        {"prediction": r["x"] if r["x"] != "nan" else float("nan"), "probabilities": {"a": 0.5}}
        for r in rows
    ]
"""


@pytest.mark.parametrize("orjson", [True, False], ids=["with-orjson", "standard-library-only"])
def test_the_runner_answers_the_same_with_or_without_orjson(tmp_path: Path, orjson: bool) -> None:
    (tmp_path / "predict.py").write_text(PROGRAM)
    (tmp_path / "zx_predictor.py").write_bytes(RUNNER_PATH.read_bytes())
    block = "" if orjson else "sys.modules['orjson'] = None; "  # import orjson then fails
    start = f"import runpy, sys; {block}runpy.run_path('zx_predictor.py', run_name='__main__')"
    requests = [
        b'{"hello": 1}',
        b'{"rows": [{"x": 12345678901234567890123}, {"x": "\\u00e9"}, {"x": 1.5}]}',
        b'{"rows": [{"x": "nan"}]}',  # a NaN prediction: this call's error, the runner keeps serving
        b'{"rows": [{"x": null}]}',
        b'{"rows": [{"x": "a"}]}',
    ]
    done = subprocess.run(
        [sys.executable, "-c", start, "predict", "output", "i1"],
        cwd=tmp_path,
        input=b"\n".join(requests) + b"\n",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers[0]["ready"]["instance"] == "i1"
    assert [p["prediction"] for p in answers[1]["predictions"]] == [12345678901234567890123, "é", 1.5]
    assert answers[2]["error"]["type"] == "ValueError"
    assert answers[3] == {"predictions": [{"prediction": None, "probabilities": {"a": 0.5}}]}
    # Which wrote the plain answer: orjson writes no spaces, json does.
    plain = done.stdout.splitlines()[4]
    assert plain.startswith(b'{"predictions":[' if orjson else b'{"predictions": [')
    assert json.loads(plain) == {"predictions": [{"prediction": "a", "probabilities": {"a": 0.5}}]}
