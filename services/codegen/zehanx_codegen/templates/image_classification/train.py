"""{{title}}

Written by Zehanx codegen (template image_classification). Reads train.jsonl and validation.jsonl
from $ZX_DATA, writes the model to $ZX_OUTPUT, reports through zxrt. ZX_SMOKE=1 runs a quick check.

Recipe: {{summary}}
"""

import copy
import json
import math
import os
import time

import torch
import torch.nn.functional as F

import zxrt
from model import Ensemble

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
                if row.get(target_column) is not None:
                    rows.append(row)
    return rows


def pixels(row):
    """One row's pixels as a flat list, row-major (height, width, channels)."""
#% if pixel_columns
    return [float(row[c]) for c in pixel_columns]
#% else
    value = row[image_column]
    while value and isinstance(value[0], list):  # nested rows of pixels: flatten them
        value = [v for part in value for v in part]
    return [float(v) for v in value]
#% endif


def to_images(rows):
    """Rows → a float tensor (N, channels, height, width) with values in [0, 1]."""
    flat = torch.tensor([pixels(r) for r in rows], dtype=torch.float32)
    if flat.shape[1] != height * width * channels:
        raise ValueError(f"an image has {flat.shape[1]} values; expected {height}x{width}x{channels}")
    return flat.view(-1, height, width, channels).permute(0, 3, 1, 2) * pixel_scale


def augment(x, generator):
    """Random small rotations and shifts (and flips, when they keep the meaning): more data for free."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotate_degrees)
    # affine_grid measures shifts in half-image units: 2 / size per pixel
    dx = (torch.rand(n, generator=generator) * 2 - 1) * shift_pixels * 2 / width
    dy = (torch.rand(n, generator=generator) * 2 - 1) * shift_pixels * 2 / height
    theta = torch.stack([
        torch.stack([angle.cos(), -angle.sin(), dx], 1),
        torch.stack([angle.sin(), angle.cos(), dy], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    if horizontal_flip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def learning_rate_at(step, total_steps):
    """Warm up over the first 10% of the steps, then follow a cosine down to zero."""
    warmup = max(1, total_steps // 10)
    if step < warmup:
        return learning_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate(model, x, y):
    """Accuracy and mean loss on a held-out split, in batches so memory stays flat."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(y), 512):
            logits = model(x[start : start + 512])
            correct += (logits.argmax(1) == y[start : start + 512]).sum().item()
            loss += F.cross_entropy(logits, y[start : start + 512], reduction="sum").item()
    return correct / len(y), loss / len(y)


def main():
    cfg = zxrt.env()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    started = time.time()

    zxrt.phase("data_loading")
    train_rows = read_rows(cfg.data_dir, "train.jsonl")
    val_rows = read_rows(cfg.data_dir, "validation.jsonl")
    if cfg.smoke:  # a quick check that everything runs: a few rows, one short epoch
        train_rows, val_rows = train_rows[:128], val_rows[:64]
    if not train_rows or not val_rows:
        raise SystemExit(f"train.jsonl and validation.jsonl need rows with a value in {target_column!r}")
    # Class labels keep their JSON type (3 stays a number, "cat" stays a string).
    by_key = {}
    for row in train_rows + val_rows:
        by_key.setdefault(str(row[target_column]), row[target_column])
    keys = sorted(by_key)
    classes = [by_key[k] for k in keys]
    class_index = {k: i for i, k in enumerate(keys)}
    if len(classes) < 2:
        raise SystemExit(f"only one class in {target_column!r}: nothing to learn")
    x_train, x_val = to_images(train_rows), to_images(val_rows)
    y_train = torch.tensor([class_index[str(r[target_column])] for r in train_rows])
    y_val = torch.tensor([class_index[str(r[target_column])] for r in val_rows])

    zxrt.phase("model_building")
    model = Ensemble(members, channels, height, width, conv_channels, stem_stride, len(classes), dropout)
    model = model.to(cfg.device)
    x_val, y_val = x_val.to(cfg.device), y_val.to(cfg.device)
    n_epochs = 1 if cfg.smoke else epochs
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    step = 0  # counts the steps of every member, for the progress reports
    used = members  # may drop to one CNN when the first epoch shows there is no time for more

    # Each member trains on its own: its own random start, order and augmentation, its own schedule.
    for index, member in enumerate(model.members):
        torch.manual_seed(cfg.seed + index)
        total_steps = n_epochs * steps_per_epoch
        optimizer = torch.optim.AdamW(member.parameters(), lr=learning_rate, weight_decay=weight_decay)
        zxrt.phase("training")
        best = (-1.0, 0, None)  # (validation accuracy, epoch, weights) of this member
        member_step = 0
        epoch = 0
        while epoch < n_epochs:
            epoch += 1
            epoch_started = time.time()
            member.train()
            order = torch.randperm(len(y_train), generator=generator)  # shuffle: the data may be sorted by label
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                lr = learning_rate_at(member_step, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                xb = augment(x_train[idx], generator).to(cfg.device)
                loss = F.cross_entropy(member(xb), y_train[idx].to(cfg.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                member_step += 1
                elapsed = time.time() - started
                all_steps = used * total_steps
                zxrt.log_metrics(step=step, epoch=index * n_epochs + epoch - 1, loss=loss.item(), lr=lr,
                                 total_steps=all_steps, samples_per_s=step * batch_size / max(elapsed, 1e-9),
                                 eta_s=elapsed / step * max(all_steps - step, 0))
                if cfg.smoke and member_step >= 3:
                    break
            zxrt.phase("validation")
            val_accuracy, val_loss = evaluate(member, x_val, y_val)
            zxrt.log_metrics(step=step, epoch=index * n_epochs + epoch,
                             val={"accuracy": val_accuracy, "loss": val_loss, "member": index})
            if val_accuracy > best[0]:  # keep the epoch that did best on data it never trained on
                best = (val_accuracy, epoch, copy.deepcopy(member.state_dict()))
            zxrt.phase("training")
            if index == 0 and epoch == 1 and cfg.time_budget_s:
                # Now that one epoch is timed, plan only the epochs that fit in the budget for every
                # member (with room to save), and shorten the learning-rate schedule to match.
                epoch_s = time.time() - epoch_started
                left = 0.8 * cfg.time_budget_s - (time.time() - started)
                affordable = int(left / epoch_s / used) + 1
                if used > 1 and affordable < 15:  # too few epochs for each: one CNN trained longer is better
                    used = 1
                    model.members = model.members[:1]
                    affordable = int(left / epoch_s) + 1
                    n_epochs = min(affordable, 2 * n_epochs)
                    total_steps = n_epochs * steps_per_epoch
                    zxrt.log(f"{epoch_s:.1f} s per epoch: one CNN of {n_epochs} epochs, not {members}", "warning")
                if affordable < n_epochs:
                    n_epochs = max(1, affordable)
                    total_steps = n_epochs * steps_per_epoch
                    zxrt.log(f"{epoch_s:.1f} s per epoch: training {n_epochs} epochs per member to fit the "
                             "time budget", "warning")
        member.load_state_dict(best[2])
        zxrt.log(f"member {index + 1} of {used}: validation accuracy {best[0]:.4f} at epoch {best[1]}")
        if index + 1 >= used:
            break

    val_accuracy, val_loss = evaluate(model, x_val, y_val)
    zxrt.log_metrics(step=step, epoch=used * n_epochs, val={"accuracy": val_accuracy, "loss": val_loss})
    zxrt.save_model(model, {
        "family": "image_classification",
        "target_column": target_column,
#% if pixel_columns
        "pixel_columns": pixel_columns,
#% else
        "image_column": image_column,
#% endif
        "classes": classes,
        "height": height,
        "width": width,
        "channels": channels,
        "pixel_scale": pixel_scale,
        "conv_channels": conv_channels,
        "stem_stride": stem_stride,
        "members": used,
    })
    zxrt.report_final({"val_accuracy": val_accuracy, "members": used, "epochs_per_member": n_epochs,
                       "train_rows": len(train_rows), "train_seconds": time.time() - started})


if __name__ == "__main__":
    main()
