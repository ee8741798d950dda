"""The offline generator: plan → program, by filling the task family's template.

Each family has a folder under ``templates/`` with plain Python files. The plan's hyperparameters
become the config block at the top of ``train.py`` (one line each, with why it has that value);
``#% if`` blocks keep only the code the plan uses, so the user reads one straight path.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from zehanx_runtime.errors import FailedPrecondition, InvalidArgument

from zehanx_codegen.domain import Plan, Program, TaskFamily
from zehanx_codegen.hyperparameters import (
    IMAGE,
    SERIES,
    TABULAR_MLP,
    TABULAR_TREES,
    TEXT,
    Template,
    template_of,
)
from zehanx_codegen.render import ConfigEntry, TemplateError, render, safe_text

TEMPLATE_VERSION = "1"


#: Why the column entries that are not hyperparameters have their value (the rest: ``hyperparameters``).
_COLUMN_WHY = {
    "target_column": "what the model predicts",
    "image_column": "the column holding each image as nested lists of pixel values",
    "pixel_columns": "one column per pixel, row by row",
}


def _value_ok(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_value_ok(v) for v in value)
    return False


def _pixel_expression(names: list[str]) -> str | None:
    """``[f"pixel{i}" for i in range(784)]`` when the names are a prefix plus a running number."""
    match = re.fullmatch(r"([A-Za-z_][A-Za-z_ ]{0,30}?)(\d+)", names[0]) if names else None
    if not match:
        return None
    prefix, start = match.group(1), int(match.group(2))
    if names != [f"{prefix}{start + i}" for i in range(len(names))]:
        return None
    offset = f"{start} + " if start else ""
    return f"[{prefix!r} + str({offset}i) for i in range({len(names)})]"


def prompt_of(program: Program) -> str:
    """The prompt a template program was written for (its title says it), so a repair renders the
    same title; empty when the program has none."""
    first = program.files.get("train.py", "").split("\n", 1)[0]
    _, found, prompt = first.partition(" model for: ")
    return prompt.strip() if found and first.startswith('"""Train a ') else ""


class TemplateGenerator:
    """Renders programs from the packaged templates."""

    name = "template"

    def _entries(self, plan: Plan, template: Template) -> tuple[list[ConfigEntry], dict[str, bool]]:
        hp = dict(plan.hyperparameters)
        for key, value in hp.items():
            if not _value_ok(value):
                raise InvalidArgument(
                    f"hyperparameter {key!r} must be a JSON number, string, boolean or list, not {type(value).__name__}",
                    reason="BAD_PLAN",
                )
        family = plan.task_family
        entries = [ConfigEntry("target_column", plan.target_column, _COLUMN_WHY["target_column"])]
        flags: dict[str, bool] = {}
        keys = template.config_keys
        if template is TEXT:
            flags["use_encoder"] = bool(hp.get("use_encoder")) and bool(hp.get("encoder"))
            hp["encoder"] = hp.get("encoder", "") if flags["use_encoder"] else ""
        elif template in (TABULAR_MLP, TABULAR_TREES):
            flags["regression"] = family is TaskFamily.TABULAR_REGRESSION
            if template is TABULAR_TREES:
                if hp.get("target_transform", "none") not in ("none", "log"):
                    raise InvalidArgument("target_transform must be 'none' or 'log'", reason="BAD_PLAN")
                if not flags["regression"]:
                    keys = tuple(k for k in keys if k != "target_transform")
        elif template is IMAGE:
            layout = hp.get("image_layout")
            if layout not in ("array_column", "pixel_columns"):
                raise InvalidArgument(
                    "image_layout must be 'array_column' or 'pixel_columns'", reason="BAD_PLAN"
                )
            flags["pixel_columns"] = layout == "pixel_columns"
            if flags["pixel_columns"]:
                columns = list(plan.input_columns)
                expression = _pixel_expression(columns)
                why = _COLUMN_WHY["pixel_columns"]
                if expression is not None:
                    entries.append(ConfigEntry("pixel_columns", None, why, code=expression))
                else:
                    entries.append(ConfigEntry("pixel_columns", columns, why))
            else:
                entries.append(
                    ConfigEntry("image_column", plan.input_columns[0], _COLUMN_WHY["image_column"])
                )
        elif template is SERIES:
            if not hp.get("series_columns") and not hp.get("series_column"):
                raise InvalidArgument(
                    "the plan names no series columns and no series column", reason="BAD_PLAN"
                )
            if hp.get("classifier", "ridge") not in ("ridge", "logistic"):
                raise InvalidArgument("classifier must be 'ridge' or 'logistic'", reason="BAD_PLAN")
        missing = [k for k in template.required if k not in hp]
        if missing:
            raise InvalidArgument(
                f"the plan lacks hyperparameters the {family.value} template needs: {', '.join(missing)}",
                reason="BAD_PLAN",
            )
        for k, v in template.defaults.items():
            hp.setdefault(k, v)
        if template is SERIES:
            columns = list(hp["series_columns"])
            expression = _pixel_expression(columns)
            why = template.why("series_columns")
            if expression is not None:
                entries.append(ConfigEntry("series_columns", None, why, code=expression))
            else:
                entries.append(ConfigEntry("series_columns", columns, why))
        entries += [ConfigEntry(k, hp[k], template.why(k)) for k in keys]
        return entries, flags

    def generate(self, plan: Plan, *, prompt: str = "") -> Program:
        family = template_of(plan.task_family, plan.model_family)
        if family is None:
            raise FailedPrecondition(
                f"no template for task family {plan.task_family}", reason="UNSUPPORTED_TASK"
            )
        entries, flags = self._entries(plan, family)
        title = f"Train a {plan.task_family.value.replace('_', ' ')} model" + (
            f" for: {safe_text(prompt, limit=120)}" if prompt else ""
        )
        summary = safe_text(plan.model_family.replace("_", " ") + f"; metric {plan.metric_name}", limit=200)
        templates = resources.files("zehanx_codegen") / "templates"
        folder = templates / family.folder
        shared = {
            part.name.removesuffix(".py"): part.read_text(encoding="utf-8")
            for part in (templates / "_shared").iterdir()
            if part.name.endswith(".py")
        }
        files: dict[str, str] = {}
        for name in family.files:
            if name == "encoder.py" and not flags.get("use_encoder"):
                continue
            source = (folder / name).read_text(encoding="utf-8")
            try:
                files[name] = render(
                    source,
                    flags=flags,
                    config=entries if name == "train.py" else (),
                    text={"title": title, "summary": summary},
                    parts=shared,
                )
            except TemplateError as exc:  # a bug in a packaged template, not in the request
                raise RuntimeError(f"template {family.folder}/{name}: {exc}") from exc
        return Program(files=files)
