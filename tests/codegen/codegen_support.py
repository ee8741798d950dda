"""Fixtures of the codegen tests: real datasets written once per session, the domain wired as the
service wires it (template backend)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # realdata.py and running.py sit next to the tests

import realdata
from zehanx_codegen.app import build_codegen
from zehanx_codegen.service import Codegen
from zehanx_codegen.settings import CodegenSettings

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
