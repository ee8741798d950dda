"""Forecast with the trained model: python predict.py INPUT.jsonl OUTPUT.jsonl

Each input row names a time (the time column); the answer is the forecast for that time, counting
steps from the end of the history the model was trained on. Loads $ZX_OUTPUT (safetensors, JSON).

The platform's resident predictor imports this file, calls load(model_dir) once and then
predict(state, rows) for each batch of rows; main() is the same for one file of rows.
"""

import json
import os
import sys

from safetensors.torch import load_file

from series import forecast, time_value


def load(output_dir):
    with open(os.path.join(output_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    tensors = load_file(os.path.join(output_dir, "model.safetensors"))
    return tensors["history"], tensors["coefficients"], config


def predict(state, rows):
    history, coefficients, config = state
    # how many steps after the last observation each row asks about
    offsets = []
    for row in rows:
        value, unit = time_value(row[config["time_column"]], config["time_unit"])
        if unit != config["time_unit"]:
            raise ValueError(f"{row[config['time_column']]!r} is not a time like the training data's")
        offsets.append(round((value - config["last_time"]) / config["time_step"]))
    horizon = max([o for o in offsets if o > 0], default=0)
    ahead = forecast(history, config["season_length"], config["lags"], coefficients, horizon)
    results = []
    for offset in offsets:
        # a time inside the history gets the value observed then
        value = ahead[offset - 1] if offset > 0 else float(history[max(len(history) - 1 + offset, 0)])
        results.append({"prediction": value})
    return results


#% include predict_main
