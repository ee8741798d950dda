"""Predictions of the reference digits CNN: python predict.py INPUT.jsonl OUTPUT.jsonl

Each input line is an object with the image column (64 pixel values, row-major); each output line is
{"prediction": label, "probabilities": {label: p}}. Weights load from safetensors only.
"""

import json
import sys

import torch
import zxrt
from model import SmallCNN, images_to_tensor, read_jsonl
from safetensors.torch import load_file

zxrt.phase("prediction")
cfg = zxrt.env()
config = json.loads((cfg.output_dir / "model_config.json").read_text())
model = SmallCNN(len(config["classes"]), config["height"], config["width"], channels=config["channels"])
model.load_state_dict(load_file(cfg.output_dir / "model.safetensors"))
model.eval()

rows = read_jsonl(sys.argv[1])
x = images_to_tensor(
    [r[config["image_column"]] for r in rows], [config["height"], config["width"]], config["scale"]
)
with torch.no_grad():
    probabilities = torch.softmax(model(x), dim=1) if len(rows) else torch.empty(0, len(config["classes"]))

with open(sys.argv[2], "w", encoding="utf-8") as out:
    for p in probabilities.tolist():
        best = max(range(len(p)), key=p.__getitem__)
        label = config["classes"][best]
        out.write(
            json.dumps({"prediction": label, "probabilities": dict(zip(config["classes"], p, strict=False))})
            + "\n"
        )
