"""Template rendering (zehanx_codegen.render): ``#% include`` of a shared part, flags, errors."""

from __future__ import annotations

from importlib import resources

import pytest
from zehanx_codegen.render import TemplateError, render


def test_an_include_becomes_the_parts_lines_and_its_flags_apply() -> None:
    parts = {"tail": "#% if loud\nprint('LOUD')\n#% else\nprint('quiet')\n#% endif\n"}
    template = "x = 1\n#% include tail\ny = 2\n"
    assert render(template, flags={"loud": True}, parts=parts) == "x = 1\nprint('LOUD')\ny = 2\n"
    assert render(template, flags={"loud": False}, parts=parts) == "x = 1\nprint('quiet')\ny = 2\n"


def test_an_unknown_part_names_its_line() -> None:
    with pytest.raises(TemplateError, match="line 2: unknown part 'missing'"):
        render("x = 1\n#% include missing\n", flags={}, parts={})


def test_every_predict_template_takes_its_file_entry_point_from_the_shared_part() -> None:
    templates = resources.files("zehanx_codegen") / "templates"
    part = (templates / "_shared" / "predict_main.py").read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":' in part and "sys.argv[1], sys.argv[2]" in part
    families = [p for p in templates.iterdir() if p.is_dir() and not p.name.startswith("_")]
    assert len(families) == 6
    for family in families:
        source = (family / "predict.py").read_text(encoding="utf-8")
        assert source.rstrip().endswith("#% include predict_main"), family.name
        assert "def main" not in source, family.name
