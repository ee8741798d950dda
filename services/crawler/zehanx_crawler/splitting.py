"""Train / validation / test splits: stratified for classification, temporal for series, random otherwise.

Seeded with ``numpy.random.default_rng(seed)``: the same table, fractions and seed give the same split on
any machine. Stratified: each class is shuffled and cut by the fractions (largest-remainder rounding per
class, so a very rare class may land in train only). Temporal: rows in time order, the
oldest for training and the newest for testing, never shuffled. Identical rows (the SMS collection repeats
hundreds of messages) are kept, as the source has them, but always land in the same split, so no test row
is a copy of a training row. Split files of classification and
regression datasets are shuffled (seeded) so no file is sorted by class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from zehanx_runtime.errors import FailedPrecondition

from zehanx_crawler.domain import TaskFamily

SPLITS = ("train", "validation", "test")
MIN_ROWS = 10


@dataclass(frozen=True)
class Split:
    method: str
    seed: int
    fractions: tuple[float, float, float]
    indices: dict[str, list[int]]


def _cut(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Rows per split for ``n`` rows, by largest remainder."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return counts[0], counts[1], counts[2]


def split(
    labels: list[object] | None,
    n: int,
    task: TaskFamily,
    fractions: tuple[float, float, float],
    seed: int,
    groups: list[int] | None = None,
) -> Split:
    """Split ``n`` rows. Rows sharing a ``groups`` id (identical rows) always land in the same split."""
    if n < MIN_ROWS:
        raise FailedPrecondition(
            f"{n} rows are too few to train and evaluate a model (at least {MIN_ROWS} are needed)",
            reason="TOO_FEW_ROWS",
        )
    rng = np.random.default_rng(seed)
    if task == TaskFamily.TIME_SERIES_FORECASTING:
        n_train, n_val, _ = _cut(n, fractions)
        order = list(range(n))
        return Split(
            "temporal", seed, fractions,
            {"train": order[:n_train], "validation": order[n_train : n_train + n_val],
             "test": order[n_train + n_val :]},
        )  # fmt: skip
    # Units of assignment: groups of identical rows (or single rows).
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(groups[i] if groups is not None else i, []).append(i)
    units = list(members)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}

    def assign(chosen: list[int]) -> None:
        order = np.array(chosen, dtype=np.int64)
        rng.shuffle(order)
        a, b, _ = _cut(len(order), fractions)
        for name, piece in (("train", order[:a]), ("validation", order[a : a + b]), ("test", order[a + b :])):
            for unit in piece.tolist():
                parts[name] += members[unit]

    if task.is_classification and labels is not None:
        method = "stratified"
        by_class: dict[object, list[int]] = {}
        for unit in units:
            by_class.setdefault(labels[members[unit][0]], []).append(unit)
        for label in sorted(by_class, key=lambda v: (str(type(v)), v)):
            assign(by_class[label])
    else:
        method = "random"
        assign(units)
    for name in SPLITS:
        shuffled = np.array(parts[name], dtype=np.int64)
        rng.shuffle(shuffled)
        parts[name] = shuffled.tolist()
    if not parts["train"] or (fractions[2] > 0 and not parts["test"]):
        raise FailedPrecondition(f"{n} rows leave an empty train or test split", reason="TOO_FEW_ROWS")
    return Split(method, seed, fractions, parts)
