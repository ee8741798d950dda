"""Predict with the trained series classifier: python predict.py INPUT.jsonl OUTPUT.jsonl

Loads the model from $ZX_OUTPUT (safetensors and JSON only) and writes one JSON object per input row.

The platform's resident predictor imports this file, calls load(model_dir) once and then
predict(state, rows) for each batch of rows; main() is the same for one file of rows.
"""

import json
import os
import sys

from safetensors.torch import load_file

from minirocket import read_series, scores, transform


def load(output_dir):
    with open(os.path.join(output_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return load_file(os.path.join(output_dir, "model.safetensors")), config


def predict(state, rows):
    tensors, config = state
    x = read_series(rows, config["series_columns"], config["series_column"])
    if x.shape[1] != config["length"]:
        raise ValueError(f"series of length {x.shape[1]}; the model was trained on length {config['length']}")
    features = transform(x, config["dilations"], config["features_per_dilation"], tensors["biases"])
    raw = scores(features, tensors["weights"], tensors["intercept"])
    # ridge scores are not probabilities; a softmax over them ranks the classes the same way
    probabilities = raw.softmax(1)
    classes = config["classes"]
    results = []
    for s, p in zip(raw.tolist(), probabilities.tolist()):
        best = max(range(len(classes)), key=lambda i: s[i])
        results.append({
            "prediction": classes[best],
            "probabilities": {str(c): q for c, q in zip(classes, p)},
        })
    return results


#% include predict_main
