"""Rows → a matrix of numbers, shared by train.py and predict.py so both encode a row the same way.

Numbers are standardised (minus the training mean, over the training spread) and get a 0/1 flag
saying whether they were missing; a missing number becomes 0, the mean. Categories become one-hot
columns over the most common training values, plus one slot for "other" and one for "missing".
Everything the encoding learned from the data is plain JSON, stored in model_config.json: lists,
not dicts, because the order of the columns is the order of the network's inputs.
"""

import math
from collections import Counter

import torch


def is_missing(value):
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def as_number(value):
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # unparseable counts as missing


def fit_encoding(rows, numeric_columns, categorical_columns, max_categories):
    numeric = []  # [column, mean, spread] per numeric column
    for column in numeric_columns:
        values = [as_number(r.get(column)) for r in rows if not is_missing(r.get(column))]
        values = [v for v in values if v is not None and math.isfinite(v)]
        mean = sum(values) / len(values) if values else 0.0
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if values else 1.0
        numeric.append([column, mean, spread if spread > 1e-12 else 1.0])
    categories = []  # [column, [values seen most often]] per categorical column
    for column in categorical_columns:
        counts = Counter(str(r[column]) for r in rows if not is_missing(r.get(column)))
        categories.append([column, [value for value, _ in counts.most_common(max_categories)]])
    return {"numeric": numeric, "categories": categories}


def width(encoding):
    return 2 * len(encoding["numeric"]) + sum(len(values) + 2 for _, values in encoding["categories"])


def encode(rows, encoding):
    out = torch.zeros(len(rows), width(encoding))
    for i, row in enumerate(rows):
        j = 0
        for column, mean, spread in encoding["numeric"]:
            value = None if is_missing(row.get(column)) else as_number(row.get(column))
            if value is None or not math.isfinite(value):
                out[i, j + 1] = 1.0  # the missing flag; the value itself stays 0 (= the mean)
            else:
                out[i, j] = (value - mean) / spread
            j += 2
        for column, values in encoding["categories"]:
            value = row.get(column)
            if is_missing(value):
                out[i, j + len(values) + 1] = 1.0
            elif str(value) in values:
                out[i, j + values.index(str(value))] = 1.0
            else:
                out[i, j + len(values)] = 1.0  # a category not seen (often enough) in training
            j += len(values) + 2
    return out
