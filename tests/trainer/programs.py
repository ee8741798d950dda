"""Small real programs for the trainer tests (numpy + safetensors only: they start in well under a
second, so a whole Train run costs a few seconds). Each follows docs/program_contract.md; variants
differ in one behaviour the tests look for.

The task (the ``tiny`` dataset): label is "pos" when x > 0. train.py searches thresholds on x; one
threshold candidate per step, loss = training error of the best threshold so far.
"""

from __future__ import annotations

from zehanx.common.v1 import program_pb2

TRAIN = '''\
"""Threshold classifier on one numeric column (a tiny real program)."""
import json
import os
import sys
import time

import numpy as np

import zxrt
from features import column

cfg = zxrt.env()
zxrt.phase("data_loading")
rows = [json.loads(line) for line in open(cfg.data_dir / "train.jsonl") if line.strip()]
val = [json.loads(line) for line in open(cfg.data_dir / "validation.jsonl") if line.strip()]
zxrt.log("ZX_DATA holds " + json.dumps(sorted(os.listdir(cfg.data_dir))))
zxrt.log("ZX_SMOKE=" + os.environ.get("ZX_SMOKE", "<unset>"))
# @@BEFORE_MODEL@@
zxrt.phase("model_building")
x, y = column(rows, "x"), np.array([r["label"] == "pos" for r in rows])
xv, yv = column(val, "x"), np.array([r["label"] == "pos" for r in val])
zxrt.phase("training")
candidates = np.sort(x)[:: 2 if cfg.smoke else 1]
best, best_err = float(candidates[0]), 1.0
for step, t in enumerate(candidates, start=1):
    err = float(np.mean((x > t) != y))
    if err < best_err:
        best, best_err = float(t), err
    zxrt.log_metrics(step, epoch=0, loss=best_err, lr=0.0, total_steps=len(candidates), force=True)
    # @@IN_LOOP@@
    if cfg.smoke and step >= 3:
        break
val_acc = float(np.mean((xv > best) == yv))
zxrt.log_metrics(len(candidates), epoch=1, val={"accuracy": val_acc})
# @@BEFORE_SAVE@@
zxrt.report_final({"accuracy": val_acc})
zxrt.save_model({"threshold": np.array([best], dtype=np.float32)}, {"classes": ["neg", "pos"]})
'''

FEATURES = """\
import numpy as np


def column(rows, name):
    return np.array([float(r[name]) for r in rows])
"""

PREDICT = '''\
"""python predict.py INPUT.jsonl OUTPUT.jsonl; a resident predictor calls load() once, predict() per batch."""
import json
import os
import sys

from safetensors.numpy import load_file

import zxrt


def load(model_dir):
    return float(load_file(os.path.join(model_dir, "model.safetensors"))["threshold"][0])


def predict(threshold, rows):
    out = []
    for row in rows:
        # @@IN_PREDICT@@
        label = "pos" if float(row["x"]) > threshold else "neg"  # @@PREDICT@@
        out.append({"prediction": label})
    return out


def main():
    zxrt.phase("prediction")
    threshold = load(str(zxrt.env().output_dir))
    with open(sys.argv[1]) as inp:
        rows = [json.loads(line) for line in inp if line.strip()]
    with open(sys.argv[2], "w") as out:
        for result in predict(threshold, rows):
            out.write(json.dumps(result) + "\\n")


if __name__ == "__main__":
    main()
'''

VARIANTS: dict[str, dict[str, str]] = {
    "honest": {},
    # Crashes while building the model, inside a helper file: a repairable smoke failure.
    "crash": {
        "# @@BEFORE_MODEL@@": 'zxrt.phase("model_building")\ncolumn(rows, "no_such_column")',
    },
    # Needs a module the sandbox does not have (as torch on a bare E2B template): the environment's fault.
    "needs_missing_module": {
        "# @@BEFORE_MODEL@@": "import zx_module_the_sandbox_lacks  # noqa: F401",
    },
    # Claims 0.99 everywhere, but predict.py answers a constant.
    "liar": {
        "# @@BEFORE_SAVE@@": 'zxrt.log_metrics(len(candidates), epoch=2, val={"accuracy": 0.99})\n'
        "val_acc = 0.99",
        'label = "pos" if float(row["x"]) > threshold else "neg"  # @@PREDICT@@': 'label = "neg"',
    },
    # Prints records that break the contract next to valid ones.
    "forger": {
        "# @@BEFORE_SAVE@@": "\n".join(
            [
                "forged = [",
                '    {"v": 1, "kind": "metric", "step": -5, "loss": 0.0},',
                '    {"v": 1, "kind": "metric", "step": 7, "loss": "low"},',
                '    {"v": 2, "kind": "metric", "step": 8, "loss": 0.0},',
                '    {"v": 1, "kind": "metric", "step": 9, "loss": 0.0, "admin": True},',
                '    {"v": 1, "kind": "teleport", "step": 10},',
                '    {"v": 1, "kind": "metric", "step": 11, "val.bad name!": 1.0},',
                '    {"v": 1, "kind": "checkpoint", "step": 1, "path": "../../etc/passwd",'
                ' "sha256": "0" * 64, "bytes": 1},',
                "]",
                "for record in forged:",
                '    print("@@zx:" + json.dumps(record), flush=True)',
                "# One valid-looking metric line far over the 64 KiB cap.",
                'print("@@zx:" + json.dumps({"v": 1, "kind": "metric", "step": 12, "loss": 0.0,'
                ' "val.x": 1.0, "pad": "A" * 70000}), flush=True)',
                'print("@@zx:{not json", flush=True)',
            ]
        ),
    },
    # The full run blocks (a long sleep) after its first metrics: for cancellation.
    "sleeper": {
        "# @@IN_LOOP@@": 'if not cfg.smoke and step == 2:\n        zxrt.log("sleeping")\n        time.sleep(600)',
    },
}


def tiny_program(variant: str = "honest") -> program_pb2.Program:
    train = TRAIN
    predict = PREDICT
    for marker, replacement in VARIANTS[variant].items():
        if marker in train:
            train = train.replace(marker, replacement)
        elif marker in predict:
            predict = predict.replace(marker, replacement)
        else:  # pragma: no cover - a typo in a variant
            raise KeyError(marker)
    files = {"train.py": train, "predict.py": predict, "features.py": FEATURES}
    return program_pb2.Program(
        files=[program_pb2.ProgramFile(path=p, content=c.encode()) for p, c in files.items()],
        train_entry_point="train.py",
        predict_entry_point="predict.py",
        runtime_version="1",
    )
