"""Forecast with the trained model: python predict.py INPUT.jsonl OUTPUT.jsonl

Each input row names a time (the time column); the answer is the forecast for that time, counting
steps from the end of the history the model was trained on. Loads $ZX_OUTPUT (safetensors, JSON).
"""

import json
import os
import sys

from safetensors.torch import load_file

from series import forecast, time_value


def main():
    input_path, output_path = sys.argv[1], sys.argv[2]
    output_dir = os.environ["ZX_OUTPUT"]
    with open(os.path.join(output_dir, "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    tensors = load_file(os.path.join(output_dir, "model.safetensors"))
    history, coefficients = tensors["history"], tensors["coefficients"]
    with open(input_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    # how many steps after the last observation each row asks about
    offsets = []
    for row in rows:
        value, unit = time_value(row[config["time_column"]], config["time_unit"])
        if unit != config["time_unit"]:
            raise ValueError(f"{row[config['time_column']]!r} is not a time like the training data's")
        offsets.append(round((value - config["last_time"]) / config["time_step"]))
    horizon = max([o for o in offsets if o > 0], default=0)
    ahead = forecast(history, config["season_length"], config["lags"], coefficients, horizon)
    with open(output_path, "w", encoding="utf-8") as f:
        for offset in offsets:
            # a time inside the history gets the value observed then
            value = ahead[offset - 1] if offset > 0 else float(history[max(len(history) - 1 + offset, 0)])
            f.write(json.dumps({"prediction": value}) + "\n")


if __name__ == "__main__":
    main()
