"""CodegenService through a real gRPC server on port 0: plan → generate → repair round trip, bad
requests answered INVALID_ARGUMENT with field violations, data that cannot serve the task
FAILED_PRECONDITION."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import realdata
from zehanx.codegen.v1 import codegen_service_pb2 as pb
from zehanx.codegen.v1 import codegen_service_pb2_grpc as rpc
from zehanx.common.v1 import dataset_pb2, structured_error_pb2, task_family_pb2
from zehanx_codegen.app import build_servicer
from zehanx_codegen.domain import ColumnType, DatasetProfile
from zehanx_codegen.servicer import SERVICE_NAME
from zehanx_codegen.settings import CodegenSettings
from zehanx_runtime.client import call_metadata
from zehanx_runtime.server import ServiceBinding, start_server
from zehanx_runtime.status import error_info_of, field_violations_of

TOKEN = "codegen-test-token"
_TYPES = {t: getattr(dataset_pb2, f"COLUMN_TYPE_{t.name}") for t in ColumnType}


def profile_pb(profile: DatasetProfile) -> dataset_pb2.DatasetProfile:
    """What the crawler sends (the inverse of the servicer's conversion)."""
    message = dataset_pb2.DatasetProfile(row_count=profile.row_count, imbalance_ratio=profile.imbalance_ratio)
    for c in profile.columns:
        column = message.columns.add(name=c.name, type=_TYPES[c.type], missing_count=c.missing_count,
                                     distinct_count=c.distinct_count, sample_values=list(c.sample_values))  # fmt: skip
        if c.numeric:
            column.numeric.CopyFrom(dataset_pb2.NumericStats(min=c.numeric.min, max=c.numeric.max,
                                                             mean=c.numeric.mean, stddev=c.numeric.stddev))  # fmt: skip
    for k in profile.classes:
        message.classes.add(label=k.label, count=k.count, fraction=k.fraction)
    return message


@pytest.fixture
async def stub() -> Any:
    settings = CodegenSettings(port=0, service_token=TOKEN, allow_pretrained_encoder=False, time_budget_s=20)
    binding = ServiceBinding(rpc.add_CodegenServiceServicer_to_server, build_servicer(settings), SERVICE_NAME)
    running = await start_server(settings, [binding], service_name="codegen")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield rpc.CodegenServiceStub(channel)
    await channel.close()
    await running.server.stop(None)


async def test_plan_generate_and_repair_through_grpc(stub: Any, penguins: realdata.Prepared) -> None:
    md = call_metadata(TOKEN)
    profile = profile_pb(penguins.profile)
    planned = await stub.PlanTask(
        pb.PlanTaskRequest(prompt="predict the species of a penguin", profile=profile,
                           schema_json=penguins.schema_json), metadata=md)  # fmt: skip
    plan = planned.plan
    assert plan.task_family == task_family_pb2.TASK_FAMILY_TABULAR_CLASSIFICATION
    assert plan.target_column == "species" and planned.backend == "template"
    assert plan.hyperparameters["hidden_size"].number_value == 32

    generated = await stub.GenerateProgram(
        pb.GenerateProgramRequest(prompt="predict the species", plan=plan, profile=profile), metadata=md
    )
    assert generated.validation.passed and generated.backend == "template"
    files = {f.path: f.content.decode() for f in generated.program.files}
    assert generated.program.train_entry_point == "train.py" and "predict.py" in files
    assert "hidden_size = 32 " in files["train.py"]  # a size, not 32.0, after the trip through protobuf

    broken = pb.RepairProgramRequest(program=generated.program, plan=plan, attempt=1, profile=profile)
    for f in broken.program.files:
        if f.path == "train.py":
            f.content = f.content.replace(b"encode(", b"encode_rows(", 1)
    broken.error.CopyFrom(structured_error_pb2.StructuredError(
        phase=structured_error_pb2.PROGRAM_PHASE_DATA_LOADING, exception_type="NameError",
        message="name 'encode_rows' is not defined", file_path="train.py", line=130))  # fmt: skip
    repaired = await stub.RepairProgram(broken, metadata=md)
    assert list(repaired.changed_paths) == ["train.py"] and repaired.validation.passed
    assert {f.path: f.content.decode() for f in repaired.program.files}["train.py"] == files["train.py"]


async def test_bad_requests_are_invalid_argument_with_field_violations(stub: Any, penguins) -> None:
    md = call_metadata(TOKEN)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlanTask(pb.PlanTaskRequest(prompt="   "), metadata=md)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = {field for field, _ in field_violations_of(caught.value)}
    assert {"prompt", "profile"} <= fields

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RepairProgram(pb.RepairProgramRequest(attempt=4), metadata=md)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {"attempt", "program", "plan", "error"} <= {
        field for field, _ in field_violations_of(caught.value)
    }

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlanTask(pb.PlanTaskRequest(prompt="predict the species", profile=profile_pb(penguins.profile),
                                               schema_json="{not json"), metadata=md)  # fmt: skip
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in field_violations_of(caught.value)] == ["schema_json"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlanTask(pb.PlanTaskRequest(prompt="hello there", profile=profile_pb(penguins.profile)),
                            metadata=md)  # fmt: skip
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(caught.value).reason == "PROMPT_UNCLEAR"


async def test_data_that_cannot_serve_the_task_is_failed_precondition(stub: Any, penguins) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlanTask(
            pb.PlanTaskRequest(prompt="classify penguin photos", profile=profile_pb(penguins.profile),
                               target_column_hint="species",
                               task_hint=task_family_pb2.TASK_FAMILY_IMAGE_CLASSIFICATION),
            metadata=call_metadata(TOKEN),
        )  # fmt: skip
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "no image column" in caught.value.details()
