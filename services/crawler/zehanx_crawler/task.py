"""Which column is the target, which task is it, and why: decided here, once, from the prompt and the data.

The crawler owns this decision: it writes ``target`` and ``task`` into ``schema.json`` with an
explanation, and codegen's planner only checks that the data can serve them (it never picks again).

Target: a hinted column wins (it must exist). Otherwise every column is scored: named in the prompt
(strongest), a conventional target name (``label``, ``class``, ``target``, ``species``...), a type that
fits the task the prompt asks for, the last column (weak); free-text columns, identifiers (a distinct
value in every row) and dates are inputs, not targets.

Task: a hint wins. Otherwise forecasting when the prompt asks for it and a date column orders the rows;
image classification when the inputs are a square number (>= 64) of integer pixel columns in 0..255
(packed into one ``image`` column); text classification when a free-text column exists and the target
is categorical; else tabular classification for categorical targets and regression for numeric ones.
A labelled table whose inputs are one ordered series (t0..tN, or a list column) is time-series
classification (also when tabular classification was hinted: the series is what the rows hold); its
series columns are named in the choice and marked ``"layout": "series"`` in ``schema.json``.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from dataclasses import dataclass, field

from zehanx_runtime.errors import FailedPrecondition

from zehanx_crawler.cleaning import NUMERIC, Column, Table
from zehanx_crawler.domain import TaskFamily
from zehanx_crawler.ranking import content_tokens, stem, tokens

_TARGET_NAMES = {
    "label", "labels", "target", "class", "y", "outcome", "category", "sentiment", "polarity", "species",
    "spam", "score", "rating", "result", "diagnosis", "cultivar", "digit", "variety", "type", "price",
    "passengers", "value",
}  # fmt: skip
_ID_NAMES = {"id", "uuid", "index", "key", "cert", "rank", "row", "number", "no"}

_CLASSIFY = {
    "classify",
    "classification",
    "classifier",
    "categorize",
    "categorise",
    "category",
    "detect",
    "detection",
    "detector",
    "sentiment",
    "spam",
    "recognize",
    "recognise",
    "recognition",
    "identify",
    "which",
    "whether",
    "label",
    "polarity",
    "class",
    "diagnose",
    "diagnosis",
}
_REGRESS = {
    "regression",
    "regress",
    "estimate",
    "how much",
    "how many",
    "amount",
    "price",
    "cost",
    "value",
    "continuous",
    "quantity",
}
_FORECAST = {
    "forecast",
    "forecasting",
    "future",
    "timeseries",
    "time series",
    "next month",
    "next year",
    "next week",
    "trend",
    "seasonal",
    "upcoming",
}
_IMAGE = {
    "image",
    "images",
    "picture",
    "pictures",
    "photo",
    "photos",
    "pixel",
    "pixels",
    "digit",
    "digits",
    "handwritten",
    "mnist",
    "vision",
}


def _intent(prompt: str, words: set[str]) -> list[str]:
    lower = " ".join(tokens(prompt))
    raw = prompt.lower()
    found = []
    for w in sorted(words):
        if " " in w:
            if w in raw:
                found.append(w)
        elif stem(w) in lower.split() or w in raw.split():
            found.append(w)
    return found


@dataclass
class TaskChoice:
    task: TaskFamily
    target: str
    inputs: list[str]
    explanation: str
    text_column: str | None = None
    time_column: str | None = None
    image_shape: list[int] | None = None
    ignored: dict[str, str] = field(default_factory=dict)
    classes: list[object] = field(default_factory=list)
    #: Input columns that are one ordered series (t0..tN, or one list column), in order.
    series_columns: list[str] = field(default_factory=list)


def _is_identifier(col: Column, n: int) -> bool:
    present = col.present
    if col.type in ("string",) and col.distinct == len(present) and n >= 10:
        return True
    if col.type == "integer" and n >= 10 and col.distinct == len(present):
        name = set(tokens(col.name))
        if name & _ID_NAMES or col.name.lower().endswith("_id"):
            return True
        values = sorted(present)
        if values == list(range(values[0], values[0] + len(values))):
            return True  # a running row number
    return False


def _classes(col: Column) -> list[object]:
    return sorted(set(col.present), key=lambda v: (str(type(v)), v))


def _is_categorical(col: Column, n: int) -> bool:
    if col.type in ("category", "boolean"):
        return True
    distinct = col.distinct
    if col.type == "integer":
        return 2 <= distinct <= min(50, max(2, n // 10))
    if col.type == "string":
        return 2 <= distinct <= min(100, max(2, n // 5))
    return False


def _pixel_columns(table: Table, target: str) -> list[Column] | None:
    inputs = [c for c in table.columns if c.name != target]
    if len(inputs) < 64 or math.isqrt(len(inputs)) ** 2 != len(inputs):
        return None
    for c in inputs:
        if c.type != "integer" or c.missing:
            return None
        present = c.present
        if min(present) < 0 or max(present) > 255:
            return None
    return inputs


MIN_SERIES_LENGTH = 16
_SEQUENCE_NAME = re.compile(r"(.*?)(\d+)")


def _series_columns(table: Table, target: str) -> tuple[list[Column], str] | None:
    """Inputs that are one ordered sequence, with why; None when they are not.

    Either one list column whose rows are lists of numbers of one length (>= 16), or at least 16
    numeric columns named by one prefix and a running number (t0, t1, ...) that make up every input
    but at most one, with no missing value, on one scale (each column's spread within a factor of 10
    of the median spread) and with neighbouring columns correlated (mean r >= 0.5 over the rows), as
    successive values of one signal are. Unrelated features fail the scale or the correlation test.
    """
    inputs = [c for c in table.columns if c.name != target]
    for c in inputs:
        if c.type == "list" and c.present and not c.missing:
            lengths = {len(v) for v in c.present}
            numbers = all(
                isinstance(x, int | float) and not isinstance(x, bool) for v in c.present for x in v
            )
            if numbers and len(lengths) == 1 and min(lengths) >= MIN_SERIES_LENGTH:
                return [c], f"{c.name!r} holds one list of {min(lengths)} numbers per row"
    groups: dict[str, list[tuple[int, Column]]] = {}
    for c in inputs:
        match = _SEQUENCE_NAME.fullmatch(c.name)
        if match and c.type in NUMERIC and "pix" not in match.group(1).lower():
            groups.setdefault(match.group(1), []).append((int(match.group(2)), c))
    for members in groups.values():
        members.sort(key=lambda m: m[0])
        indices = [i for i, _ in members]
        columns = [c for _, c in members]
        if len(columns) < MIN_SERIES_LENGTH or len(columns) < len(inputs) - 1 or table.n_rows < 3:
            continue
        if indices != list(range(indices[0], indices[0] + len(indices))) or indices[0] not in (0, 1):
            continue
        if any(c.missing for c in columns):
            continue
        spreads = sorted(statistics.pstdev(c.values) for c in columns)
        median = spreads[len(spreads) // 2]
        if median <= 0 or spreads[0] < median / 10 or spreads[-1] > median * 10:
            continue
        pairs = [_correlation(a.values[:2000], b.values[:2000]) for a, b in itertools.pairwise(columns)]
        r = statistics.fmean(pairs)
        if r >= 0.5:
            return columns, (
                f"{len(columns)} columns {columns[0].name} ... {columns[-1].name} are one ordered series (a running "
                f"number in their names, one scale, neighbours correlated: mean r {r:.2f})"
            )
    return None


def _correlation(a: list[float], b: list[float]) -> float:
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else 0.0


def choose(table: Table, prompt: str, *, target_hint: str | None, task_hint: TaskFamily | None) -> TaskChoice:
    n = table.n_rows
    wants_class = _intent(prompt, _CLASSIFY)
    wants_reg = _intent(prompt, _REGRESS)
    wants_forecast = _intent(prompt, _FORECAST)
    wants_image = _intent(prompt, _IMAGE)
    if task_hint is not None:
        wants_class = ["(task hint)"] if task_hint.is_classification else []
        wants_reg = ["(task hint)"] if task_hint == TaskFamily.TABULAR_REGRESSION else []
        wants_forecast = ["(task hint)"] if task_hint == TaskFamily.TIME_SERIES_FORECASTING else []
        wants_image = ["(task hint)"] if task_hint == TaskFamily.IMAGE_CLASSIFICATION else []
    prompt_terms = content_tokens(prompt) | {stem(t) for t in tokens(prompt)}

    ignored: dict[str, str] = {}
    for col in table.columns:
        if _is_identifier(col, n):
            ignored[col.name] = "identifier (a different value in every row)"

    # -- target ----------------------------------------------------------------------------------
    reasons: dict[str, list[str]] = {}
    if target_hint:
        matches = [c for c in table.columns if c.name == target_hint] or [
            c for c in table.columns if c.name.lower() == target_hint.strip().lower()
        ]
        if not matches:
            raise FailedPrecondition(
                f"target column {target_hint!r} is not in the data; columns: {', '.join(table.names())}",
                reason="UNKNOWN_TARGET_COLUMN",
                metadata={"target_column": target_hint},
            )
        target = matches[0]
        why = "named by the request's target_column"
    else:
        scores: dict[str, float] = {}
        for position, col in enumerate(table.columns):
            score = 0.0
            why_list: list[str] = []
            name_terms = {stem(t) for t in tokens(col.name)}
            named = name_terms & prompt_terms
            if named and col.name.lower() not in ("text",):
                score += 5 * len(named) / max(1, len(name_terms))
                why_list.append(f"the prompt names it ({', '.join(sorted(named))})")
            if name_terms & {stem(t) for t in _TARGET_NAMES}:
                score += 2
                why_list.append("a conventional target name")
            categorical = _is_categorical(col, n)
            if categorical and (wants_class or not wants_reg):
                score += 2
                why_list.append(f"categorical with {col.distinct} values")
            if col.type in NUMERIC and not categorical and (wants_reg or wants_forecast):
                score += 2
                why_list.append("numeric, as the prompt's task needs")
            if position == len(table.columns) - 1:
                score += 0.5
                why_list.append("the last column")
            if col.type == "text":
                score -= 10
            if col.type == "string" and not categorical:
                score -= 10  # too many distinct strings to be classes, and not a number to regress
            if col.type in ("date", "datetime", "list"):
                score -= 10
            if col.name in ignored:
                score -= 8
            if col.missing > n / 2:
                score -= 3
            scores[col.name] = score
            reasons[col.name] = why_list
        best = max(table.columns, key=lambda c: (scores[c.name], -table.columns.index(c)))
        if scores[best.name] <= 0:
            raise FailedPrecondition(
                "no column looks like a target (columns: "
                + ", ".join(f"{c.name} [{c.type}]" for c in table.columns)
                + "); name one with options.target_column",
                reason="NO_TARGET_COLUMN",
            )
        target = best
        why = "; ".join(reasons[best.name]) or "the best remaining candidate"
    ignored.pop(target.name, None)

    # -- task ------------------------------------------------------------------------------------
    categorical = _is_categorical(target, n)
    dates = [c for c in table.columns if c.type in ("date", "datetime") and c.name != target.name]
    texts = [c for c in table.columns if c.type == "text" and c.name != target.name]
    pixels = _pixel_columns(table, target.name)
    task: TaskFamily
    task_why: str
    if task_hint is not None:
        task = task_hint
        task_why = "the request's task hint"
    elif wants_forecast and dates and target.type in NUMERIC:
        task = TaskFamily.TIME_SERIES_FORECASTING
        task_why = (
            f"the prompt asks to forecast ({', '.join(wants_forecast)}) and {dates[0].name!r} orders the rows"
        )
    elif pixels is not None and categorical:
        task = TaskFamily.IMAGE_CLASSIFICATION
        side = math.isqrt(len(pixels))
        task_why = f"{len(pixels)} integer pixel columns (values within 0..255) form {side}x{side} images"
        if wants_image:
            task_why += f" and the prompt is about images ({', '.join(wants_image)})"
    elif texts and categorical and not (wants_reg and not wants_class):
        task = TaskFamily.TEXT_CLASSIFICATION
        mean = sum(len(v) for v in texts[0].present) / max(1, len(texts[0].present))
        task_why = (
            f"{texts[0].name!r} holds free text (mean {mean:.0f} characters) and the target is categorical"
        )
    elif categorical and not (wants_reg and target.type in NUMERIC and not wants_class):
        task = TaskFamily.TABULAR_CLASSIFICATION
        task_why = "the target is categorical"
        if wants_class:
            task_why += f" and the prompt asks to classify ({', '.join(wants_class)})"
    elif target.type in NUMERIC:
        if dates and (wants_forecast or (len(table.columns) == 2 and not wants_reg)):
            task = TaskFamily.TIME_SERIES_FORECASTING
            task_why = f"a numeric series ordered by {dates[0].name!r}"
        else:
            task = TaskFamily.TABULAR_REGRESSION
            task_why = "the target is numeric with many distinct values"
    else:
        raise FailedPrecondition(
            f"target {target.name!r} is {target.type} with {target.distinct} distinct values: neither "
            "a category to classify nor a number to regress; name another with options.target_column",
            reason="UNUSABLE_TARGET",
        )

    # -- consistency of the chosen task with the data ----------------------------------------------
    if task.is_classification:
        classes = _classes(target)
        if len(classes) < 2:
            raise FailedPrecondition(
                f"target {target.name!r} has a single value ({classes[0] if classes else 'none'}); nothing to classify",
                reason="SINGLE_CLASS",
            )
        if len(classes) > max(2, n // 2):
            raise FailedPrecondition(
                f"target {target.name!r} has {len(classes)} distinct values in {n} rows: too many classes to learn; "
                "name another target with options.target_column",
                reason="TOO_MANY_CLASSES",
            )
    else:
        classes = []
        if target.type not in NUMERIC:
            raise FailedPrecondition(
                f"{task.value} needs a numeric target; {target.name!r} is {target.type}",
                reason="UNUSABLE_TARGET",
            )
    time_column = None
    if task == TaskFamily.TIME_SERIES_FORECASTING:
        if not dates:
            raise FailedPrecondition(
                "forecasting needs a date column to order the rows; none found", reason="NO_TIME_COLUMN"
            )
        time_column = dates[0].name
    if task == TaskFamily.IMAGE_CLASSIFICATION and pixels is None:
        raise FailedPrecondition(
            "image classification needs a square number (>= 64) of integer pixel columns in 0..255",
            reason="NO_IMAGE_COLUMNS",
        )

    inputs = [c.name for c in table.columns if c.name != target.name and c.name not in ignored]
    if not inputs:
        raise FailedPrecondition(f"no input columns besides the target {target.name!r}", reason="NO_INPUTS")
    text_column = texts[0].name if task == TaskFamily.TEXT_CLASSIFICATION else None
    series_task = task in (TaskFamily.TABULAR_CLASSIFICATION, TaskFamily.TIME_SERIES_CLASSIFICATION)
    found = _series_columns(table, target.name) if series_task and not pixels else None
    series_columns = [c.name for c in found[0]] if found else []
    if found:
        task = TaskFamily.TIME_SERIES_CLASSIFICATION
        task_why += f"; {found[1]}: a series to classify"
    elif task == TaskFamily.TIME_SERIES_CLASSIFICATION:
        raise FailedPrecondition(
            "time-series classification needs inputs that are one ordered series: one list column of "
            f"numbers of one length (>= {MIN_SERIES_LENGTH}), or >= {MIN_SERIES_LENGTH} numeric columns "
            "named t0, t1, ... on one scale with neighbours correlated; columns: " + ", ".join(table.names()),
            reason="NO_SERIES_COLUMNS",
        )
    parts = [f"task {task.value}: {task_why}", f"target {target.name!r}: {why}"]
    if task.is_classification:
        counts = {c: 0 for c in classes}
        for v in target.present:
            counts[v] += 1
        shown = ", ".join(f"{c}: {k}" for c, k in list(counts.items())[:10])
        parts.append(f"{len(classes)} classes ({shown}{', ...' if len(classes) > 10 else ''})")
    if ignored:
        parts.append("not used as inputs: " + "; ".join(f"{k} ({v})" for k, v in ignored.items()))
    return TaskChoice(
        task=task,
        target=target.name,
        inputs=inputs,
        explanation=". ".join(parts) + ".",
        text_column=text_column,
        time_column=time_column,
        image_shape=[math.isqrt(len(pixels))] * 2
        if pixels is not None and task == TaskFamily.IMAGE_CLASSIFICATION
        else None,
        ignored=ignored,
        classes=classes,
        series_columns=series_columns,
    )


def apply(table: Table, choice: TaskChoice) -> Table:
    """Shape the table for the chosen task: rows without a target out, pixels packed, series in time order."""
    target = table.get(choice.target)
    keep = [i for i, v in enumerate(target.values) if v is not None]
    notes = list(table.notes)
    if len(keep) < table.n_rows:
        notes.append(
            f"dropped {table.n_rows - len(keep)} rows without a value in the target {choice.target!r}"
        )
        table = table.take(keep)
    table.notes = notes
    if choice.task == TaskFamily.IMAGE_CLASSIFICATION and choice.image_shape:
        pixels = [c for c in table.columns if c.name != choice.target]
        lo = min(min(c.present) for c in pixels)
        hi = max(max(c.present) for c in pixels)
        images = [list(row) for row in zip(*(c.values for c in pixels), strict=True)]
        image = Column(
            "image",
            "image",
            images,
            {"shape": choice.image_shape, "channels": 1, "value_range": [lo, hi], "layout": "row-major"},
        )
        table.columns = [image, table.get(choice.target)]
        table.notes.append(
            f"{len(pixels)} pixel columns packed into one 'image' column ({choice.image_shape[0]}x"
            f"{choice.image_shape[1]}, row-major, values {lo}..{hi})"
        )
        choice.inputs = ["image"]
    if choice.series_columns:
        # schema.json's column entries carry "layout": "series": the step of one ordered series per row
        for name in choice.series_columns:
            table.get(name).facts["layout"] = "series"
        table.notes.append(f"columns {', '.join(choice.series_columns[:3])}, ... form one series per row")
    if choice.task == TaskFamily.TIME_SERIES_FORECASTING and choice.time_column:
        times = table.get(choice.time_column).values
        order = sorted(range(table.n_rows), key=lambda i: (times[i] is None, times[i] or ""))
        if order != list(range(table.n_rows)):
            table = table.take(order)
            table.notes.append(f"rows sorted by {choice.time_column!r}")
        if any(t is None for t in times):
            raise FailedPrecondition(
                f"time column {choice.time_column!r} has missing values; a series needs every timestamp",
                reason="MISSING_TIMESTAMPS",
            )
    return table
