"""{{title}}

Written by Zehanx codegen (template tabular). Reads train.jsonl and validation.jsonl from $ZX_DATA,
writes the model to $ZX_OUTPUT, reports through zxrt. ZX_SMOKE=1 runs a quick check.

Recipe: {{summary}}
"""

import copy
import json
#% if regression
import math
#% endif
import os
import time

import torch
import torch.nn.functional as F

import zxrt
#% if regression
from features import as_number, encode, fit_encoding, is_missing
#% else
from features import encode, fit_encoding, is_missing
#% endif
from model import MLP

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
    values = [as_number(r[target_column]) for r in rows]
    if any(v is None or not math.isfinite(v) for v in values):
        raise SystemExit(f"{target_column!r} holds a value that is not a number")
    return torch.tensor(values)


def score(model, x, y, y_mean, y_std):
    """Validation RMSE in the target's own units (smaller is better)."""
    with torch.no_grad():
        predicted = model(x).squeeze(1) * y_std + y_mean
    return math.sqrt(F.mse_loss(predicted, y).item())


def loss_fn(output, y, y_mean, y_std):
    # the network predicts the standardised target, so the loss does not depend on its scale
    return F.mse_loss(output.squeeze(1), (y - y_mean) / y_std)
#% else
def targets(rows, class_index):
    return torch.tensor([class_index[str(r[target_column])] for r in rows])


def score(model, x, y):
    """Validation accuracy (larger is better)."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()
#% endif


def train(x, y, outputs, steps, seed, x_val=None, y_val=None, scale=None):
    """One visible loop of AdamW steps. With validation data, remember the best step and model."""
    torch.manual_seed(seed)
    model = MLP(x.shape[1], hidden_size, hidden_layers, outputs, dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best = (None, 0, None)  # (score, step, model state)
    checks_without_gain = 0
    started = time.time()
    for step in range(1, steps + 1):
        if batch_size and batch_size < len(y):
            idx = torch.randint(len(y), (batch_size,), generator=generator)
            xb, yb = x[idx], y[idx]
        else:  # full batch: small data fits at once and the gradient is exact
            xb, yb = x, y
        model.train()
#% if regression
        loss = loss_fn(model(xb), yb, *scale)
#% else
        loss = F.cross_entropy(model(xb), yb)
#% endif
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        zxrt.log_metrics(step=step, loss=loss.item(), total_steps=steps,
                         samples_per_s=step * len(yb) / max(time.time() - started, 1e-9))
        if x_val is None or step % eval_every and step != steps:
            continue
        model.eval()
#% if regression
        value = score(model, x_val, y_val, *scale)
        improved = best[0] is None or value < best[0]
        zxrt.log_metrics(step=step, val={"rmse": value})
#% else
        value = score(model, x_val, y_val)
        improved = best[0] is None or value > best[0]
        zxrt.log_metrics(step=step, val={"accuracy": value})
#% endif
        if improved:
            best = (value, step, copy.deepcopy(model.state_dict()))
            checks_without_gain = 0
        else:
            checks_without_gain += 1
            if checks_without_gain >= patience:  # early stopping
                break
    return model, best


def main():
    cfg = zxrt.env()
    torch.manual_seed(cfg.seed)
    started = time.time()

    zxrt.phase("data_loading")
    train_rows = read_rows(cfg.data_dir, "train.jsonl")
    val_rows = read_rows(cfg.data_dir, "validation.jsonl")
    if cfg.smoke:  # a quick check that everything runs: a few rows, a few steps
        train_rows, val_rows = train_rows[:64], val_rows[:32]
    if not train_rows or not val_rows:
        raise SystemExit(f"train.jsonl and validation.jsonl need rows with a value in {target_column!r}")
    steps = 3 if cfg.smoke else max_steps

    encoding = fit_encoding(train_rows, numeric_columns, categorical_columns, max_categories)
    x_train, x_val = encode(train_rows, encoding), encode(val_rows, encoding)
#% if regression
    outputs = 1
    y_train, y_val = targets(train_rows), targets(val_rows)
    scale = (y_train.mean().item(), y_train.std().item() if len(y_train) > 1 else 1.0)
    scale = (scale[0], scale[1] if scale[1] > 1e-12 else 1.0)
#% else
    # Class labels keep their JSON type (0/1 stay numbers, "Adelie" stays a string).
    by_key = {}
    for row in train_rows + val_rows:
        by_key.setdefault(str(row[target_column]), row[target_column])
    keys = sorted(by_key)
    classes = [by_key[k] for k in keys]
    class_index = {k: i for i, k in enumerate(keys)}
    outputs = len(classes)
    if outputs < 2:
        raise SystemExit(f"only one class in {target_column!r}: nothing to learn")
    y_train, y_val = targets(train_rows, class_index), targets(val_rows, class_index)
    scale = None
#% endif

    # 1) train on the training split, checking the validation split as we go (early stopping)
    zxrt.phase("training")
    _, (best_score, best_step, _) = train(x_train, y_train, outputs, steps, cfg.seed, x_val, y_val, scale)

    # 2) refit on train + validation for the number of steps that worked best
    all_rows = train_rows + val_rows
    encoding = fit_encoding(all_rows, numeric_columns, categorical_columns, max_categories)
    x_all = encode(all_rows, encoding)
    y_all = torch.cat([y_train, y_val])
#% if regression
    scale = (y_all.mean().item(), max(y_all.std().item(), 1e-12))
#% endif
    model, _ = train(x_all, y_all, outputs, max(best_step, 1), cfg.seed, scale=scale)

    zxrt.phase("saving")
    zxrt.save_model(model, {
        "family": "tabular",
        "target_column": target_column,
        "encoding": encoding,
        "inputs": x_all.shape[1],
        "hidden_size": hidden_size,
        "hidden_layers": hidden_layers,
#% if regression
        "outputs": 1,
        "target_mean": scale[0],
        "target_std": scale[1],
#% else
        "outputs": outputs,
        "classes": classes,
#% endif
    })
#% if regression
    zxrt.report_final({"val_rmse": best_score, "best_step": best_step, "train_rows": len(train_rows),
                       "train_seconds": time.time() - started})
#% else
    zxrt.report_final({"val_accuracy": best_score, "best_step": best_step, "train_rows": len(train_rows),
                       "train_seconds": time.time() - started})
#% endif


if __name__ == "__main__":
    main()
