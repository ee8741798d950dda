"""{{title}}

Written by Zehanx codegen (template series_classification). Reads train.jsonl and validation.jsonl
from $ZX_DATA, writes the model to $ZX_OUTPUT, reports through zxrt. ZX_SMOKE=1 runs a quick check.

Recipe: {{summary}}
"""

import json
import os
import time

import torch

import zxrt
from minirocket import (
    fit_biases,
    fit_dilations,
    logistic_fit,
    read_series,
    ridge_fit,
    ridge_loo,
    scores,
    transform,
)

# -----------------------------------------------------------------------------
# config: chosen by the planner from the data profile; edit and rerun
# {{config}}
# -----------------------------------------------------------------------------


def read_rows(data_dir, name):
    """One JSON object per line; rows without a label are skipped."""
    rows = []
    with open(os.path.join(data_dir, name), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if row.get(target_column) not in (None, ""):
                    rows.append(row)
    return rows


def main():
    cfg = zxrt.env()
    started = time.time()
    torch.manual_seed(cfg.seed)

    zxrt.phase("data_loading")
    train_rows = read_rows(cfg.data_dir, "train.jsonl")
    val_rows = read_rows(cfg.data_dir, "validation.jsonl")
    features_wanted = num_features
    if cfg.smoke:  # a quick check that everything runs: a few rows, few features
        train_rows, val_rows, features_wanted = train_rows[:24], val_rows[:8], 84 * 4
    if not train_rows or not val_rows:
        raise SystemExit(f"train.jsonl and validation.jsonl need rows with a value in {target_column!r}")
    x_train = read_series(train_rows, series_columns, series_column)
    x_val = read_series(val_rows, series_columns, series_column)
    # Class labels keep their JSON type (0/1 stay numbers, "Clovis" stays a string).
    by_key = {}
    for row in train_rows + val_rows:
        by_key.setdefault(str(row[target_column]), row[target_column])
    keys = sorted(by_key)
    classes = [by_key[k] for k in keys]
    if len(classes) < 2:
        raise SystemExit(f"only one class in {target_column!r}: nothing to learn")
    class_index = {k: i for i, k in enumerate(keys)}
    y_train = torch.tensor([class_index[str(r[target_column])] for r in train_rows])
    y_val = torch.tensor([class_index[str(r[target_column])] for r in val_rows])

    # 1) MiniRocket features: fixed kernels, biases from the training series (train + validation:
    #    both are labelled data the classifier may learn from; nothing here looks at labels)
    zxrt.phase("model_building")
    x_all, y_all = torch.cat([x_train, x_val]), torch.cat([y_train, y_val])
    dilations, per_dilation = fit_dilations(x_all.shape[1], features_wanted)
    generator = torch.Generator().manual_seed(cfg.seed)
    biases = fit_biases(x_all, dilations, per_dilation, generator)
    f_train = transform(x_train, dilations, per_dilation, biases)
    f_val = transform(x_val, dilations, per_dilation, biases)
    f_all = torch.cat([f_train, f_val])
    zxrt.log(f"{f_all.shape[1]} MiniRocket features from {len(dilations)} dilations, {time.time() - started:.1f} s")

    zxrt.phase("training")
    if classifier == "ridge":
        # 2) ridge on the features: its strength picked by leave-one-out on the training rows,
        #    checked on the validation rows (an honest held-out score)...
        errors = ridge_loo(f_train, y_train, len(classes), alphas)
        alpha = alphas[min(range(len(alphas)), key=lambda i: errors[i])]
        weights, intercept = ridge_fit(f_train, y_train, len(classes), alpha)
        val_accuracy = (scores(f_val, weights, intercept).argmax(1) == y_val).double().mean().item()
        zxrt.log_metrics(step=1, total_steps=2, val={"accuracy": val_accuracy, "loo_error": min(errors)})
        # 3) ...then the same choice on train + validation together, and the final fit on all of them
        errors = ridge_loo(f_all, y_all, len(classes), alphas)
        alpha = alphas[min(range(len(alphas)), key=lambda i: errors[i])]
        weights, intercept = ridge_fit(f_all, y_all, len(classes), alpha)
        zxrt.log_metrics(step=2, total_steps=2, val={"loo_error": min(errors)})
    else:
        # 2) many rows: softmax regression on mini-batches, the epoch picked on the validation rows
        alpha = 0.0
        weights, intercept = logistic_fit(f_train, y_train, f_val, y_val, len(classes), 2 if cfg.smoke else 100,
                                          generator)
        val_accuracy = (scores(f_val, weights, intercept).argmax(1) == y_val).double().mean().item()
        zxrt.log_metrics(step=1, total_steps=1, val={"accuracy": val_accuracy})

    zxrt.phase("saving")
    zxrt.save_model(
        {"biases": biases, "weights": weights, "intercept": intercept},
        {
            "family": "series_classification",
            "target_column": target_column,
            "series_columns": series_columns,
            "series_column": series_column,
            "length": x_all.shape[1],
            "dilations": dilations,
            "features_per_dilation": per_dilation,
            "classes": classes,
            "classifier": classifier,
            "alpha": alpha,
        },
    )
    # what predict.py must reproduce: the final model's top probability on each validation row
    top = scores(f_val, weights, intercept).softmax(1).max(1).values
    zxrt.report_final({
        "val_accuracy": val_accuracy,
        "final_val_top_probability": float(top.mean()),
        "alpha": alpha,
        "features": f_all.shape[1],
        "train_rows": len(train_rows) + len(val_rows),
        "train_seconds": time.time() - started,
    })


if __name__ == "__main__":
    main()
