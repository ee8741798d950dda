"""Held-out evaluation: the trainer's own figures, computed from predictions and the test targets.

The program never sees the test targets; it maps test inputs to predictions inside the sandbox, and the
figures here are computed outside it, beside a simple baseline for scale:

- classification: accuracy, macro-F1, Matthews correlation (MCC); baseline: the training majority class.
- regression: RMSE, MAE, R²; baseline: the training mean.
- forecasting: MAPE (plus RMSE and MAE); baseline: seasonal naive (the last season of history repeated).

Plain numpy, checked against scikit-learn in the tests.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np


class EvaluationError(ValueError):
    """Predictions or targets that cannot be scored (wrong count, not a number, no history)."""


class TaskKind(Enum):
    """How the trainer scores a task family."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    FORECASTING = "forecasting"


#: The headline metric of each kind and whether higher is better.
PRIMARY_METRIC: dict[TaskKind, tuple[str, bool]] = {
    TaskKind.CLASSIFICATION: ("accuracy", True),
    TaskKind.REGRESSION: ("rmse", False),
    TaskKind.FORECASTING: ("mape", False),
}


@dataclass(frozen=True)
class Evaluation:
    """The trainer's held-out figures and the baseline's, on the same rows."""

    kind: TaskKind
    rows: int
    metrics: dict[str, float]
    baseline_name: str
    baseline_metrics: dict[str, float]

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.kind][0]

    @property
    def beats_baseline(self) -> bool:
        name, higher_is_better = PRIMARY_METRIC[self.kind]
        ours, theirs = self.metrics[name], self.baseline_metrics[name]
        return ours > theirs if higher_is_better else ours < theirs


def label_key(value: Any) -> str:
    """One spelling per class label: 3, 3.0 and "3" are the same class; true and "true" too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value.strip()
    raise EvaluationError(f"a class label must be a string, number or boolean, got {type(value).__name__}")


def _finite_floats(name: str, values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EvaluationError(f"{name}[{i}] must be a number, got {type(value).__name__}")
        try:
            out[i] = float(value)
        except OverflowError:  # an int beyond a double
            raise EvaluationError(f"{name}[{i}] is not a finite number") from None
        if not math.isfinite(out[i]):
            raise EvaluationError(f"{name}[{i}] is not a finite number")
    return out


# -- classification -----------------------------------------------------------------------------------


def classification_metrics(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """Accuracy, macro-F1 (over the labels seen in either list) and multiclass MCC."""
    if len(y_true) != len(y_pred) or not y_true:
        raise EvaluationError(
            f"need equally many targets and predictions, got {len(y_true)} and {len(y_pred)}"
        )
    true = [label_key(v) for v in y_true]
    pred = [label_key(v) for v in y_pred]
    labels = sorted(set(true) | set(pred))
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred, strict=True):
        confusion[index[t], index[p]] += 1
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {
        "accuracy": float(tp.sum() / len(true)),
        "macro_f1": float(f1.mean()),
        "mcc": _mcc(confusion),
    }


def _mcc(confusion: np.ndarray) -> float:
    """Matthews correlation for K classes (Gorodkin 2004); 0 when undefined, as scikit-learn does."""
    c = confusion.astype(np.float64)
    s = c.sum()
    correct = np.trace(c)
    t = c.sum(axis=1)
    p = c.sum(axis=0)
    cov_ytyp = correct * s - float(t @ p)
    cov_ypyp = s * s - float(p @ p)
    cov_ytyt = s * s - float(t @ t)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def majority_class(train_targets: Sequence[Any]) -> Any:
    """The most frequent training label (ties: the label seen first)."""
    if not train_targets:
        raise EvaluationError("the training split has no targets")
    counts = Counter(label_key(v) for v in train_targets)
    best = max(counts.values())
    for value in train_targets:
        if counts[label_key(value)] == best:
            return value
    raise AssertionError("unreachable")


# -- regression and forecasting -----------------------------------------------------------------------


def regression_metrics(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """RMSE, MAE and R² (R² is 1.0 for a perfect fit of a constant target, else 0.0 there)."""
    if len(y_true) != len(y_pred) or not y_true:
        raise EvaluationError(
            f"need equally many targets and predictions, got {len(y_true)} and {len(y_pred)}"
        )
    true = _finite_floats("targets", y_true)
    pred = _finite_floats("predictions", y_pred)
    err = true - pred
    ss_res = float(err @ err)
    ss_tot = float(((true - true.mean()) ** 2).sum())
    if ss_tot == 0.0:
        r2 = 1.0 if ss_res == 0.0 else 0.0
    else:
        r2 = 1.0 - ss_res / ss_tot
    return {"rmse": math.sqrt(ss_res / len(true)), "mae": float(np.abs(err).mean()), "r2": r2}


def mape(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Mean absolute percentage error as a fraction (0.05 = 5 %), as scikit-learn defines it."""
    true = _finite_floats("targets", y_true)
    pred = _finite_floats("predictions", y_pred)
    denominator = np.maximum(np.abs(true), np.finfo(np.float64).eps)
    return float((np.abs(true - pred) / denominator).mean())


def forecasting_metrics(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    metrics = regression_metrics(y_true, y_pred)
    return {"mape": mape(y_true, y_pred), "rmse": metrics["rmse"], "mae": metrics["mae"]}


def seasonal_naive(history: Sequence[Any], horizon: int, season: int) -> list[float]:
    """Forecast ``horizon`` steps after ``history`` by repeating its last ``season`` values."""
    values = _finite_floats("history", history)
    if horizon < 1:
        raise EvaluationError("the forecast horizon must be at least 1")
    if len(values) == 0:
        raise EvaluationError("the forecasting history is empty")
    season = max(1, min(season, len(values)))
    last = values[-season:]
    return [float(last[h % season]) for h in range(horizon)]


# -- one entry point ----------------------------------------------------------------------------------


def evaluate(
    kind: TaskKind,
    *,
    test_targets: Sequence[Any],
    predictions: Sequence[Any],
    train_targets: Sequence[Any],
    season: int = 1,
) -> Evaluation:
    """Score ``predictions`` against ``test_targets`` and the kind's baseline (fit on training data)."""
    rows = len(test_targets)
    if kind is TaskKind.CLASSIFICATION:
        majority = majority_class(train_targets)
        return Evaluation(
            kind=kind,
            rows=rows,
            metrics=classification_metrics(test_targets, predictions),
            baseline_name=f"majority class ({label_key(majority)})",
            baseline_metrics=classification_metrics(test_targets, [majority] * rows),
        )
    if kind is TaskKind.REGRESSION:
        if not train_targets:
            raise EvaluationError("the training split has no targets")
        mean = float(_finite_floats("training targets", train_targets).mean())
        return Evaluation(
            kind=kind,
            rows=rows,
            metrics=regression_metrics(test_targets, predictions),
            baseline_name=f"training mean ({mean:.6g})",
            baseline_metrics=regression_metrics(test_targets, [mean] * rows),
        )
    naive = seasonal_naive(train_targets, rows, season)
    return Evaluation(
        kind=kind,
        rows=rows,
        metrics=forecasting_metrics(test_targets, predictions),
        baseline_name=f"seasonal naive (season {max(1, min(season, len(train_targets)))})",
        baseline_metrics=forecasting_metrics(test_targets, naive),
    )


#: Bytes in one line of ``predictions.jsonl`` (a row's prediction and its probabilities; 1000 classes fit).
MAX_PREDICTION_LINE_BYTES = 1024 * 1024
#: Nesting of a prediction value (a list of lists of numbers is depth 3; JSON parsing recurses).
MAX_PREDICTION_DEPTH = 32
#: Digits of an integer in a prediction: any integer beyond this does not fit a double either.
MAX_PREDICTION_INT_DIGITS = 309


class _NumberError(ValueError):
    """A JSON number in a prediction that is not a finite double (raised from the parser's hooks)."""


def _finite_int(text: str) -> int:
    """``parse_int`` hook: refuse digit strings a double cannot hold, before ``int()`` converts them."""
    if len(text.lstrip("-")) > MAX_PREDICTION_INT_DIGITS:
        raise _NumberError(f"an integer of {len(text)} digits does not fit a double")
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise _NumberError(f"the integer {text:.20}... does not fit a double") from None
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberError(f"the number {text:.40} is not finite")
    return value


def _non_finite(text: str) -> float:
    raise _NumberError(f"{text} is not a number JSON allows")


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` deep (iterative: it may be deep)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


def parse_predictions(data: bytes, rows: int, kind: TaskKind | None) -> list[tuple[Any, dict[str, float]]]:
    """``predictions.jsonl``: one ``{"prediction": v, "probabilities": {...}?}`` per input row.

    ``kind`` checks the prediction's type (a label, a finite number); ``None`` accepts any JSON value
    that is not too large or too deeply nested. Raises ValueError with the first problem and its line:
    the file comes from a sandboxed program, so nothing in it may raise anything else. Pure CPU work
    over up to the collect cap (64 MiB): async callers run it in a thread.
    """
    try:
        return _parse_predictions(data, rows, kind)
    except ValueError:
        raise
    except (OverflowError, RecursionError, TypeError) as exc:  # defence in depth; the checks come first
        raise ValueError(f"the file cannot be read: {type(exc).__name__}: {exc!s:.200}") from None


def _parse_predictions(data: bytes, rows: int, kind: TaskKind | None) -> list[tuple[Any, dict[str, float]]]:
    out: list[tuple[Any, dict[str, float]]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(out) == rows:
            raise ValueError(f"expected {rows} predictions (one per input line), got more (line {number})")
        if len(raw) > MAX_PREDICTION_LINE_BYTES:
            raise ValueError(f"line {number} is longer than {MAX_PREDICTION_LINE_BYTES} bytes")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"line {number} is not UTF-8") from None
        try:
            obj = json.loads(
                line, parse_int=_finite_int, parse_float=_finite_float, parse_constant=_non_finite
            )
        except _NumberError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"line {number} nests deeper than {MAX_PREDICTION_DEPTH} levels") from None
        if nests_deeper(obj, MAX_PREDICTION_DEPTH + 1):  # the line's own object is one level
            raise ValueError(f"line {number} nests deeper than {MAX_PREDICTION_DEPTH} levels")
        out.append(_checked_prediction(obj, f"line {number}", kind))
    if len(out) != rows:
        raise ValueError(f"expected {rows} predictions (one per input line), got {len(out)}")
    return out


def check_predictions(
    answers: list[Any], rows: int, kind: TaskKind | None
) -> list[tuple[Any, dict[str, float]]]:
    """The checks of :func:`parse_predictions` on predictions already parsed from JSON (a resident
    predictor's answer, read with plain ``json.loads``): the same shape and limits, and every number
    a finite double (which ``parse_predictions`` checks while parsing). Raises ValueError naming the
    first bad one."""
    if len(answers) != rows:
        raise ValueError(f"expected {rows} predictions (one per input row), got {len(answers)}")
    out = []
    for number, obj in enumerate(answers, start=1):
        if kind is None:
            usual = _usual_prediction(obj)
            if usual is not None:
                out.append(usual)
                continue
        where = f"prediction {number}"
        bad = _non_double(obj, MAX_PREDICTION_DEPTH + 1)
        if bad:
            raise ValueError(f"{where}: {bad}")
        out.append(_checked_prediction(obj, where, kind))
    return out


#: Integers this small convert to a double (the checks below take larger ones the long way).
_SMALL_INT = 2**1023


def _usual_prediction(obj: Any) -> tuple[Any, dict[str, float]] | None:
    """The usual answer, ``{"prediction": a label or a number, "probabilities": {label: float}}``,
    checked in one pass: what :func:`_non_double` and :func:`_checked_prediction` with no kind give
    for it, or None for anything else (which they then check, and may refuse, the long way)."""
    if type(obj) is not dict or "prediction" not in obj:
        return None
    probabilities = obj.get("probabilities")
    if len(obj) != (1 if probabilities is None and "probabilities" not in obj else 2):
        return None
    value = obj["prediction"]
    kind = type(value)
    if not (
        kind is str
        or value is None
        or kind is bool
        or (kind is float and value - value == 0.0)  # finite: inf - inf and NaN are NaN
        or (kind is int and -_SMALL_INT < value < _SMALL_INT)
    ):
        return None
    if not probabilities:  # None, {} (and the other empty values the long way maps to {} as well)
        return value, {}
    if type(probabilities) is not dict:
        return None
    for label, p in probabilities.items():
        if type(label) is not str or type(p) is not float or p - p != 0.0:
            return None
    return value, dict(probabilities)


def _non_double(value: Any, depth_limit: int) -> str:
    """Why ``value`` is not JSON of finite doubles nested at most ``depth_limit`` deep, or ""."""
    if type(value) is dict and depth_limit >= 2:
        # The usual answer, {"prediction": label or number, "probabilities": {label: float}}, at once.
        flat = True
        for item in value.values():
            if type(item) is dict:
                if not all(type(p) is float and math.isfinite(p) for p in item.values()):
                    flat = False
                    break
            elif type(item) is float:
                if not math.isfinite(item):
                    flat = False
                    break
            elif type(item) is not str and item is not None and type(item) is not bool:
                flat = False
                break
        if flat:
            return ""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > depth_limit:  # the prediction's own object is one level
                return f"nests deeper than {depth_limit - 1} levels"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"the number {item} is not finite"
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                float(item)
            except OverflowError:
                return "an integer does not fit a double"
    return ""


def _checked_prediction(obj: Any, where: str, kind: TaskKind | None) -> tuple[Any, dict[str, float]]:
    """One prediction's shape (its depth checked already)."""
    if not isinstance(obj, dict) or "prediction" not in obj:
        raise ValueError(f'{where} must be an object with a "prediction" key')
    value = obj["prediction"]
    if kind is TaskKind.CLASSIFICATION:
        try:
            label_key(value)
        except EvaluationError as exc:
            raise ValueError(f"{where}: {exc}") from None
    elif kind is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise ValueError(f"{where}: the prediction must be a finite number, got {value!r:.40}")
    probabilities = obj.get("probabilities") or {}
    if not isinstance(probabilities, dict) or not all(
        isinstance(k, str) and isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p)
        for k, p in probabilities.items()
    ):
        raise ValueError(f"{where}: probabilities must map labels to finite numbers")
    return value, {k: float(p) for k, p in probabilities.items()}
