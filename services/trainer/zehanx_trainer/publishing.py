"""Publishing a trained model: the metrics document, the model card and the manifest, stored all or nothing.

What goes to the artifact store: the program files, the model files of ``output/``, the dataset's
``schema.json``, ``metrics.json`` (held-out metrics beside the baseline and what the program claimed)
and ``MODEL_CARD.md``; the manifest's metadata names the run, the job, the dataset and the weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zehanx_trainer import datasets as ds
from zehanx_trainer.artifacts import ArtifactStore
from zehanx_trainer.domain import DATA_DIR, OUTPUT_DIR, TrainOutcome, TrainSpec
from zehanx_trainer.evaluation import Evaluation
from zehanx_trainer.executor_port import ExecFile
from zehanx_trainer.model_card import CardInput, render
from zehanx_trainer.program_output import ProgramRun
from zehanx_trainer.runtime_helper import ZXRT_VERSION
from zehanx_trainer.weights import WeightsSummary


@dataclass(frozen=True)
class Trained:
    """What a successful run hands to publishing."""

    task: ds.TaskSpec
    columns: list[str]
    device: str
    base_files: list[ExecFile]
    model_files: dict[str, bytes]
    weights: WeightsSummary
    full: ProgramRun
    evaluation: Evaluation
    claimed: dict[str, float]
    split_rows: dict[str, int]


def metrics_document(spec: TrainSpec, trained: Trained, metric_name: str) -> dict[str, Any]:
    """``metrics.json``: the held-out metrics, the baseline, the program's own claims, the curve."""
    full, evaluation = trained.full, trained.evaluation
    assert full.result is not None
    return {
        "run_id": spec.run_id,
        "task_family": trained.task.family,
        "metric_name": metric_name,
        "test_rows": evaluation.rows,
        "held_out": evaluation.metrics,
        "baseline": {"name": evaluation.baseline_name, "metrics": evaluation.baseline_metrics},
        "claimed": trained.claimed,
        "beats_baseline": evaluation.beats_baseline,
        "training": {
            "wall_s": round(full.result.usage.wall_s, 3),
            "last_step": full.curve.last_step,
            "last_epoch": full.curve.last_epoch,
            "first_loss": full.curve.first_loss,
            "last_loss": full.curve.last_loss,
            "min_loss": full.curve.min_loss,
        },
    }


def card_input(
    spec: TrainSpec, trained: Trained, metric_name: str, weights_sha: str, created: str
) -> CardInput:
    """What the model card is written from."""
    task, full = trained.task, trained.full
    assert full.result is not None
    return CardInput(
        run_id=spec.run_id,
        title=spec.meta.title or f"{task.family.replace('_', ' ').capitalize()} model",
        prompt=spec.meta.prompt,
        task_family=task.family,
        target_column=task.target_column,
        input_columns=trained.columns,
        metric_name=metric_name,
        dataset_name=spec.meta.dataset_name,
        dataset_id=spec.dataset.dataset_id,
        dataset_explanation=spec.meta.dataset_explanation,
        profile=spec.meta.profile,
        provenance=list(spec.meta.provenance),
        split_rows=trained.split_rows,
        model_family=spec.plan.model_family or "PyTorch",
        hyperparameters=spec.plan.hyperparameters,
        rationale=spec.plan.rationale,
        model_config=full.model_config or {},
        weights=trained.weights,
        weights_sha256=weights_sha,
        curve=full.curve,
        evaluation=trained.evaluation,
        claimed_metrics=trained.claimed,
        device=trained.device,
        training_wall_s=full.result.usage.wall_s,
        created_time=created,
    )


def manifest_metadata(
    spec: TrainSpec, trained: Trained, metric_name: str, weights_sha: str
) -> dict[str, str]:
    """The manifest's metadata: enough to find the run, the job and the dataset from the artifact."""
    return {
        "run_id": spec.run_id,
        "job_id": spec.job_id,
        "dataset_id": spec.dataset.dataset_id,
        "task_family": trained.task.family,
        "target_column": trained.task.target_column,
        "input_columns": json.dumps(trained.columns),
        "metric_name": metric_name,
        "weights_sha256": weights_sha,
        "zxrt_version": str(ZXRT_VERSION),
        "train_entry_point": spec.program.train_entry_point,
        "predict_entry_point": spec.program.predict_entry_point,
    }


async def publish(store: ArtifactStore, spec: TrainSpec, trained: Trained, log: Any) -> TrainOutcome:
    """Store the model and everything about it, all or nothing; the outcome names the artifact."""
    full, evaluation, task = trained.full, trained.evaluation, trained.task
    assert full.result is not None
    weights_sha = full.files[f"{OUTPUT_DIR}/model.safetensors"].sha256
    created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    metric_name = task.metric_name if task.metric_name in evaluation.metrics else evaluation.primary_metric
    card = render(card_input(spec, trained, metric_name, weights_sha, created))
    files: dict[str, bytes] = {f.path: f.content for f in trained.base_files}
    files.update(trained.model_files)
    files[f"{DATA_DIR}/schema.json"] = spec.dataset.schema_json.encode("utf-8")
    document = metrics_document(spec, trained, metric_name)
    files["metrics.json"] = (
        json.dumps(document, indent=2, sort_keys=True, default=_json_default) + "\n"
    ).encode()
    files["MODEL_CARD.md"] = card.encode("utf-8")
    manifest = await store.publish(files, manifest_metadata(spec, trained, metric_name, weights_sha))
    log.info("published", artifact_id=manifest.artifact_id, bytes=manifest.total_bytes)
    return TrainOutcome(
        run_id=spec.run_id,
        smoke_only=False,
        artifact_id=manifest.artifact_id,
        artifact_uri=store.uri(manifest.artifact_id),
        weights_sha256=weights_sha,
        artifact_size_bytes=manifest.total_bytes,
        metric_name=metric_name,
        held_out_metrics=evaluation.metrics,
        claimed_metrics=trained.claimed,
        baseline_name=evaluation.baseline_name,
        baseline_metrics=evaluation.baseline_metrics,
        test_row_count=evaluation.rows,
        model_card_uri=store.file_uri(manifest, "MODEL_CARD.md"),
        usage=full.result.usage,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
