"""The model card: what the model is, what it was trained on, and how good it is on data it never saw.

Markdown, written by the trainer from what it measured (never from what the program claims alone):
task, data provenance and profile, model and hyperparameters, a summary of the training curve, the
held-out metrics against the simple baseline, and the limits a reader should know about.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from zehanx_trainer.evaluation import PRIMARY_METRIC, Evaluation, TaskKind
from zehanx_trainer.records import MetricRecord
from zehanx_trainer.weights import WeightsSummary


@dataclass
class CurveSummary:
    """A running summary of the metric records of the full run."""

    reports: int = 0
    last_step: int | None = None
    last_epoch: int | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    min_loss: float | None = None
    min_loss_step: int | None = None
    non_finite_losses: int = 0
    last_val: dict[str, float] = field(default_factory=dict)
    last_samples_per_s: float | None = None

    def add(self, record: MetricRecord) -> None:
        self.reports += 1
        if record.step is not None:
            self.last_step = record.step
        if record.epoch is not None:
            self.last_epoch = record.epoch
        if record.loss is not None:
            if math.isnan(record.loss):
                self.non_finite_losses += 1
            else:
                if self.first_loss is None:
                    self.first_loss = record.loss
                self.last_loss = record.loss
                if self.min_loss is None or record.loss < self.min_loss:
                    self.min_loss, self.min_loss_step = record.loss, record.step
        if record.val:
            self.last_val = dict(record.val)
        if record.samples_per_s is not None and not math.isnan(record.samples_per_s):
            self.last_samples_per_s = record.samples_per_s


@dataclass
class CardInput:
    """Everything the card is written from."""

    run_id: str
    title: str
    prompt: str
    task_family: str
    target_column: str
    input_columns: list[str]
    metric_name: str
    dataset_name: str
    dataset_id: str
    dataset_explanation: str
    profile: dict[str, Any]
    provenance: list[dict[str, str]]
    split_rows: dict[str, int]
    model_family: str
    hyperparameters: dict[str, Any]
    rationale: str
    model_config: dict[str, Any]
    weights: WeightsSummary
    weights_sha256: str
    curve: CurveSummary
    evaluation: Evaluation
    claimed_metrics: dict[str, float]
    device: str
    training_wall_s: float
    created_time: str


NONE = "n/a"


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return NONE
    if isinstance(value, float) and math.isnan(value):
        return "not finite"
    return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.4g}"


def _md(text: str) -> str:
    """Escape text from users or data for a Markdown table cell or line."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").strip()


def known_limits(card: CardInput) -> list[str]:
    """Plain statements of what the measured figures do not show."""
    ev = card.evaluation
    limits: list[str] = []
    name = PRIMARY_METRIC[ev.kind][0]
    if ev.kind is TaskKind.CLASSIFICATION:
        p = ev.metrics["accuracy"]
        se = math.sqrt(max(p * (1 - p), 1e-12) / max(ev.rows, 1))
        limits.append(
            f"The held-out split has {ev.rows} rows: one error moves accuracy by {100 / max(ev.rows, 1):.2f} "
            f"points, and its standard error is about {100 * se:.1f} points."
        )
        ratio = float(card.profile.get("imbalance_ratio") or 0)
        if ratio >= 3:
            limits.append(
                f"Classes are imbalanced (largest/smallest = {ratio:.1f}): accuracy flatters the model; "
                "read macro-F1 and MCC."
            )
    else:
        limits.append(
            f"The held-out split has {ev.rows} rows; figures on so few rows vary from split to split."
        )
    if not ev.beats_baseline:
        limits.append(
            f"The model does not beat the simple baseline ({ev.baseline_name}) on {name}: "
            "it has learned nothing useful beyond it."
        )
    claimed = card.claimed_metrics.get(name)
    measured = ev.metrics.get(name)
    if claimed is not None and measured is not None and not math.isnan(claimed):
        gap = abs(claimed - measured)
        scale = 0.05 if ev.kind is TaskKind.CLASSIFICATION else 0.2 * max(abs(measured), 1e-9)
        if gap > scale:
            limits.append(
                f"The program's own figure ({name} {_fmt(claimed)}) disagrees with the held-out figure "
                f"({_fmt(measured)}). Trust the held-out figure: the trainer computed it from predictions "
                "on rows the program never saw."
            )
    if card.curve.non_finite_losses:
        limits.append(
            f"The training loss was not finite in {card.curve.non_finite_losses} reports (divergence)."
        )
    sources = ", ".join(sorted({p.get("source", "") for p in card.provenance if p.get("source")})[:3])
    limits.append(
        "Evaluated once, on one random split of the same data it was trained on"
        + (f" ({sources})" if sources else "")
        + ": performance on data from other sources, times or populations is not measured."
    )
    limits.append("No fairness, robustness or calibration analysis was done.")
    return limits


def render(card: CardInput) -> str:
    ev = card.evaluation
    primary, higher = PRIMARY_METRIC[ev.kind]
    lines: list[str] = []
    add = lines.append
    add(f"# {_md(card.title) or 'Model card'}")
    add("")
    add(
        f"A {_md(card.model_family)} model for **{card.task_family.replace('_', ' ')}**, trained by Zehanx "
        f"(run `{card.run_id}`, {card.created_time})."
    )
    if card.prompt:
        add("")
        add(f"> {_md(card.prompt)}")
    add("")
    add("## Held-out evaluation")
    add("")
    add(
        f"Computed by the trainer from `predict.py`'s predictions on the {ev.rows} rows of the test split, "
        "which the training program never saw. The baseline is scored on the same rows."
    )
    add("")
    add("| metric | this model | baseline: " + _md(ev.baseline_name) + " | program's own claim |")
    add("|---|---|---|---|")
    for name, value in ev.metrics.items():
        claimed = card.claimed_metrics.get(name)
        add(
            f"| {name}{' (primary)' if name == primary else ''} | {_fmt(value)} | {_fmt(ev.baseline_metrics.get(name))} | {_fmt(claimed)} |"
        )
    add("")
    verdict = "beats" if ev.beats_baseline else "does **not** beat"
    add(f"On {primary} ({'higher' if higher else 'lower'} is better) the model {verdict} the baseline.")
    other_claims = {k: v for k, v in card.claimed_metrics.items() if k not in ev.metrics}
    if other_claims:
        add("")
        add(
            "Other figures the program reported about itself (validation split, unverified): "
            + ", ".join(f"{_md(k)} {_fmt(v)}" for k, v in sorted(other_claims.items()))
            + "."
        )
    add("")
    add("## Task")
    add("")
    add(f"- Task family: `{card.task_family}`")
    add(f"- Target column: `{_md(card.target_column)}`")
    cols = ", ".join(f"`{_md(c)}`" for c in card.input_columns[:50])
    add(f"- Input columns: {cols or NONE}{' …' if len(card.input_columns) > 50 else ''}")
    add(f"- Metric chosen by the plan: `{_md(card.metric_name)}`")
    add("")
    add("## Data")
    add("")
    add(f"- Dataset: {_md(card.dataset_name) or NONE} (`{card.dataset_id}`)")
    add(
        f"- Rows: train {card.split_rows.get('train', 0)}, validation {card.split_rows.get('validation', 0)}, "
        f"test {card.split_rows.get('test', 0)}"
    )
    if card.dataset_explanation:
        add(f"- Why this data: {_md(card.dataset_explanation)}")
    classes = card.profile.get("classes") or []
    if classes:
        add("- Classes: " + ", ".join(f"{_md(str(c['label']))} {c['count']}" for c in classes[:20]))
    columns = card.profile.get("columns") or []
    if columns:
        add("")
        add("| column | type | missing | distinct |")
        add("|---|---|---|---|")
        for col in columns[:40]:
            add(
                f"| {_md(str(col.get('name', '')))} | {col.get('type', '')} | {col.get('missing', 0)} | {col.get('distinct', 0)} |"
            )
    if card.provenance:
        add("")
        add("Provenance:")
        add("")
        for p in card.provenance[:20]:
            parts = [f"`{_md(p.get('source', ''))}`"]
            if p.get("title"):
                parts.append(_md(p["title"]))
            if p.get("license"):
                parts.append(f"licence {_md(p['license'])}")
            if p.get("fetch_time"):
                parts.append(f"fetched {p['fetch_time']}")
            if p.get("sha256"):
                parts.append(f"sha256 `{p['sha256'][:16]}…`")
            if p.get("description"):
                parts.append(_md(p["description"]))
            add("- " + "; ".join(parts))
    add("")
    add("## Model")
    add("")
    add(f"- Family: {_md(card.model_family)}")
    add(
        f"- Weights: `model.safetensors`, {card.weights.parameters:,} parameters "
        f"({', '.join(card.weights.dtypes)}), {card.weights.size_bytes:,} bytes, sha256 `{card.weights_sha256}`"
    )
    if card.hyperparameters:
        add(
            "- Hyperparameters: "
            + ", ".join(f"{_md(k)} = `{_md(json.dumps(v))}`" for k, v in sorted(card.hyperparameters.items()))
        )
    if card.rationale:
        add(f"- Why this model: {_md(card.rationale)}")
    if card.model_config:
        config_text = json.dumps(card.model_config, sort_keys=True)
        add(f"- `model_config.json`: `{_md(config_text[:600])}{'…' if len(config_text) > 600 else ''}`")
    add("")
    add("## Training")
    add("")
    c = card.curve
    add(f"- Device: {card.device}; wall time of the full run: {card.training_wall_s:.1f} s")
    add(
        f"- Steps: {c.last_step if c.last_step is not None else NONE}; epochs: {c.last_epoch if c.last_epoch is not None else NONE}; metric reports: {c.reports}"
    )
    add(
        f"- Training loss: first {_fmt(c.first_loss)}, last {_fmt(c.last_loss)}, lowest {_fmt(c.min_loss)}"
        + (f" (step {c.min_loss_step})" if c.min_loss_step is not None else "")
    )
    if c.last_val:
        add(
            "- Last validation metrics (program-reported): "
            + ", ".join(f"{_md(k)} {_fmt(v)}" for k, v in sorted(c.last_val.items()))
        )
    if c.last_samples_per_s is not None:
        add(f"- Throughput at the end: {c.last_samples_per_s:,.0f} samples/s")
    add("")
    add("## Known limits")
    add("")
    for limit in known_limits(card):
        add(f"- {limit}")
    add("")
    add("## Use")
    add("")
    add("```sh")
    add(
        "python predict.py inputs.jsonl predictions.jsonl   # one JSON object per line, the input columns above"
    )
    add("```")
    add("")
    add(
        "`predict.py` reads the model from `output/` (or `$ZX_OUTPUT`); the weights are safetensors, never pickle."
    )
    add("")
    return "\n".join(lines)
