"""Protobuf (``zehanx.common.v1``, ``zehanx.codegen.v1``) ↔ the codegen's domain values."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format, struct_pb2
from zehanx.codegen.v1 import codegen_service_pb2 as pb
from zehanx.common.v1 import dataset_pb2, plan_pb2, program_pb2, structured_error_pb2, task_family_pb2
from zehanx_runtime.enums import from_proto, proto_numbers
from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_codegen.domain import (
    ClassCount,
    ColumnProfile,
    ColumnType,
    DatasetProfile,
    MetricGoal,
    NumericStats,
    Plan,
    Program,
    ProgramFailure,
    ProgramPhase,
    TaskFamily,
    TextLength,
    ValidationReport,
)

FAMILIES_PB = proto_numbers(TaskFamily, task_family_pb2.TaskFamily, "TASK_FAMILY_")
FAMILIES = from_proto(FAMILIES_PB)
_COLUMN_TYPES = from_proto(proto_numbers(ColumnType, dataset_pb2.ColumnType, "COLUMN_TYPE_"))
_GOALS_PB = proto_numbers(MetricGoal, task_family_pb2.MetricGoal, "METRIC_GOAL_")
_GOALS = from_proto(_GOALS_PB)
_PHASES = from_proto(proto_numbers(ProgramPhase, structured_error_pb2.ProgramPhase, "PROGRAM_PHASE_"))


def family(value: task_family_pb2.TaskFamily.ValueType) -> TaskFamily | None:
    return FAMILIES.get(value)


def profile(message: dataset_pb2.DatasetProfile) -> DatasetProfile:
    columns = []
    for c in message.columns:
        numeric = None
        if c.HasField("numeric"):
            numeric = NumericStats(c.numeric.min, c.numeric.max, c.numeric.mean, c.numeric.stddev)
        length = None
        if c.HasField("text_length"):
            t = c.text_length
            length = TextLength(t.min, t.max, t.mean, t.p50, t.p95)
        columns.append(
            ColumnProfile(
                name=c.name,
                type=_COLUMN_TYPES.get(c.type, ColumnType.UNSPECIFIED),
                missing_count=c.missing_count,
                distinct_count=c.distinct_count,
                numeric=numeric,
                text_length=length,
                sample_values=tuple(c.sample_values),
            )
        )
    return DatasetProfile(
        row_count=message.row_count,
        columns=tuple(columns),
        classes=tuple(ClassCount(c.label, c.count, c.fraction) for c in message.classes),
        imbalance_ratio=message.imbalance_ratio,
    )


def _json_value(value: Any) -> Any:
    """Protobuf numbers are doubles: 32.0 back to 32, so sizes stay integers in the program."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def plan(message: plan_pb2.Plan, field: str = "plan") -> Plan:
    task = FAMILIES.get(message.task_family)
    if task is None:
        raise InvalidArgument(
            f"{field}.task_family must be set",
            violations=[FieldViolation(f"{field}.task_family", "must be set", "REQUIRED")],
        )
    hyperparameters = {
        k: _json_value(json_format.MessageToDict(v)) for k, v in message.hyperparameters.items()
    }
    return Plan(
        task_family=task,
        target_column=message.target_column,
        input_columns=tuple(message.input_columns),
        metric_name=message.metric_name,
        metric_goal=_GOALS.get(message.metric_goal, MetricGoal.MAXIMIZE),
        model_family=message.model_family,
        hyperparameters=hyperparameters,
        rationale=message.rationale,
    )


def plan_pb(value: Plan) -> plan_pb2.Plan:
    message = plan_pb2.Plan(
        task_family=FAMILIES_PB[value.task_family],
        target_column=value.target_column,
        input_columns=list(value.input_columns),
        metric_name=value.metric_name,
        metric_goal=_GOALS_PB[value.metric_goal],
        model_family=value.model_family,
        rationale=value.rationale,
    )
    for key, item in value.hyperparameters.items():
        message.hyperparameters[key].CopyFrom(json_format.ParseDict(item, struct_pb2.Value()))
    return message


def program(message: program_pb2.Program, field: str = "program") -> Program:
    files = {}
    for i, f in enumerate(message.files):
        try:
            files[f.path] = f.content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"{field}.files[{i}] ({f.path}) is not UTF-8 text",
                violations=[FieldViolation(f"{field}.files[{i}].content", "must be UTF-8 text", "NOT_TEXT")],
            ) from None
    return Program(
        files=files,
        train_entry_point=message.train_entry_point,
        predict_entry_point=message.predict_entry_point,
        runtime_version=message.runtime_version or "1",
    )


def program_pb(value: Program) -> program_pb2.Program:
    return program_pb2.Program(
        files=[
            program_pb2.ProgramFile(path=p, content=t.encode("utf-8")) for p, t in sorted(value.files.items())
        ],
        train_entry_point=value.train_entry_point,
        predict_entry_point=value.predict_entry_point,
        runtime_version=value.runtime_version,
    )


def failure(message: structured_error_pb2.StructuredError) -> ProgramFailure:
    return ProgramFailure(
        phase=_PHASES.get(message.phase, ProgramPhase.UNSPECIFIED),
        exception_type=message.exception_type,
        message=message.message,
        traceback_tail=message.traceback_tail,
        file_path=message.file_path,
        line=message.line,
    )


def report_pb(report: ValidationReport) -> pb.ValidationReport:
    return pb.ValidationReport(
        passed=report.passed,
        checks=[pb.ValidationCheck(name=c.name, passed=c.passed, message=c.message) for c in report.checks],
    )
