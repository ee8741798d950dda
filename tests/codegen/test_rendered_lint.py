"""Rendered programs are clean Python: ruff's pyflakes rules (undefined names, unused imports and
variables) find nothing in any family's program. The templates themselves are excluded from the
repo's lint because their config block only exists once rendered."""

from __future__ import annotations

from pathlib import Path

import pytest
from codegen_support import pyflakes
from zehanx_codegen.service import Codegen

FAMILIES = [
    "digits",
    "penguins",
    "diabetes",
    "sentiment",
    "airline",
    "diamonds_price",
    "diamonds_cut",
    "arrowhead",
]
PROMPTS = {"digits": "classify handwritten digits", "penguins": "predict the species", "diabetes": "predict "
           "disease progression", "sentiment": "sentiment of sentences", "airline": "forecast passengers",
           "diamonds_price": "predict the price", "diamonds_cut": "predict the cut",
           "arrowhead": "classify the outlines"}  # fmt: skip


@pytest.mark.parametrize("dataset", FAMILIES)
def test_rendered_program_passes_pyflakes(
    codegen: Codegen, request: pytest.FixtureRequest, dataset: str, tmp_path: Path
) -> None:
    data = request.getfixturevalue(dataset)
    program = codegen.generate("", codegen.plan(PROMPTS[dataset], data.profile)).program
    proc = pyflakes(program.files, tmp_path)
    assert proc.returncode == 0, proc.stdout
