"""Every template's hyperparameters in one table: the name, the default, and why it has its value.

The planner takes its fixed values from here (``Template.values``) and works out the rest from the
data (column lists, sizes fitted to the rows and the time budget). The generator checks a plan against
the same table: the ``required`` keys must be in the plan, the others fall back to their default, and
the config block at the top of ``train.py`` lists the ``in_config`` keys in this order, each with its
``why`` as the comment. A new hyperparameter is one line here plus its use in the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zehanx_codegen.domain import TaskFamily

#: The model family that gets the gradient-boosted-trees template instead of the MLP (tables of 1k rows+).
TREES_MODEL_FAMILY = "gradient_boosted_trees"
#: MiniRocket's default: 84 kernels x 119 biases.
SERIES_FEATURES = 9_996
#: Ridge strengths the series classifier tries: 10 values from 1e-3 to 1e3.
SERIES_ALPHAS = [round(10 ** (-3 + 6 * i / 9), 6) for i in range(10)]


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


#: The default of a key whose value the planner always works out from the data.
NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    why: str
    default: Any = NO_DEFAULT
    #: A plan must carry it (the generator refuses a plan without it instead of using the default).
    required: bool = False
    #: False for keys the generator writes in its own form (column lists as code) or reads as a flag.
    in_config: bool = True


@dataclass(frozen=True)
class Template:
    """One template folder and the hyperparameters its ``train.py`` reads."""

    folder: str
    files: tuple[str, ...]
    hyperparameters: tuple[Hyperparameter, ...]

    @property
    def defaults(self) -> dict[str, Any]:
        """What the generator fills in for a key a plan leaves out (required keys are never filled)."""
        return {
            h.name: h.default for h in self.hyperparameters if not h.required and h.default is not NO_DEFAULT
        }

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyperparameters if h.required)

    @property
    def config_keys(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyperparameters if h.in_config)

    def why(self, name: str) -> str:
        return next((h.why for h in self.hyperparameters if h.name == name), "")

    def values(self, *names: str) -> dict[str, Any]:
        """The table's values of these keys, for the planner to start a plan from (copies of lists)."""
        found = {h.name: h.default for h in self.hyperparameters}
        out: dict[str, Any] = {}
        for name in names:
            if found.get(name, NO_DEFAULT) is NO_DEFAULT:
                raise KeyError(f"{self.folder}: {name!r} has no value in the table")
            value = found[name]
            out[name] = list(value) if isinstance(value, list) else value
        return out


H = Hyperparameter

TEXT = Template(
    "text_classification",
    ("train.py", "predict.py", "features.py", "model.py", "encoder.py"),
    (
        H("text_column", "the free-text input", required=True),
        H("ngram_max", "words and pairs of words: 'not good' means what 'good' does not", 2, required=True),
        H("min_df", "keep n-grams seen in at least this many training texts", required=True),
        H("max_features", "upper bound on the n-gram vocabulary", 500_000, required=True),
        H("encoder", "frozen sentence encoder whose embedding joins the n-grams ('' = none)", ""),
        H(
            "encoder_max_tokens",
            "texts are cut at this many word pieces (95% of them are shorter)",
            required=True,
        ),
        H(
            "c_grid",
            "inverse L2 strengths tried; the best on validation wins",
            [3.0, 10.0, 30.0],
            required=True,
        ),
        H("lbfgs_steps", "L-BFGS rounds of 20 iterations each per fit", 6, required=True),
        H("use_encoder", "whether the encoder's embedding is used (a template flag)", False, in_config=False),
    ),
)
_COLUMNS = (
    H("numeric_columns", "standardised; a missing value becomes 0 plus a flag", required=True),
    H("categorical_columns", "one-hot; missing is a category of its own", required=True),
)
TABULAR_MLP = Template(
    "tabular",
    ("train.py", "predict.py", "features.py", "model.py"),
    (
        *_COLUMNS,
        H("max_categories", "rarer categories share one 'other' slot", 50),
        H("hidden_size", "units per hidden layer: small data, small network", required=True),
        H("hidden_layers", "depth of the MLP", 2),
        H("dropout", "dropout after each hidden layer", 0.0),
        H("learning_rate", "AdamW step size", required=True),
        H("weight_decay", "AdamW weight decay (L2 pull towards zero)", 0.0001),
        H("batch_size", "rows per step (0 = the whole training set at once)", 0),
        H("max_steps", "upper bound on optimizer steps", required=True),
        H("eval_every", "steps between validation checks", 10),
        H("patience", "stop after this many checks without improvement", 15),
    ),
)
TABULAR_TREES = Template(
    "tabular_trees",
    ("train.py", "predict.py", "trees.py"),
    (
        *_COLUMNS,
        H("max_categories", "rarer categories share one 'other' slot", 200),
        # in a regression's config block only (the generator leaves it out of a classifier's)
        H(
            "target_transform",
            "'log' fits log(target) and predicts exp of it; 'none' fits the target as it is",
            "none",
        ),
        H(
            "max_iterations",
            "upper bound on boosting rounds (one tree per output each)",
            2_000,
            required=True,
        ),
        H("learning_rate", "shrinkage: each tree's output is scaled by this", 0.1, required=True),
        H("max_leaves", "leaves per tree, grown best-split first", 31),
        H("min_leaf_rows", "no leaf holds fewer training rows", 20),
        H("l2", "L2 pull of leaf values towards zero", 0.0),
        H("patience", "stop after this many rounds without improvement", 50),
        H("time_share", "stop boosting once this share of the time budget is spent", 0.8),
    ),
)
IMAGE = Template(
    "image_classification",
    ("train.py", "predict.py", "model.py"),
    (
        H(
            "image_layout",
            "how pixels are stored: one column of arrays, or one column per pixel",
            required=True,
            in_config=False,
        ),
        H("height", "image height in pixels", required=True),
        H("width", "image width in pixels", required=True),
        H("channels", "1 = grey, 3 = colour", required=True),
        H("pixel_scale", "multiplies raw pixel values into [0, 1]", 1 / 255),
        H("conv_channels", "channels of the three conv blocks", [32, 64, 128]),
        H("stem_stride", "2 halves big images at the first layer to save time", 1),
        H("dropout", "dropout after each hidden layer", 0.25),
        H("batch_size", "rows per step (0 = the whole training set at once)", 64),
        H("learning_rate", "AdamW step size", 0.003),
        H("weight_decay", "AdamW weight decay (L2 pull towards zero)", 0.0001),
        H("epochs", "passes over the training set, sized to the time budget", required=True),
        H("rotate_degrees", "augmentation: random rotation up to this many degrees", 10.0),
        H("shift_pixels", "augmentation: random shift up to this many pixels", 2.0),
        H("horizontal_flip", "augmentation: mirror images at random", False),
        H("members", "CNNs trained apart whose probabilities are averaged", 1),
    ),
)
SERIES = Template(
    "series_classification",
    ("train.py", "predict.py", "minirocket.py"),
    (
        H("series_columns", "the columns of one ordered series, in order", required=True, in_config=False),
        H("series_column", "a column holding each series as a list of numbers ('' = the columns above)", ""),
        H("num_features", "MiniRocket features: 84 kernels x biases over the dilations", SERIES_FEATURES),
        H(
            "classifier",
            "'ridge' (leave-one-out, up to 4,000 rows) or 'logistic' (mini-batches, more rows)",
            "ridge",
        ),
        H("alphas", "ridge strengths tried; leave-one-out picks one", SERIES_ALPHAS),
    ),
)
FORECASTING = Template(
    "forecasting",
    ("train.py", "predict.py", "series.py"),
    (
        H("time_column", "orders the series", required=True),
        H("season_length", "steps per season (0 = read it from the spacing of the dates)", 0),
        H("short_lags", "recent differences the forecast looks at", [1, 2, 3]),
        H("ridge", "a little L2 on the coefficients keeps the fit stable", 0.001),
    ),
)

#: The template of each task family; tables with ``TREES_MODEL_FAMILY`` get ``TABULAR_TREES`` instead.
TEMPLATES: Mapping[TaskFamily, Template] = {
    TaskFamily.TEXT_CLASSIFICATION: TEXT,
    TaskFamily.TABULAR_CLASSIFICATION: TABULAR_MLP,
    TaskFamily.TABULAR_REGRESSION: TABULAR_MLP,
    TaskFamily.IMAGE_CLASSIFICATION: IMAGE,
    TaskFamily.TIME_SERIES_FORECASTING: FORECASTING,
    TaskFamily.TIME_SERIES_CLASSIFICATION: SERIES,
}


def template_of(family: TaskFamily, model_family: str) -> Template | None:
    """The template a plan of this family and model family is rendered from (None: there is none)."""
    tabular = (TaskFamily.TABULAR_CLASSIFICATION, TaskFamily.TABULAR_REGRESSION)
    if family in tabular and model_family == TREES_MODEL_FAMILY:
        return TABULAR_TREES
    return TEMPLATES.get(family)
