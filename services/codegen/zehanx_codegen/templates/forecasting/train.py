"""{{title}}

Written by Zehanx codegen (template forecasting). Reads train.jsonl and validation.jsonl from
$ZX_DATA (consecutive stretches of one series), writes the model to $ZX_OUTPUT, reports through
zxrt. ZX_SMOKE=1 runs a quick check.

Recipe: {{summary}}
"""

import json
import os
import statistics
import time

import torch

import zxrt
from series import difference, fit, forecast, season_from_spacing, time_value

# -----------------------------------------------------------------------------
# config: chosen by the planner from the data profile; edit and rerun
# {{config}}
# -----------------------------------------------------------------------------


def read_series(data_dir, name, unit=None):
    """(time, value) pairs in time order; rows without a value are skipped."""
    points = []
    with open(os.path.join(data_dir, name), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if row.get(target_column) is not None and row.get(time_column) is not None:
                    points.append((time_value(row[time_column], unit), float(row[target_column])))
    return sorted(points, key=lambda p: p[0][0])


def error(actual, predicted):
    """MAPE when the series stays positive, else MAE: the plan's metric."""
    if all(a > 0 for a in actual):
        return sum(abs(a - p) / a for a, p in zip(actual, predicted)) / len(actual)
    return sum(abs(a - p) for a, p in zip(actual, predicted)) / len(actual)


def candidate_lags(season, n):
    """Lag sets to try: recent steps, the season, and both; only those the data can support."""
    sets = [short_lags[:1], list(short_lags)]
    if season > 1:
        sets += [[1, season], list(short_lags) + [season], [1, season, season + 1]]
    return [lags for lags in sets if max(lags) < n // 3]


def main():
    cfg = zxrt.env()
    started = time.time()

    zxrt.phase("data_loading")
    train_points = read_series(cfg.data_dir, "train.jsonl")
    val_points = read_series(cfg.data_dir, "validation.jsonl")
    if len(train_points) < 8 or not val_points:
        raise SystemExit("the series needs at least 8 training points and one validation point")
    units = {t[1] for t, _ in train_points + val_points}
    if units == {"month", "day"}:  # daily dates, some of them on the 1st: read them all as days
        train_points = read_series(cfg.data_dir, "train.jsonl", "day")
        val_points = read_series(cfg.data_dir, "validation.jsonl", "day")
        units = {"day"}
    if len(units) != 1:
        raise SystemExit(f"the time column {time_column!r} mixes kinds of times: {sorted(units)}")
    unit = units.pop()
    times = [t[0] for t, _ in train_points + val_points]
    step = statistics.median(b - a for a, b in zip(times, times[1:]))
    if step <= 0:
        raise SystemExit(f"two rows share a time in {time_column!r}: one value per time is needed")
    season = season_length or season_from_spacing(step, unit)
    y_train = torch.tensor([v for _, v in train_points], dtype=torch.float64)
    y_val = [v for _, v in val_points]
    if season > 1 and len(y_train) < 3 * season + 2:
        zxrt.log(f"{len(y_train)} points are too few for a season of {season}; fitting without one", "warning")
        season = 1

    # 1) pick the lags on the validation stretch: fit on the training part, forecast the rest
    zxrt.phase("training")
    candidates = candidate_lags(season, len(difference(y_train, season)))
    if not candidates:
        raise SystemExit(f"{len(y_train)} points are too few to fit any lag set")
    if cfg.smoke:
        candidates = candidates[:1]
    best = None
    for i, lags in enumerate(candidates, start=1):
        coefficients = fit(y_train, season, lags, ridge)
        score = error(y_val, forecast(y_train, season, lags, coefficients, len(y_val)))
        zxrt.log_metrics(step=i, total_steps=len(candidates), val={"score": score, "max_lag": max(lags)})
        zxrt.log(f"lags {lags}: validation error {score:.4f}")
        if best is None or score < best[0]:
            best = (score, lags)
    val_score, lags = best

    # 2) refit on all the history with those lags: the latest points matter most for a forecast
    y_all = torch.tensor([v for _, v in train_points + val_points], dtype=torch.float64)
    coefficients = fit(y_all, season, lags, ridge)
    zxrt.save_model({"history": y_all, "coefficients": coefficients}, {
        "family": "forecasting",
        "time_column": time_column,
        "target_column": target_column,
        "time_unit": unit,
        "time_step": step,
        "last_time": times[-1],
        "season_length": season,
        "lags": lags,
    })
    metric = "val_mape" if all(v > 0 for v in y_val) else "val_mae"
    zxrt.report_final({metric: val_score, "season_length": season, "history_points": len(y_all),
                       "train_seconds": time.time() - started})


if __name__ == "__main__":
    main()
