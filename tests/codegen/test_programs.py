"""For each task family: plan from a real dataset profile, generate, validate, then run the program
for real (smoke run, a short full run, predict.py on the held-out split) and check the contract and
the score against the trainer's baseline on the same rows.

The quality bar against the classical baselines of ../shared/data/README.md (3-minute budgets) is
``bench/bench_codegen.py``; these runs get 20 s each and must still learn something real.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import realdata
import running
from codegen_support import TEST_BUDGET_S
from safetensors import safe_open
from zehanx_codegen.domain import TaskFamily
from zehanx_codegen.planner import PlanOptions
from zehanx_codegen.service import Codegen


def _train_and_predict(
    codegen: Codegen,
    data: realdata.Prepared,
    prompt: str,
    work: Path,
    runs: list | None = None,
    budget_s: float = TEST_BUDGET_S,
):
    plan = codegen.plan(prompt, data.profile)
    assert plan.task_family is data.task
    generated = codegen.generate(prompt, plan, data.profile)
    assert generated.validation.passed, generated.validation.summary()
    assert generated.backend == "template"
    folder = running.lay_out(generated.program, work, data.folder / "data")

    smoke = running.train(folder, smoke=True)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert smoke.of("model") and smoke.of("metric"), "a smoke run reports metrics and saves a model"
    assert (folder / "output" / "model.safetensors").is_file()
    smoke_predictions = running.predict(folder, data.test_inputs)
    assert len(smoke_predictions) == len(data.test_targets)

    full = running.train(folder, smoke=False, budget_s=budget_s)
    assert full.returncode == 0, full.stderr[-3000:]
    if runs is not None:
        runs.append(full)
    model = full.of("model")[-1]
    weights = folder / "output" / "model.safetensors"
    assert model["path"] == "model.safetensors" and model["bytes"] == weights.stat().st_size
    with safe_open(str(weights), framework="pt") as f:  # real safetensors, readable without pickle
        assert list(f.keys())
    config = json.loads((folder / "output" / "model_config.json").read_text())
    assert config["target_column"] == data.target
    assert full.of("final"), "the program states its own claim"
    assert any(any(k.startswith("val.") for k in r) for r in full.of("metric")), "validation metrics streamed"
    predictions = running.predict(folder, data.test_inputs)
    assert len(predictions) == len(data.test_targets)
    return plan, generated, predictions


def _majority(rows: list[dict], target: str):
    values = [str(r[target]) for r in rows]
    return max(set(values), key=values.count)


def test_image_classification_digits_learns_far_beyond_the_majority_class(
    codegen: Codegen, digits: realdata.Prepared, tmp_path: Path
) -> None:
    plan, _, predictions = _train_and_predict(codegen, digits, "classify handwritten digits", tmp_path)
    assert plan.model_family == "small_cnn" and plan.hyperparameters["horizontal_flip"] is False
    assert plan.hyperparameters["pixel_scale"] == pytest.approx(1 / 16)  # the schema's value range, not 255
    labels = [p["prediction"] for p in predictions]
    assert all(isinstance(v, int) for v in labels), "labels keep their JSON type"
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in predictions)
    accuracy = realdata.accuracy(digits.test_targets, labels)
    majority = realdata.accuracy(digits.test_targets, [_majority(digits.fit_rows, "digit")] * len(labels))
    assert accuracy >= 0.93 > majority + 0.5, (accuracy, majority)


def test_tabular_classification_penguins_matches_the_classical_baseline(
    codegen: Codegen, penguins: realdata.Prepared, tmp_path: Path
) -> None:
    plan, _, predictions = _train_and_predict(codegen, penguins, "predict the species of a penguin", tmp_path)
    assert plan.target_column == "species" and plan.model_family == "mlp"
    assert set(plan.hyperparameters["categorical_columns"]) == {"island", "sex"}
    accuracy = realdata.accuracy(penguins.test_targets, [p["prediction"] for p in predictions])
    assert accuracy >= 0.96, accuracy  # LR's 5-fold CV: 0.994; 52 test rows, one error is 0.02


def test_tabular_regression_diabetes_beats_the_training_mean(
    codegen: Codegen, diabetes: realdata.Prepared, tmp_path: Path
) -> None:
    plan, _, predictions = _train_and_predict(codegen, diabetes, "predict disease progression", tmp_path)
    assert plan.task_family is TaskFamily.TABULAR_REGRESSION and plan.metric_name == "rmse"
    values = [p["prediction"] for p in predictions]
    assert all(isinstance(v, float) for v in values)
    mean = statistics.fmean(r["progression"] for r in diabetes.fit_rows)
    ours = realdata.rmse(diabetes.test_targets, values)
    baseline = realdata.rmse(diabetes.test_targets, [mean] * len(values))
    assert ours < 0.9 * baseline, (ours, baseline)


def test_text_classification_sentiment_beats_the_majority_class_by_far(
    codegen: Codegen, sentiment: realdata.Prepared, tmp_path: Path
) -> None:
    plan, _, predictions = _train_and_predict(
        codegen, sentiment, "sentiment analysis of review sentences", tmp_path
    )
    assert plan.hyperparameters["text_column"] == "sentence"
    assert plan.model_family == "tfidf_linear"  # the encoder is switched off in these tests
    accuracy = realdata.accuracy(sentiment.test_targets, [p["prediction"] for p in predictions])
    assert accuracy >= 0.78, accuracy  # majority class: 0.5; classical TF-IDF+LR: ~0.83


def test_forecasting_airline_beats_seasonal_naive_and_holt_winters(
    codegen: Codegen, airline: realdata.Prepared, tmp_path: Path
) -> None:
    plan, _, predictions = _train_and_predict(
        codegen, airline, "forecast monthly airline passengers", tmp_path
    )
    assert plan.metric_name == "mape" and plan.hyperparameters["time_column"] == "Date"
    forecast = [p["prediction"] for p in predictions]
    history = [r["Passengers"] for r in airline.fit_rows]
    naive = [history[-12 + (i % 12)] for i in range(len(forecast))]
    ours = realdata.mape(airline.test_targets, forecast)
    assert ours < realdata.mape(airline.test_targets, naive)
    assert ours <= 0.045, ours  # Holt-Winters on the same 36 months: 0.051 (README); measured 0.043


def _validation_predictions(data: realdata.Prepared, work: Path) -> tuple[list, list[dict]]:
    """predict.py (its own process, reading only safetensors and JSON) on the validation rows."""
    rows = [json.loads(line) for line in (data.folder / "data" / "validation.jsonl").read_text().splitlines()]
    inputs = work.parent / "validation_inputs.jsonl"
    inputs.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != data.target}) + "\n" for r in rows)
    )
    return [r[data.target] for r in rows], running.predict(work, inputs)


def test_tabular_trees_regression_predicts_what_training_measured(
    codegen: Codegen, diamonds_price: realdata.Prepared, tmp_path: Path
) -> None:
    runs: list[running.Run] = []
    work = tmp_path / "work"
    plan, generated, predictions = _train_and_predict(
        codegen, diamonds_price, "predict the price of a diamond", work, runs, budget_s=6
    )
    assert (
        plan.model_family == "gradient_boosted_trees" and plan.hyperparameters["target_transform"] == "none"
    )
    assert set(generated.program.files) == {"train.py", "predict.py", "trees.py"}
    assert "Target transform: none" in plan.rationale
    values = [p["prediction"] for p in predictions]
    assert all(isinstance(v, float) for v in values)
    mean = statistics.fmean(r["price"] for r in diamonds_price.fit_rows)
    ours = realdata.rmse(diamonds_price.test_targets, values)
    assert ours < 0.25 * realdata.rmse(diamonds_price.test_targets, [mean] * len(values)), ours
    # train.py's RMSE on the validation rows, with the trees it kept, is what predict.py gives there
    claimed = runs[0].of("final")[-1]
    assert 0 < claimed["metrics.rounds"] == claimed["metrics.trees"]
    targets, val_predictions = _validation_predictions(diamonds_price, work)
    measured = realdata.rmse(targets, [p["prediction"] for p in val_predictions])
    assert measured == pytest.approx(claimed["metrics.val_rmse"], rel=1e-9)


def test_tabular_trees_classification_predicts_what_training_measured(
    codegen: Codegen, diamonds_cut: realdata.Prepared, tmp_path: Path
) -> None:
    runs: list[running.Run] = []
    work = tmp_path / "work"
    plan, _, predictions = _train_and_predict(
        codegen, diamonds_cut, "predict the cut of a diamond", work, runs
    )
    assert (
        plan.model_family == "gradient_boosted_trees"
        and plan.task_family is TaskFamily.TABULAR_CLASSIFICATION
    )
    accuracy = realdata.accuracy(diamonds_cut.test_targets, [p["prediction"] for p in predictions])
    majority = realdata.accuracy(
        diamonds_cut.test_targets, [_majority(diamonds_cut.fit_rows, "cut")] * len(predictions)
    )
    assert accuracy >= 0.68 > majority + 0.2, (accuracy, majority)  # HistGradientBoosting here: 0.736
    claimed = runs[0].of("final")[-1]
    assert claimed["metrics.trees"] == 5 * claimed["metrics.rounds"] > 0  # one tree per class a round
    targets, val_predictions = _validation_predictions(diamonds_cut, work)
    log_loss = -statistics.fmean(
        math.log(p["probabilities"][t]) for t, p in zip(targets, val_predictions, strict=True)
    )
    assert log_loss == pytest.approx(claimed["metrics.val_log_loss"], rel=1e-9)
    assert realdata.accuracy(targets, [p["prediction"] for p in val_predictions]) == pytest.approx(
        claimed["metrics.val_accuracy"]
    )


def test_series_classification_arrowhead_beats_nearest_neighbour_and_predicts_what_training_measured(
    codegen: Codegen, arrowhead: realdata.Prepared, tmp_path: Path
) -> None:
    runs: list[running.Run] = []
    work = tmp_path / "work"
    plan, generated, predictions = _train_and_predict(
        codegen, arrowhead, "classify arrowhead outlines", work, runs, budget_s=30
    )
    assert (
        plan.task_family is TaskFamily.TIME_SERIES_CLASSIFICATION and plan.model_family == "minirocket_ridge"
    )
    assert set(generated.program.files) == {"train.py", "predict.py", "minirocket.py"}
    labels = [p["prediction"] for p in predictions]
    assert all(isinstance(v, int) for v in labels), "labels keep their JSON type"
    accuracy = realdata.accuracy(arrowhead.test_targets, labels)
    assert accuracy >= 0.85, accuracy  # official test split: 1-NN Euclidean 0.800, MiniRocket + ridge 0.887
    claimed = runs[0].of("final")[-1]
    assert claimed["metrics.features"] == 9996 and claimed["metrics.train_rows"] == 36
    _, val_predictions = _validation_predictions(arrowhead, work)
    top = statistics.fmean(max(p["probabilities"].values()) for p in val_predictions)
    assert top == pytest.approx(claimed["metrics.final_val_top_probability"], rel=1e-9)


def test_series_in_one_list_column_marked_by_the_schema_runs_the_same_template_with_softmax_regression(
    codegen: Codegen, data_root: Path, tmp_path: Path
) -> None:
    data = realdata.arrowhead(data_root, as_list=True)
    plan = codegen.plan("classify arrowhead outlines", data.profile)
    assert plan.task_family is TaskFamily.TIME_SERIES_CLASSIFICATION
    assert (plan.hyperparameters["series_column"], plan.hyperparameters["series_columns"]) == ("outline", [])
    assert plan.hyperparameters["classifier"] == "ridge"  # 211 rows; from 4,000 on: softmax regression
    # this smoke run takes the softmax-regression path (the full ArrowHead run above takes the ridge)
    plan = dataclasses.replace(plan, hyperparameters={**plan.hyperparameters, "classifier": "logistic"})
    generated = codegen.generate("classify arrowhead outlines", plan, data.profile)
    assert generated.validation.passed, generated.validation.summary()
    folder = running.lay_out(generated.program, tmp_path / "work", data.folder / "data")
    smoke = running.train(folder, smoke=True)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    predictions = running.predict(folder, data.test_inputs)
    assert len(predictions) == 175 and {p["prediction"] for p in predictions} <= {0, 1, 2}


def test_an_ensemble_of_two_cnns_is_saved_whole_and_predicts_averaged_probabilities(
    codegen: Codegen, digits: realdata.Prepared, tmp_path: Path
) -> None:
    plan = codegen.plan("classify handwritten digits", digits.profile)
    assert plan.hyperparameters["members"] == 1  # 1,797 images (and 20 s): one CNN
    options = PlanOptions(time_budget_s=180)
    assert codegen.planner.plan("classify digits", digits.profile, options).hyperparameters["members"] == 1
    bigger = dataclasses.replace(digits.profile, row_count=5_000)  # as many images as MNIST-5k
    roomy = codegen.planner.plan("classify handwritten digits", bigger, options)
    assert roomy.hyperparameters["members"] == 2 and "two CNNs trained apart" in roomy.rationale
    plan = dataclasses.replace(plan, hyperparameters={**plan.hyperparameters, "members": 2})
    generated = codegen.generate("classify handwritten digits", plan, digits.profile)
    assert generated.validation.passed and "members = 2" in generated.program.files["train.py"]
    folder = running.lay_out(generated.program, tmp_path / "work", digits.folder / "data")
    smoke = running.train(folder, smoke=True)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert json.loads((folder / "output" / "model_config.json").read_text())["members"] == 2
    with safe_open(str(folder / "output" / "model.safetensors"), framework="pt") as f:
        assert {k.split(".")[1] for k in f.keys()} == {"0", "1"}  # members.0.*, members.1.*
    predictions = running.predict(folder, digits.test_inputs)
    assert len(predictions) == len(digits.test_targets)
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in predictions)
