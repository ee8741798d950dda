"""Small datasets written the way the crawler writes them, for suites that need one to train on."""

from __future__ import annotations

#: ``schema.json`` of :func:`tiny_rows`: a two-class table, label = x > 0.
TINY_SCHEMA = {
    "format": "zehanx.dataset",
    "format_version": 1,
    "task": "tabular_classification",
    "target": "label",
    "inputs": ["x"],
    "classes": ["neg", "pos"],
}


def tiny_rows() -> dict[str, list[dict[str, object]]]:
    """Train 60, validation 20 and test 30 rows of one number ``x`` and its sign as ``label``."""

    def split(n: int, offset: int) -> list[dict[str, object]]:
        return [
            {"x": ((i * 37 + offset) % 41) - 20.5, "label": "pos" if ((i * 37 + offset) % 41) > 20 else "neg"}
            for i in range(n)
        ]

    return {"train": split(60, 0), "validation": split(20, 7), "test": split(30, 13)}
