"""Fixtures of the codegen tests: real datasets written once per session, the domain wired as the
service wires it (template backend)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # realdata.py and running.py sit next to the tests

import realdata
from zehanx_codegen.app import build_codegen
from zehanx_codegen.service import Codegen
from zehanx_codegen.settings import CodegenSettings


def pyflakes(files: Mapping[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    """``files`` (a rendered program) written to ``folder`` and checked by ruff's pyflakes rules and syntax
    errors; the repo's own lint skips the templates, whose config block only exists once rendered."""
    for path, text in files.items():
        (folder / path).write_text(text)
    ruff = Path(sys.executable).with_name("ruff")
    return subprocess.run(
        [str(ruff), "check", "--isolated", "--select", "F,E9", "--target-version", "py311", str(folder)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


#: Seconds of training each full run gets in these tests (the planner sizes the model to it).
TEST_BUDGET_S = 20.0


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("codegen-data")


@pytest.fixture(scope="session")
def codegen() -> Codegen:
    return build_codegen(CodegenSettings(time_budget_s=TEST_BUDGET_S, allow_pretrained_encoder=False))


@pytest.fixture(scope="session")
def digits(data_root: Path) -> realdata.Prepared:
    return realdata.digits(data_root)


@pytest.fixture(scope="session")
def penguins(data_root: Path) -> realdata.Prepared:
    return realdata.penguins(data_root)


@pytest.fixture(scope="session")
def diabetes(data_root: Path) -> realdata.Prepared:
    return realdata.diabetes(data_root)


@pytest.fixture(scope="session")
def sentiment(data_root: Path) -> realdata.Prepared:
    return realdata.sentiment(data_root)


@pytest.fixture(scope="session")
def airline(data_root: Path) -> realdata.Prepared:
    return realdata.airline(data_root)


@pytest.fixture(scope="session")
def diamonds_price(data_root: Path) -> realdata.Prepared:
    return realdata.diamonds_sample(data_root, "price")


@pytest.fixture(scope="session")
def diamonds_cut(data_root: Path) -> realdata.Prepared:
    return realdata.diamonds_sample(data_root, "cut")


@pytest.fixture(scope="session")
def arrowhead(data_root: Path) -> realdata.Prepared:
    return realdata.arrowhead(data_root)
