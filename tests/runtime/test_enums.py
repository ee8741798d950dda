"""Domain enums are matched to their protobuf namesakes by name (zehanx_runtime.enums)."""

from __future__ import annotations

import enum

import pytest
from zehanx.common.v1 import task_family_pb2
from zehanx.executor.v1 import executor_service_pb2 as executor_pb
from zehanx_runtime.enums import from_proto, proto_numbers
from zehanx_runtime.tasks import TaskFamily


def test_each_member_gets_its_namesakes_number_and_back() -> None:
    numbers = proto_numbers(TaskFamily, task_family_pb2.TaskFamily, "TASK_FAMILY_")
    assert numbers[TaskFamily.TABULAR_REGRESSION] == task_family_pb2.TASK_FAMILY_TABULAR_REGRESSION
    assert (
        from_proto(numbers)[task_family_pb2.TASK_FAMILY_IMAGE_CLASSIFICATION]
        is TaskFamily.IMAGE_CLASSIFICATION
    )
    # every value the proto has, but UNSPECIFIED, has a member: a family added to the proto only fails here
    assert set(from_proto(numbers)) == set(task_family_pb2.TaskFamily.values()) - {0}


def test_a_member_without_a_namesake_fails_naming_it() -> None:
    class Reason(enum.Enum):
        COMPLETED = "completed"
        EVAPORATED = "evaporated"

    with pytest.raises(LookupError, match=r"Reason\.EVAPORATED has no EXIT_REASON_EVAPORATED"):
        proto_numbers(Reason, executor_pb.ExitReason, "EXIT_REASON_")


def test_every_service_table_covers_its_proto_enum() -> None:
    from zehanx_codegen import convert as codegen
    from zehanx_crawler import convert as crawler
    from zehanx_executor import convert as executor

    assert set(executor._REASONS.values()) == set(executor_pb.ExitReason.values()) - {0}
    assert set(crawler.PHASES.values()) == set(crawler.pb.DatasetBuildPhase.values()) - {0}
    assert set(codegen._PHASES) == set(codegen.structured_error_pb2.ProgramPhase.values())
    assert set(codegen._COLUMN_TYPES) == set(codegen.dataset_pb2.ColumnType.values())
