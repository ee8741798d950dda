"""Predictions of the reference digits CNN: python predict.py INPUT.jsonl OUTPUT.jsonl

Each input line is an object with the image column (64 pixel values, row-major); each output line is
{"prediction": label, "probabilities": {label: p}}. Weights load from safetensors only.

The platform's resident predictor imports this file, calls load(model_dir) once and then
predict(state, rows) for each batch of rows; main() does the same for one file of rows.
"""

import json
import os
import sys

import torch
import zxrt
from model import SmallCNN, images_to_tensor, read_jsonl
from safetensors.torch import load_file


def load(model_dir):
    with open(os.path.join(model_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    model = SmallCNN(len(config["classes"]), config["height"], config["width"], channels=config["channels"])
    model.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")))
    return model.eval(), config


def predict(state, rows):
    model, config = state
    if not rows:
        return []
    x = images_to_tensor(
        [r[config["image_column"]] for r in rows], [config["height"], config["width"]], config["scale"]
    )
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)
    out = []
    for p in probabilities.tolist():
        best = max(range(len(p)), key=p.__getitem__)
        out.append(
            {
                "prediction": config["classes"][best],
                "probabilities": dict(zip(config["classes"], p, strict=False)),
            }
        )
    return out


def main():
    zxrt.phase("prediction")
    state = load(str(zxrt.env().output_dir))
    rows = read_jsonl(sys.argv[1])
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        for result in predict(state, rows):
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
