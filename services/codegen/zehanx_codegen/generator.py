"""The offline generator: plan → program, by filling the task family's template.

Each family has a folder under ``templates/`` with plain Python files. The plan's hyperparameters
become the config block at the top of ``train.py`` (one line each, with why it has that value);
``#% if`` blocks keep only the code the plan uses, so the user reads one straight path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from zehanx_runtime.errors import FailedPrecondition, InvalidArgument

from zehanx_codegen.domain import Plan, Program, TaskFamily
from zehanx_codegen.render import ConfigEntry, TemplateError, render, safe_text

TEMPLATE_VERSION = "1"


@dataclass(frozen=True)
class _Family:
    folder: str
    files: tuple[str, ...]


_FAMILIES = {
    TaskFamily.TEXT_CLASSIFICATION: _Family(
        "text_classification", ("train.py", "predict.py", "features.py", "model.py", "encoder.py")
    ),
    TaskFamily.TABULAR_CLASSIFICATION: _Family(
        "tabular", ("train.py", "predict.py", "features.py", "model.py")
    ),
    TaskFamily.TABULAR_REGRESSION: _Family("tabular", ("train.py", "predict.py", "features.py", "model.py")),
    TaskFamily.IMAGE_CLASSIFICATION: _Family("image_classification", ("train.py", "predict.py", "model.py")),
    TaskFamily.TIME_SERIES_FORECASTING: _Family("forecasting", ("train.py", "predict.py", "series.py")),
    TaskFamily.TIME_SERIES_CLASSIFICATION: _Family(
        "series_classification", ("train.py", "predict.py", "minirocket.py")
    ),
}
#: Tables with a model family of their own: gradient-boosted trees instead of the MLP.
_TREES = _Family("tabular_trees", ("train.py", "predict.py", "trees.py"))
TREES_MODEL_FAMILY = "gradient_boosted_trees"

#: Why each hyperparameter has its value: the comment on its line in the config block.
_WHY = {
    "text_column": "the free-text input",
    "target_column": "what the model predicts",
    "ngram_max": "words and pairs of words: 'not good' means what 'good' does not",
    "min_df": "keep n-grams seen in at least this many training texts",
    "max_features": "upper bound on the n-gram vocabulary",
    "encoder": "frozen sentence encoder whose embedding joins the n-grams ('' = none)",
    "encoder_max_tokens": "texts are cut at this many word pieces (95% of them are shorter)",
    "c_grid": "inverse L2 strengths tried; the best on validation wins",
    "lbfgs_steps": "L-BFGS rounds of 20 iterations each per fit",
    "numeric_columns": "standardised; a missing value becomes 0 plus a flag",
    "categorical_columns": "one-hot; missing is a category of its own",
    "max_categories": "rarer categories share one 'other' slot",
    "hidden_size": "units per hidden layer: small data, small network",
    "hidden_layers": "depth of the MLP",
    "dropout": "dropout after each hidden layer",
    "learning_rate": "AdamW step size",
    "weight_decay": "AdamW weight decay (L2 pull towards zero)",
    "batch_size": "rows per step (0 = the whole training set at once)",
    "max_steps": "upper bound on optimizer steps",
    "eval_every": "steps between validation checks",
    "patience": "stop after this many checks without improvement",
    "target_transform": "'log' fits log(target) and predicts exp of it; 'none' fits the target as it is",
    "max_iterations": "upper bound on boosting rounds (one tree per output each)",
    "max_leaves": "leaves per tree, grown best-split first",
    "min_leaf_rows": "no leaf holds fewer training rows",
    "l2": "L2 pull of leaf values towards zero",
    "time_share": "stop boosting once this share of the time budget is spent",
    "series_columns": "the columns of one ordered series, in order",
    "series_column": "a column holding each series as a list of numbers ('' = the columns above)",
    "num_features": "MiniRocket features: 84 kernels x biases over the dilations",
    "alphas": "ridge strengths tried; leave-one-out picks one",
    "classifier": "'ridge' (leave-one-out, up to 4,000 rows) or 'logistic' (mini-batches, more rows)",
    "image_layout": "how pixels are stored: one column of arrays, or one column per pixel",
    "image_column": "the column holding each image as nested lists of pixel values",
    "pixel_columns": "one column per pixel, row by row",
    "height": "image height in pixels",
    "width": "image width in pixels",
    "channels": "1 = grey, 3 = colour",
    "pixel_scale": "multiplies raw pixel values into [0, 1]",
    "conv_channels": "channels of the three conv blocks",
    "stem_stride": "2 halves big images at the first layer to save time",
    "epochs": "passes over the training set, sized to the time budget",
    "rotate_degrees": "augmentation: random rotation up to this many degrees",
    "shift_pixels": "augmentation: random shift up to this many pixels",
    "horizontal_flip": "augmentation: mirror images at random",
    "members": "CNNs trained apart whose probabilities are averaged",
    "time_column": "orders the series",
    "season_length": "steps per season (0 = read it from the spacing of the dates)",
    "short_lags": "recent differences the forecast looks at",
    "ridge": "a little L2 on the coefficients keeps the fit stable",
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

    def _entries(self, plan: Plan) -> tuple[list[ConfigEntry], dict[str, bool]]:
        hp = dict(plan.hyperparameters)
        for key, value in hp.items():
            if not _value_ok(value):
                raise InvalidArgument(
                    f"hyperparameter {key!r} must be a JSON number, string, boolean or list, not {type(value).__name__}",
                    reason="BAD_PLAN",
                )
        family = plan.task_family
        entries = [ConfigEntry("target_column", plan.target_column, _WHY["target_column"])]
        flags: dict[str, bool] = {}
        required: tuple[str, ...]
        if family is TaskFamily.TEXT_CLASSIFICATION:
            required = (
                "text_column",
                "ngram_max",
                "min_df",
                "max_features",
                "encoder_max_tokens",
                "c_grid",
                "lbfgs_steps",
            )
            flags["use_encoder"] = bool(hp.get("use_encoder")) and bool(hp.get("encoder"))
            hp["encoder"] = hp.get("encoder", "") if flags["use_encoder"] else ""
            keys = (
                "text_column",
                "ngram_max",
                "min_df",
                "max_features",
                "encoder",
                "encoder_max_tokens",
                "c_grid",
                "lbfgs_steps",
            )
        elif family in (TaskFamily.TABULAR_CLASSIFICATION, TaskFamily.TABULAR_REGRESSION) and (
            plan.model_family == TREES_MODEL_FAMILY
        ):
            required = ("numeric_columns", "categorical_columns", "max_iterations", "learning_rate")
            flags["regression"] = family is TaskFamily.TABULAR_REGRESSION
            defaults = {"max_categories": 50, "target_transform": "none", "max_leaves": 31, "min_leaf_rows": 20,
                        "l2": 0.0, "patience": 30, "time_share": 0.8}  # fmt: skip
            for k, v in defaults.items():
                hp.setdefault(k, v)
            if hp["target_transform"] not in ("none", "log"):
                raise InvalidArgument("target_transform must be 'none' or 'log'", reason="BAD_PLAN")
            keys = ("numeric_columns", "categorical_columns", "max_categories")
            if flags["regression"]:
                keys += ("target_transform",)
            keys += (
                "max_iterations",
                "learning_rate",
                "max_leaves",
                "min_leaf_rows",
                "l2",
                "patience",
                "time_share",
            )
        elif family in (TaskFamily.TABULAR_CLASSIFICATION, TaskFamily.TABULAR_REGRESSION):
            required = ("numeric_columns", "categorical_columns", "hidden_size", "learning_rate", "max_steps")
            flags["regression"] = family is TaskFamily.TABULAR_REGRESSION
            defaults = {"max_categories": 50, "hidden_layers": 2, "dropout": 0.0, "weight_decay": 1e-4,
                        "batch_size": 0, "eval_every": 10, "patience": 15}  # fmt: skip
            for k, v in defaults.items():
                hp.setdefault(k, v)
            keys = ("numeric_columns", "categorical_columns", "max_categories", "hidden_size", "hidden_layers",
                    "dropout", "learning_rate", "weight_decay", "batch_size", "max_steps", "eval_every", "patience")  # fmt: skip
        elif family is TaskFamily.IMAGE_CLASSIFICATION:
            required = ("image_layout", "height", "width", "channels", "epochs")
            layout = hp.get("image_layout")
            if layout not in ("array_column", "pixel_columns"):
                raise InvalidArgument(
                    "image_layout must be 'array_column' or 'pixel_columns'", reason="BAD_PLAN"
                )
            flags["pixel_columns"] = layout == "pixel_columns"
            defaults = {"pixel_scale": 1 / 255, "conv_channels": [32, 64, 128], "stem_stride": 1, "dropout": 0.25,
                        "batch_size": 64, "learning_rate": 0.003, "weight_decay": 1e-4, "rotate_degrees": 10.0,
                        "shift_pixels": 2.0, "horizontal_flip": False, "members": 1}  # fmt: skip
            for k, v in defaults.items():
                hp.setdefault(k, v)
            if flags["pixel_columns"]:
                columns = list(plan.input_columns)
                expression = _pixel_expression(columns)
                if expression is not None:
                    entries.append(ConfigEntry("pixel_columns", None, _WHY["pixel_columns"], code=expression))
                else:
                    entries.append(ConfigEntry("pixel_columns", columns, _WHY["pixel_columns"]))
            else:
                entries.append(ConfigEntry("image_column", plan.input_columns[0], _WHY["image_column"]))
            keys = ("height", "width", "channels", "pixel_scale", "conv_channels", "stem_stride", "dropout",
                    "batch_size", "learning_rate", "weight_decay", "epochs", "rotate_degrees", "shift_pixels",
                    "horizontal_flip", "members")  # fmt: skip
        elif family is TaskFamily.TIME_SERIES_CLASSIFICATION:
            required = ("series_columns",)
            if not hp.get("series_columns") and not hp.get("series_column"):
                raise InvalidArgument(
                    "the plan names no series columns and no series column", reason="BAD_PLAN"
                )
            defaults = {
                "series_column": "",
                "num_features": 9_996,
                "classifier": "ridge",
                "alphas": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0],
            }
            for k, v in defaults.items():
                hp.setdefault(k, v)
            if hp["classifier"] not in ("ridge", "logistic"):
                raise InvalidArgument("classifier must be 'ridge' or 'logistic'", reason="BAD_PLAN")
            columns = list(hp["series_columns"])
            expression = _pixel_expression(columns)
            if expression is not None:
                entries.append(ConfigEntry("series_columns", None, _WHY["series_columns"], code=expression))
            else:
                entries.append(ConfigEntry("series_columns", columns, _WHY["series_columns"]))
            keys = ("series_column", "num_features", "classifier", "alphas")
        else:
            required = ("time_column",)
            defaults = {"season_length": 0, "short_lags": [1, 2, 3], "ridge": 1e-3}
            for k, v in defaults.items():
                hp.setdefault(k, v)
            keys = ("time_column", "season_length", "short_lags", "ridge")
        missing = [k for k in required if k not in hp]
        if missing:
            raise InvalidArgument(
                f"the plan lacks hyperparameters the {family.value} template needs: {', '.join(missing)}",
                reason="BAD_PLAN",
            )
        entries += [ConfigEntry(k, hp[k], _WHY.get(k, "")) for k in keys]
        return entries, flags

    def generate(self, plan: Plan, *, prompt: str = "") -> Program:
        family = _FAMILIES.get(plan.task_family)
        tabular = (TaskFamily.TABULAR_CLASSIFICATION, TaskFamily.TABULAR_REGRESSION)
        if plan.task_family in tabular and plan.model_family == TREES_MODEL_FAMILY:
            family = _TREES
        if family is None:
            raise FailedPrecondition(
                f"no template for task family {plan.task_family}", reason="UNSUPPORTED_TASK"
            )
        entries, flags = self._entries(plan)
        title = f"Train a {plan.task_family.value.replace('_', ' ')} model" + (
            f" for: {safe_text(prompt, limit=120)}" if prompt else ""
        )
        summary = safe_text(plan.model_family.replace("_", " ") + f"; metric {plan.metric_name}", limit=200)
        folder = resources.files("zehanx_codegen") / "templates" / family.folder
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
                )
            except TemplateError as exc:  # a bug in a packaged template, not in the request
                raise RuntimeError(f"template {family.folder}/{name}: {exc}") from exc
        return Program(files=files)
