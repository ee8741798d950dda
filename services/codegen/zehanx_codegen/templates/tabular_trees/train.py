"""{{title}}

Written by Zehanx codegen (template tabular_trees). Reads train.jsonl and validation.jsonl from
$ZX_DATA, writes the model to $ZX_OUTPUT, reports through zxrt. ZX_SMOKE=1 runs a quick check.

Recipe: {{summary}}
"""

import json
import math
import os
import time

import numpy as np

import zxrt
#% if regression
from trees import TreeBuilder, as_number, bin_rows, fit_binning, is_missing, pack_forest, predict_tree
#% else
from trees import TreeBuilder, bin_rows, fit_binning, is_missing, pack_forest, predict_tree, softmax
#% endif

# -----------------------------------------------------------------------------
# config: chosen by the planner from the data profile; edit and rerun
# {{config}}
# -----------------------------------------------------------------------------


def read_rows(data_dir, name):
    """One JSON object per line; rows without a target value are skipped."""
    rows = []
    with open(os.path.join(data_dir, name), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if not is_missing(row.get(target_column)):
                    rows.append(row)
    return rows


#% if regression
def targets(rows):
    values = np.array([as_number(r[target_column]) for r in rows])
    if np.isnan(values).any():
        raise SystemExit(f"{target_column!r} holds a value that is not a number")
    if target_transform == "log" and (values <= 0).any():
        raise SystemExit(f"target_transform 'log' needs {target_column!r} > 0; set it to 'none'")
    return values


def to_model_scale(y):
    return np.log(y) if target_transform == "log" else y


def from_model_scale(scores):
    return np.exp(scores[:, 0]) if target_transform == "log" else scores[:, 0]


def gradients(scores, z):
    """Squared error on the model's scale: gradient and hessian per row."""
    return [(scores[:, 0] - z, np.ones(len(z)))]


def validation_loss(scores, y):
    """Validation RMSE in the target's own units (smaller is better)."""
    rmse = math.sqrt(float(np.mean((from_model_scale(scores) - y) ** 2)))
    return rmse, {"rmse": rmse}
#% else
def gradients(scores, y):
    """Log loss: gradient and hessian per row, for each output."""
    if scores.shape[1] == 1:  # two classes: one score, the log-odds of the second
        p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return [(p - y, np.maximum(p * (1.0 - p), 1e-16))]
    p = softmax(scores)
    return [(p[:, k] - (y == k), np.maximum(p[:, k] * (1.0 - p[:, k]), 1e-16)) for k in range(scores.shape[1])]


def probabilities(scores):
    if scores.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    return softmax(scores)


def validation_loss(scores, y):
    """Validation log loss (smaller is better) and accuracy."""
    p = probabilities(scores)
    log_loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))))
    return log_loss, {"log_loss": log_loss, "accuracy": float(np.mean(p.argmax(1) == y))}
#% endif


def main():
    cfg = zxrt.env()
    started = time.time()
    budget_s = cfg.time_budget_s or 180.0

    zxrt.phase("data_loading")
    train_rows = read_rows(cfg.data_dir, "train.jsonl")
    val_rows = read_rows(cfg.data_dir, "validation.jsonl")
    iterations = max_iterations
    if cfg.smoke:  # a quick check that everything runs: a few rows, a few trees
        train_rows, val_rows, iterations = train_rows[:200], val_rows[:100], 3
    if not train_rows or not val_rows:
        raise SystemExit(f"train.jsonl and validation.jsonl need rows with a value in {target_column!r}")

    binning = fit_binning(train_rows, numeric_columns, categorical_columns, max_categories)
    x_train, x_val = bin_rows(train_rows, binning), bin_rows(val_rows, binning)
    categorical = [False] * len(numeric_columns) + [True] * len(categorical_columns)
#% if regression
    y_train, y_val = targets(train_rows), targets(val_rows)
    z_train = to_model_scale(y_train)
    base_score = [float(z_train.mean())]  # the first guess: the mean, on the model's scale
#% else
    # Class labels keep their JSON type (0/1 stay numbers, "Adelie" stays a string).
    by_key = {}
    for row in train_rows + val_rows:
        by_key.setdefault(str(row[target_column]), row[target_column])
    keys = sorted(by_key)
    classes = [by_key[k] for k in keys]
    if len(classes) < 2:
        raise SystemExit(f"only one class in {target_column!r}: nothing to learn")
    class_index = {k: i for i, k in enumerate(keys)}
    y_train = np.array([class_index[str(r[target_column])] for r in train_rows])
    y_val = np.array([class_index[str(r[target_column])] for r in val_rows])
    z_train = y_train
    # the first guess: the training frequencies (log-odds, or log-priors for several classes)
    prior = np.clip(np.bincount(y_train, minlength=len(classes)) / len(y_train), 1e-6, 1.0)
    base_score = [float(math.log(prior[1] / prior[0]))] if len(classes) == 2 else [float(v) for v in np.log(prior)]
#% endif
    outputs = len(base_score)

    # Boost: each round fits one tree per output to the gradient of the loss. The validation loss
    # after each round picks how many rounds to keep (early stopping); the time budget caps them.
    zxrt.phase("training")
    builder = TreeBuilder(x_train, categorical, max_leaves, min_leaf_rows, l2)
    all_rows = np.arange(len(x_train))
    scores_train = np.tile(np.array(base_score), (len(x_train), 1))
    scores_val = np.tile(np.array(base_score), (len(x_val), 1))
    trees = []
    best = (math.inf, 0, {})  # (validation loss, rounds, validation metrics)
    for round_ in range(1, iterations + 1):
        for k, (g, h) in enumerate(gradients(scores_train, z_train)):
            tree, leaf_rows = builder.grow(all_rows, g, h, learning_rate)
            for node, rows in leaf_rows.items():
                scores_train[rows, k] += tree["value"][node]
            scores_val[:, k] += predict_tree(tree, x_val)
            trees.append(tree)
        loss, metrics = validation_loss(scores_val, y_val)
        elapsed = time.time() - started
        zxrt.log_metrics(step=round_, total_steps=iterations, val=metrics,
                         samples_per_s=round_ * len(x_train) / max(elapsed, 1e-9))  # fmt: skip
        if loss < best[0]:
            best = (loss, round_, metrics)
        elif round_ - best[1] >= patience:  # early stopping
            break
        if elapsed > time_share * budget_s:
            zxrt.log(f"stopping after {round_} rounds: {elapsed:.0f} s of the {budget_s:.0f} s budget used")
            break
    best_loss, best_rounds, best_metrics = best

    zxrt.phase("saving")
    forest = pack_forest(trees[: best_rounds * outputs])
    zxrt.save_model(forest, {
        "family": "tabular_trees",
        "target_column": target_column,
        "binning": binning,
        "outputs": outputs,
        "base_score": base_score,
#% if regression
        "target_transform": target_transform,
#% else
        "classes": classes,
#% endif
    })
    final = {f"val_{name}": value for name, value in best_metrics.items()}
    final.update({"rounds": best_rounds, "trees": len(forest["roots"]), "train_rows": len(train_rows),
                  "train_seconds": time.time() - started})  # fmt: skip
    zxrt.report_final(final)


if __name__ == "__main__":
    main()
