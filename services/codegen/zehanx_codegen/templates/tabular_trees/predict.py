"""Predict with the trained gradient-boosted trees: python predict.py INPUT.jsonl OUTPUT.jsonl

Loads the forest from $ZX_OUTPUT (safetensors and JSON only) and writes one JSON object per input row.

The platform's resident predictor imports this file, calls load(model_dir) once and then
predict(state, rows) for each batch of rows; main() is the same for one file of rows.
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

from trees import bin_rows, forest_scores
#% if not regression
from trees import softmax
#% endif


def load(output_dir):
    with open(os.path.join(output_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return load_file(os.path.join(output_dir, "model.safetensors")), config


def predict(state, rows):
    forest, config = state
    scores = forest_scores(forest, bin_rows(rows, config["binning"]), config["outputs"], config["base_score"])
#% if regression
    values = np.exp(scores[:, 0]) if config["target_transform"] == "log" else scores[:, 0]
    return [{"prediction": float(v)} for v in values]
#% else
    classes = config["classes"]
    if scores.shape[1] == 1:  # two classes: the score is the log-odds of the second
        p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        probabilities = np.stack([1.0 - p1, p1], axis=1)
    else:
        probabilities = softmax(scores)
    results = []
    for p in probabilities.tolist():
        best = max(range(len(classes)), key=lambda i: p[i])
        results.append({"prediction": classes[best], "probabilities": {str(c): q for c, q in zip(classes, p)}})
    return results
#% endif


#% include predict_main
