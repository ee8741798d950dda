"""README.md, the Makefile and .ci/run say what is true: generated settings, real variables, real targets."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from zehanx_cli.settings_doc import all_env_names, replace_in

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_the_readme_settings_tables_match_the_settings_classes() -> None:
    assert replace_in(README) == README, "run .venv/bin/python scripts/settings_table.py --write"


def test_the_readme_opens_with_three_sentences_then_the_two_commands() -> None:
    intro, _, rest = README.partition("```sh\n")
    prose = " ".join(intro.split("\n")[1:]).strip()
    assert len(re.findall(r"[.!?](?:\s|$)", prose)) == 3, prose
    commands = rest.split("```", 1)[0]
    assert [line.split()[0:2] for line in commands.strip().splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]


def test_every_variable_the_cloud_backends_section_names_is_read_by_a_setting() -> None:
    known = all_env_names()
    rows = [
        line for line in section("Cloud backends").splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert len(rows) >= 6
    for row in rows[1:]:
        names = set(re.findall(r"`([A-Z][A-Z0-9_]+)(?:=[^`]*)?`", row))
        assert names, row
        if "not built yet" in row:
            continue
        assert names <= known, f"{sorted(names - known)} are not read by any settings class: {row}"


def test_make_help_lists_every_documented_target() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"help", "setup", "test", "demo", "proto", "lint", "bench", "clean"} <= listed
    for target in re.findall(r"^\| `make ([a-z-]+)`", section("Development"), re.M):
        assert target in listed, f"README documents make {target}, which the Makefile lacks"


def test_make_test_sets_up_checks_generated_code_and_runs_pytest() -> None:
    # Under `make test` this runs inside make: MAKELEVEL would make it print "Entering directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "test"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = plan.splitlines()
    assert lines[0] == "scripts/setup.sh"
    assert any("scripts/gen_protos.py --check" in line for line in lines)
    assert any(re.search(r"pytest -q --timeout=\d+ .*tests/", line) for line in lines)


def test_ci_runs_make_test_from_the_repository_root() -> None:
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert text.rstrip().endswith("make test")
