"""Predict with the trained tabular model: python predict.py INPUT.jsonl OUTPUT.jsonl

Loads the model from $ZX_OUTPUT (safetensors and JSON only) and writes one JSON object per input row.

The platform's resident predictor imports this file, calls load(model_dir) once and then
predict(state, rows) for each batch of rows; main() is the same for one file of rows.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file

from features import encode
from model import MLP


def load(output_dir):
    with open(os.path.join(output_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    model = MLP(config["inputs"], config["hidden_size"], config["hidden_layers"], config["outputs"], 0.0)
    model.load_state_dict(load_file(os.path.join(output_dir, "model.safetensors")))
    return model.eval(), config


def predict(state, rows):
    model, config = state
    with torch.no_grad():
        output = model(encode(rows, config["encoding"]))
#% if regression
    values = (output.squeeze(1) * config["target_std"] + config["target_mean"]).tolist()
    return [{"prediction": v} for v in values]
#% else
    classes = config["classes"]
    results = []
    for p in output.softmax(1).tolist():
        best = max(range(len(classes)), key=lambda i: p[i])
        results.append({"prediction": classes[best], "probabilities": {str(c): q for c, q in zip(classes, p)}})
    return results
#% endif


#% include predict_main
