"""The static checks reject unsafe or broken programs with reasons that say where."""

from __future__ import annotations

import pytest
from zehanx_codegen.domain import MetricGoal, Plan, Program, TaskFamily
from zehanx_codegen.generator import TemplateGenerator
from zehanx_codegen.validator import Validator

PENGUIN_PLAN = Plan(
    task_family=TaskFamily.TABULAR_CLASSIFICATION,
    target_column="species",
    input_columns=("bill_length_mm", "island"),
    metric_name="accuracy",
    metric_goal=MetricGoal.MAXIMIZE,
    model_family="mlp",
    hyperparameters={
        "numeric_columns": ["bill_length_mm"],
        "categorical_columns": ["island"],
        "hidden_size": 16,
        "learning_rate": 0.01,
        "max_steps": 50,
    },
)


@pytest.fixture(scope="module")
def good() -> Program:
    return TemplateGenerator().generate(PENGUIN_PLAN)


def _with(program: Program, path: str, text: str) -> Program:
    return Program(files={**program.files, path: text})


def _failed(program: Program) -> dict[str, str]:
    report = Validator().validate(program)
    return {c.name: c.message for c in report.checks if not c.passed}


def test_every_template_program_passes(good: Program) -> None:
    report = Validator().validate(good)
    assert report.passed, report.summary()
    assert [c.name for c in report.checks][:3] == ["syntax", "entry_points", "uses_runtime_helper"]


def test_a_syntax_error_is_reported_with_file_and_line(good: Program) -> None:
    broken = _with(good, "model.py", good.files["model.py"] + "\ndef oops(:\n    pass\n")
    failed = _failed(broken)
    assert "model.py:" in failed["syntax"]
    assert len(failed) == 8 and failed["entry_points"].startswith("not checked")


@pytest.mark.parametrize(
    ("code", "check", "needle"),
    [
        ("import subprocess\nsubprocess.run(['ls'])\n", "no_subprocess", "subprocess"),
        ("import socket\n", "no_network", "socket"),
        ("import urllib.request\n", "no_network", "urllib"),
        ("import pickle\n", "no_dynamic_code", "pickle"),
        ("import torch\nstate = torch.load('output/model.pt')\n", "no_dynamic_code", "torch.load"),
        ("eval('1 + 1')\n", "no_dynamic_code", "eval"),
        ("import os\nos.system('id')\n", "no_subprocess", "os.system"),
        ("import requests\n", "no_network", "requests"),
        ("import pandas\n", "imports_allowed", "pandas"),
        ("x = ().__class__.__bases__\n", "no_dynamic_code", "__class__"),
        ("open('/etc/passwd').read()\n", "file_access", "open()"),
        ("import os\nopen(os.path.join(os.environ['ZX_DATA'], '..', 'secret'))\n", "file_access", "open()"),
    ],
)
def test_unsafe_code_is_rejected_with_a_reason(good: Program, code: str, check: str, needle: str) -> None:
    failed = _failed(_with(good, "helper.py", code))
    assert check in failed, failed
    assert needle in failed[check] and "helper.py:" in failed[check]


def test_missing_entry_points_and_runtime_helper_are_named(good: Program) -> None:
    no_predict = Program(files={k: v for k, v in good.files.items() if k != "predict.py"})
    assert "predict.py is missing" in _failed(no_predict)["entry_points"]
    no_main = _with(
        good, "train.py", good.files["train.py"].replace('if __name__ == "__main__":\n    main()', "")
    )
    assert "train.py has no" in _failed(no_main)["entry_points"]
    no_save = _with(good, "train.py", good.files["train.py"].replace("zxrt.save_model(", "print("))
    assert "zxrt.save_model" in _failed(no_save)["uses_runtime_helper"]


def test_a_predict_py_without_load_and_predict_is_refused_with_the_reason(good: Program) -> None:
    script_only = (
        "import json\nimport sys\n\n\ndef main():\n    rows = [json.loads(x) for x in open(sys.argv[1])]\n"
        "    with open(sys.argv[2], 'w') as f:\n        for _ in rows:\n"
        "            f.write(json.dumps({'prediction': 0}) + '\\n')\n\n\n"
        'if __name__ == "__main__":\n    main()\n'
    )
    failed = _failed(_with(good, "predict.py", script_only))["entry_points"]
    assert "predict.py defines no top-level load(model_dir)" in failed
    assert "predict(state, rows)" in failed and "resident predictor" in failed
    # The old three-argument predict(model, config, rows) is named with its line.
    old_shape = good.files["predict.py"].replace(
        "def predict(state, rows):", "def predict(model, config, rows):"
    )
    failed = _failed(_with(good, "predict.py", old_shape))["entry_points"]
    assert "predict() must take 2 positional argument(s): predict(state, rows)" in failed
    assert "predict.py:" in failed


def test_paths_from_the_data_and_output_folders_pass(good: Program) -> None:
    helper = (
        "import os\nimport zxrt\n\n\ndef read(name):\n    cfg = zxrt.env()\n"
        "    with open(os.path.join(cfg.data_dir, name)) as f:\n        return f.read()\n"
        "\n\ndef main():\n    return read('schema.json')\n"
    )
    assert _failed(_with(good, "helper.py", helper)) == {}
