"""The codegen service's values: dataset profile, plan, program, failure. Plain dataclasses, no grpc.

The servicer converts the protobuf messages of ``zehanx.common.v1`` to and from these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zehanx_runtime.tasks import TaskFamily

#: Version of the zxrt runtime helper the generated programs are written against.
RUNTIME_VERSION = "1"
TRAIN_ENTRY_POINT = "train.py"
PREDICT_ENTRY_POINT = "predict.py"


class ColumnType(enum.StrEnum):
    """The crawler's inferred logical type of a column (``zehanx.common.v1.ColumnType``)."""

    UNSPECIFIED = "unspecified"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    CATEGORICAL = "categorical"
    TEXT = "text"
    DATETIME = "datetime"
    IMAGE = "image"

    @property
    def is_numeric(self) -> bool:
        return self in (ColumnType.INTEGER, ColumnType.FLOAT)


@dataclass(frozen=True)
class NumericStats:
    min: float
    max: float
    mean: float
    stddev: float


@dataclass(frozen=True)
class TextLength:
    """Length statistics of a text column, in characters."""

    min: int
    max: int
    mean: float
    p50: float
    p95: float


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    type: ColumnType
    missing_count: int = 0
    distinct_count: int = 0
    numeric: NumericStats | None = None
    text_length: TextLength | None = None
    sample_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassCount:
    label: str
    count: int
    fraction: float


@dataclass(frozen=True)
class DatasetProfile:
    """What the crawler measured, plus what its ``schema.json`` says (target, task, time column)."""

    row_count: int
    columns: tuple[ColumnProfile, ...]
    classes: tuple[ClassCount, ...] = ()
    imbalance_ratio: float = 0.0
    #: From ``schema.json`` when present.
    schema_target: str | None = None
    schema_task: TaskFamily | None = None
    schema_inputs: tuple[str, ...] = ()
    time_column: str | None = None
    #: Shape of an image column (height, width, channels), from ``schema.json`` when present.
    image_shape: tuple[int, ...] = ()
    #: Columns that are one ordered series per row, in order (``"layout": "series"`` in schema.json).
    series_columns: tuple[str, ...] = ()

    def column(self, name: str) -> ColumnProfile | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


class MetricGoal(enum.StrEnum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True)
class Plan:
    """How to learn from a dataset; the input of generation and repair."""

    task_family: TaskFamily
    target_column: str
    input_columns: tuple[str, ...]
    metric_name: str
    metric_goal: MetricGoal
    model_family: str
    #: JSON values only (they are rendered into the program's config block).
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    rationale: str = ""


@dataclass(frozen=True)
class Program:
    """A folder of source files: path → text."""

    files: Mapping[str, str]
    train_entry_point: str = TRAIN_ENTRY_POINT
    predict_entry_point: str = PREDICT_ENTRY_POINT
    runtime_version: str = RUNTIME_VERSION

    def changed_paths(self, other: Program) -> list[str]:
        """Paths whose content differs between the two programs (added, removed or edited)."""
        paths = set(self.files) | set(other.files)
        return sorted(p for p in paths if self.files.get(p) != other.files.get(p))


class ProgramPhase(enum.StrEnum):
    UNSPECIFIED = "unspecified"
    SETUP = "setup"
    DATA_LOADING = "data_loading"
    MODEL_BUILDING = "model_building"
    TRAINING = "training"
    VALIDATION = "validation"
    SAVING = "saving"
    PREDICTION = "prediction"


@dataclass(frozen=True)
class ProgramFailure:
    """How a program failed (``zehanx.common.v1.StructuredError``)."""

    phase: ProgramPhase = ProgramPhase.UNSPECIFIED
    exception_type: str = ""
    message: str = ""
    traceback_tail: str = ""
    file_path: str = ""
    line: int = 0


@dataclass(frozen=True)
class Check:
    """One static check of a program and its outcome."""

    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class ValidationReport:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        bad = self.failures()
        if not bad:
            return "all checks passed: " + ", ".join(c.name for c in self.checks)
        return "; ".join(f"{c.name}: {c.message}" for c in bad)


@dataclass(frozen=True)
class Generated:
    """A program and where it came from."""

    program: Program
    validation: ValidationReport
    backend: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Repaired:
    program: Program
    validation: ValidationReport
    backend: str
    change_summary: str
    changed_paths: tuple[str, ...]
