"""Predict with the trained image classifier: python predict.py INPUT.jsonl OUTPUT.jsonl

Loads the model from $ZX_OUTPUT (safetensors and JSON only) and writes one JSON object per input row:
{"prediction": label, "probabilities": {label: p}}.

The platform's resident predictor imports this file, calls load(model_dir) once and then
predict(state, rows) for each batch of rows; main() is the same for one file of rows.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file

from model import Ensemble


def load(output_dir):
    with open(os.path.join(output_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    model = Ensemble(config["members"], config["channels"], config["height"], config["width"],
                     config["conv_channels"], config["stem_stride"], len(config["classes"]), 0.0)
    model.load_state_dict(load_file(os.path.join(output_dir, "model.safetensors")))
    return model.eval(), config


def pixels(row, config):
    """One row's pixels as a flat list, row-major (height, width, channels), like train.py reads them."""
#% if pixel_columns
    return [float(row[c]) for c in config["pixel_columns"]]
#% else
    value = row[config["image_column"]]
    while value and isinstance(value[0], list):  # nested rows of pixels: flatten them
        value = [v for part in value for v in part]
    return [float(v) for v in value]
#% endif


def predict(state, rows):
    model, config = state
    height, width, channels = config["height"], config["width"], config["channels"]
    classes = config["classes"]
    out = []
    for start in range(0, len(rows), 256):
        batch = [pixels(r, config) for r in rows[start : start + 256]]
        x = torch.tensor(batch, dtype=torch.float32).view(-1, height, width, channels).permute(0, 3, 1, 2)
        with torch.no_grad():
            probabilities = model(x * config["pixel_scale"]).softmax(1)
        for p in probabilities.tolist():
            best = max(range(len(classes)), key=lambda i: p[i])
            out.append({"prediction": classes[best], "probabilities": {str(c): q for c, q in zip(classes, p)}})
    return out


#% include predict_main
