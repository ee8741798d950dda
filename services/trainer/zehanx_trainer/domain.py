"""The trainer's values: what a run is given and what it reports. No grpc.

The servicer converts ``TrainRequest`` into a :class:`TrainSpec` and each :class:`Sequenced` event
into a ``TrainResponse``; ``training.py`` runs the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from zehanx_trainer import datasets as ds
from zehanx_trainer.evaluation import TaskKind
from zehanx_trainer.executor_port import ExecFile, ExecUsage, ExitReason
from zehanx_trainer.failures import StructuredError
from zehanx_trainer.records import MetricRecord
from zehanx_trainer.weights import MAX_HEADER_BYTES

#: Where things are in the sandbox's working folder (relative paths work on every backend).
DATA_DIR = "data"
OUTPUT_DIR = "output"


#: How the trainer scores each task family (``schema.json``'s names of ``zehanx.common.v1.TaskFamily``;
#: the crawler decides the family, codegen's plan carries it here).
TASK_KINDS: dict[str, TaskKind] = {
    "text_classification": TaskKind.CLASSIFICATION,
    "tabular_classification": TaskKind.CLASSIFICATION,
    "image_classification": TaskKind.CLASSIFICATION,
    "tabular_regression": TaskKind.REGRESSION,
    "time_series_forecasting": TaskKind.FORECASTING,
    "time_series_classification": TaskKind.CLASSIFICATION,
}


# -- what a run is given ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramSpec:
    files: tuple[ExecFile, ...]
    train_entry_point: str = "train.py"
    predict_entry_point: str = "predict.py"
    runtime_version: str = "1"

    @property
    def paths(self) -> set[str]:
        return {f.path for f in self.files}


@dataclass(frozen=True)
class PlanSpec:
    task_family: str
    target_column: str
    input_columns: tuple[str, ...] = ()
    metric_name: str = ""
    model_family: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""


@dataclass(frozen=True)
class ResourceSpec:
    device: str = "unspecified"  # "unspecified" | "cpu" | "gpu"
    gpu_count: int = 0
    cpu_count: int = 0
    memory_bytes: int = 0
    training_s: float = 0.0


@dataclass(frozen=True)
class ModelMeta:
    title: str = ""
    prompt: str = ""
    dataset_name: str = ""
    dataset_explanation: str = ""
    profile: dict[str, Any] = field(default_factory=dict)
    provenance: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class TrainSpec:
    run_id: str
    program: ProgramSpec
    dataset: ds.DatasetSpec
    plan: PlanSpec
    resources: ResourceSpec = ResourceSpec()
    smoke_only: bool = False
    meta: ModelMeta = ModelMeta()
    job_id: str = ""


@dataclass(frozen=True)
class TrainerConfig:
    """The trainer's limits and defaults, built once from the settings."""

    dataset_roots: tuple[Path, ...]
    max_dataset_bytes: int = 48 * 1024 * 1024
    smoke_timeout_s: float = 120.0
    smoke_predict_rows: int = 8
    default_training_s: float = 1800.0
    max_training_s: float = 86400.0
    training_grace_s: float = 60.0
    eval_timeout_s: float = 600.0
    memory_bytes: int = 4 * 1024**3
    max_memory_bytes: int = 16 * 1024**3
    max_processes: int = 512
    disk_bytes: int = 2 * 1024**3
    output_bytes: int = 64 * 1024**2
    max_model_bytes: int = 1024**3
    gpus: int = 0
    seed: int = 42
    max_concurrent_runs: int = 2
    log_lines_per_s: float = 50.0
    log_burst: int = 200
    executor_margin_s: float = 30.0
    max_weights_header_bytes: int = MAX_HEADER_BYTES


# -- what a run reports -------------------------------------------------------------------------------


class Stage(Enum):
    STAGING = "staging"
    SMOKE_RUN = "smoke_run"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PUBLISHING = "publishing"


@dataclass(frozen=True)
class StageChanged:
    stage: Stage
    message: str


@dataclass(frozen=True)
class MetricsReported:
    record: MetricRecord
    smoke: bool


@dataclass(frozen=True)
class LogLine:
    source: str  # "program" | "platform"
    stream: str  # "stdout" | "stderr" | ""
    text: str
    truncated: bool = False


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    epoch: int
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ProgramFailed:
    stage: Stage
    error: StructuredError
    exit_reason: ExitReason
    exit_code: int
    repairable: bool


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    smoke_only: bool
    artifact_id: str = ""
    artifact_uri: str = ""
    weights_sha256: str = ""
    artifact_size_bytes: int = 0
    metric_name: str = ""
    held_out_metrics: dict[str, float] = field(default_factory=dict)
    claimed_metrics: dict[str, float] = field(default_factory=dict)
    baseline_name: str = ""
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    test_row_count: int = 0
    model_card_uri: str = ""
    usage: ExecUsage | None = None


@dataclass(frozen=True)
class RunSucceeded:
    outcome: TrainOutcome


TrainEvent = StageChanged | MetricsReported | LogLine | CheckpointSaved | ProgramFailed | RunSucceeded


@dataclass(frozen=True)
class Sequenced:
    """An event with its place in the stream (from 1, no gaps) and its time."""

    sequence: int
    time: datetime
    event: TrainEvent
