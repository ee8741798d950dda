"""What the data looks like: rows, columns and types, classes and balance, text lengths, missing values."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from zehanx_crawler.cleaning import NUMERIC, Column, Table
from zehanx_crawler.splitting import SPLITS, Split
from zehanx_crawler.task import TaskChoice


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _text_stats(values: list[str]) -> dict[str, float]:
    chars = sorted(len(v) for v in values)
    words = sorted(len(v.split()) for v in values)
    return {
        "min_chars": chars[0],
        "mean_chars": _round(statistics.fmean(chars)),
        "median_chars": _round(_percentile(chars, 0.5)),
        "p95_chars": _round(_percentile(chars, 0.95)),
        "max_chars": chars[-1],
        "mean_words": _round(statistics.fmean(words)),
        "max_words": words[-1],
    }


def column_profile(col: Column, role: str) -> dict[str, Any]:
    present = col.present
    out: dict[str, Any] = {
        "name": col.name,
        "type": col.type,
        "role": role,
        "missing": col.missing,
        "distinct": col.distinct,
    }
    if col.type in NUMERIC and present:
        values = [float(v) for v in present]
        out.update(
            min=_round(min(values)),
            max=_round(max(values)),
            mean=_round(statistics.fmean(values)),
            std=_round(statistics.pstdev(values)) if len(values) > 1 else 0.0,
        )
    if col.type in ("text", "string", "category") and present:
        out["text_lengths"] = _text_stats([str(v) for v in present])
    if col.type in ("category", "boolean") and present:
        out["top_values"] = [[k, v] for k, v in Counter(present).most_common(10)]
    if col.type in ("date", "datetime") and present:
        out.update(min=min(present), max=max(present))
    if col.type == "image" and present:
        # Statistics over every pixel: the range tells a program how to scale (0..16 for scikit-learn's
        # digits, 0..255 for photos).
        pixels = np.asarray([v for image in present for v in image], dtype=np.float64)
        if pixels.size:
            out.update(
                min=_round(float(pixels.min())),
                max=_round(float(pixels.max())),
                mean=_round(float(pixels.mean())),
                std=_round(float(pixels.std())),
            )
    out.update({k: v for k, v in col.facts.items() if k in ("shape", "channels", "value_range", "percent")})
    return out


def _balance(counts: Counter[Any], n: int) -> dict[str, Any]:
    if not counts or not n:
        return {}
    most = counts.most_common()
    return {
        "majority_class": most[0][0],
        "majority_share": _round(most[0][1] / n),
        "minority_class": most[-1][0],
        "minority_share": _round(most[-1][1] / n),
        "imbalance_ratio": _round(most[0][1] / max(1, most[-1][1])),
    }


def profile(table: Table, choice: TaskChoice, split: Split) -> dict[str, Any]:
    n = table.n_rows
    roles = {choice.target: "target", **{name: "input" for name in choice.inputs}}
    roles.update({name: "ignored" for name in choice.ignored})
    if choice.time_column:
        roles[choice.time_column] = "time"
    hashable = all(c.type not in ("image", "list") for c in table.columns)
    duplicates = 0
    if hashable:
        rows = Counter(zip(*(c.values for c in table.columns), strict=True))
        duplicates = sum(k - 1 for k in rows.values() if k > 1)
    out: dict[str, Any] = {
        "rows": n,
        "split_rows": {name: len(split.indices[name]) for name in SPLITS},
        "columns": [column_profile(c, roles.get(c.name, "input")) for c in table.columns],
        "missing_values": {c.name: c.missing for c in table.columns if c.missing},
        "missing_cells": sum(c.missing for c in table.columns),
        "duplicate_rows": duplicates,
    }
    target = table.get(choice.target)
    if choice.task.is_classification:
        counts = Counter(target.values)
        out["classes"] = [
            {
                "label": label,
                "count": counts[label],
                "share": _round(counts[label] / n),
                "split_counts": {
                    s: sum(1 for i in split.indices[s] if target.values[i] == label) for s in SPLITS
                },
            }
            for label in choice.classes
        ]
        out["balance"] = _balance(counts, n)
    if choice.text_column:
        out["text_lengths"] = _text_stats([str(v) for v in table.get(choice.text_column).present])
    return out
