"""protovalidate rules in the contracts reject bad requests at the right fields and accept good ones."""

from __future__ import annotations

import uuid

import protovalidate
import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.message import Message
from zehanx.codegen.v1 import codegen_service_pb2
from zehanx.common.v1 import (
    dataset_pb2,
    plan_pb2,
    program_pb2,
    resources_pb2,
    structured_error_pb2,
    task_family_pb2,
)
from zehanx.crawler.v1 import crawler_service_pb2
from zehanx.executor.v1 import executor_service_pb2
from zehanx.gateway.v1 import gateway_service_pb2, job_pb2
from zehanx.trainer.v1 import trainer_service_pb2

VALIDATOR = protovalidate.Validator()


def _path(violation: protovalidate.Violation) -> str:
    """Renders a violation's field path like `files[0].path` or `env['x']`; "" for the message."""
    field = violation.proto.field
    if field is None:
        return ""
    parts: list[str] = []
    for element in field.elements:
        text = element.field_name
        subscript = element.subscript  # protobuf-py Oneof(field=..., value=...) or None
        if subscript is not None:
            text += f"[{subscript.value!r}]"
        parts.append(text)
    return ".".join(parts)


def violations(message: Message) -> dict[str, set[str]]:
    """Field path → rule ids violated."""
    found: dict[str, set[str]] = {}
    for violation in VALIDATOR.collect_violations(message):
        found.setdefault(_path(violation), set()).add(violation.proto.rule_id)
    return found


def _program() -> program_pb2.Program:
    return program_pb2.Program(
        files=[
            program_pb2.ProgramFile(path="train.py", content=b"print('train')\n"),
            program_pb2.ProgramFile(path="predict.py", content=b"print('predict')\n"),
            program_pb2.ProgramFile(path="zx/helpers.py", content=b""),
        ],
        train_entry_point="train.py",
        predict_entry_point="predict.py",
        runtime_version="1",
    )


def _plan() -> plan_pb2.Plan:
    return plan_pb2.Plan(
        task_family=task_family_pb2.TASK_FAMILY_TEXT_CLASSIFICATION,
        target_column="label",
        input_columns=["text"],
        metric_name="macro_f1",
        metric_goal=task_family_pb2.METRIC_GOAL_MAXIMIZE,
        model_family="bag_of_words_mlp",
        hyperparameters={"epochs": struct_pb2.Value(number_value=3)},
        rationale="Short reviews with two balanced classes.",
    )


# --- gateway ------------------------------------------------------------------------------------


def test_create_job_with_empty_prompt_and_bad_request_id_names_both_fields() -> None:
    request = gateway_service_pb2.CreateJobRequest(job=job_pb2.Job(prompt=""), request_id="not-a-uuid")
    found = violations(request)
    assert set(found) == {"job.prompt", "request_id"}
    assert "string.min_len" in found["job.prompt"]
    assert found["request_id"] == {"string.uuid"}


def test_create_job_without_a_job_is_rejected() -> None:
    assert violations(gateway_service_pb2.CreateJobRequest()) == {"job": {"required"}}


def test_create_job_with_whitespace_prompt_or_too_many_sources_is_rejected() -> None:
    job = job_pb2.Job(prompt="   \n", sources=[dataset_pb2.DataSource(catalog_name="imdb")] * 21)
    found = violations(gateway_service_pb2.CreateJobRequest(job=job))
    assert found["job.prompt"] == {"string.pattern"}
    assert found["job.sources"] == {"repeated.max_items"}


def test_good_create_job_passes() -> None:
    job = job_pb2.Job(
        prompt="Create a sentiment analysis model",
        sources=[
            dataset_pb2.DataSource(url="https://example.org/reviews.csv"),
            dataset_pb2.DataSource(catalog_name="sklearn.wine"),
            dataset_pb2.DataSource(local_path="/data/reviews.jsonl"),
        ],
        options=job_pb2.JobOptions(
            dataset=dataset_pb2.DatasetOptions(
                seed=7,
                split_fractions=dataset_pb2.SplitFractions(
                    train_fraction=0.7, validation_fraction=0.2, test_fraction=0.1
                ),
                max_rows=5000,
            ),
            resources=resources_pb2.Resources(
                device=resources_pb2.DEVICE_KIND_GPU,
                gpu_count=2,
                max_training_duration=duration_pb2.Duration(seconds=600),
            ),
            max_repair_attempts=0,
        ),
    )
    VALIDATOR.validate(gateway_service_pb2.CreateJobRequest(job=job, request_id=str(uuid.uuid4())))


def test_split_fractions_must_sum_to_one() -> None:
    options = dataset_pb2.DatasetOptions(
        split_fractions=dataset_pb2.SplitFractions(
            train_fraction=0.8, validation_fraction=0.1, test_fraction=0.3
        )
    )
    assert violations(options) == {"split_fractions": {"split_fractions.sum_to_one"}}


def test_data_source_needs_exactly_one_http_url_or_other_source() -> None:
    assert violations(dataset_pb2.DataSource()) == {"source": {"required"}}
    assert violations(dataset_pb2.DataSource(url="ftp://example.org/x.csv")) == {
        "url": {"data_source.url_scheme"}
    }
    assert violations(dataset_pb2.DataSource(local_path="relative/x.csv")) == {
        "local_path": {"string.prefix"}
    }
    assert violations(dataset_pb2.DataSource(catalog_name="Bad Name")) == {"catalog_name": {"string.pattern"}}


def test_list_jobs_page_size_is_bounded_and_states_must_be_real() -> None:
    assert violations(gateway_service_pb2.ListJobsRequest(page_size=1000)) == {}
    found = violations(
        gateway_service_pb2.ListJobsRequest(page_size=1001, states=[job_pb2.JOB_STATE_UNSPECIFIED])
    )
    assert found == {"page_size": {"int32.gte_lte"}, "states[0]": {"enum.not_in"}}
    assert violations(gateway_service_pb2.ListJobsRequest(page_size=-1)) == {"page_size": {"int32.gte_lte"}}


@pytest.mark.parametrize(
    "request_type",
    [
        gateway_service_pb2.GetJobRequest,
        gateway_service_pb2.CancelJobRequest,
        gateway_service_pb2.WatchJobRequest,
        gateway_service_pb2.ListJobEventsRequest,
    ],
)
def test_job_ids_must_be_uuids(request_type: type[Message]) -> None:
    assert violations(request_type(job_id="42")) == {"job_id": {"string.uuid"}}
    assert violations(request_type(job_id="")) == {"job_id": {"string.uuid_empty"}}
    assert violations(request_type(job_id=str(uuid.uuid4()))) == {}


def test_predict_needs_one_to_a_thousand_instances_in_one_form() -> None:
    model_id = str(uuid.uuid4())
    # Neither form: the gateway's servicer names `instances` (a message rule would name no field).
    assert violations(gateway_service_pb2.PredictRequest(model_id=model_id)) == {}
    instances = [struct_pb2.Value(string_value="great film")] * 1001
    assert violations(gateway_service_pb2.PredictRequest(model_id=model_id, instances=instances)) == {
        "instances": {"repeated.max_items"}
    }
    both = gateway_service_pb2.PredictRequest(
        model_id=model_id, instances=instances[:1], instances_jsonl=b'"great film"\n'
    )
    # Both forms: the servicer names `instances_jsonl` (tests/gateway/test_gateway_predict.py); a
    # message-level rule here would convert every Value for CEL.
    assert violations(both) == {}
    assert violations(gateway_service_pb2.PredictRequest(model_id=model_id, instances_jsonl=b'"a"\n')) == {}


def test_download_chunk_size_is_bounded_unless_zero() -> None:
    model_id = str(uuid.uuid4())
    assert violations(gateway_service_pb2.DownloadModelRequest(model_id=model_id, chunk_size_bytes=0)) == {}
    assert violations(gateway_service_pb2.DownloadModelRequest(model_id=model_id, chunk_size_bytes=100)) == {
        "chunk_size_bytes": {"int32.gte_lte"}
    }


# --- executor -----------------------------------------------------------------------------------


def test_execute_with_dotdot_path_and_empty_argv_names_both_fields() -> None:
    request = executor_service_pb2.ExecuteRequest(
        files=[executor_service_pb2.ExecutionFile(path="../x", content=b"")]
    )
    found = violations(request)
    assert set(found) == {"files[0].path", "argv"}
    assert found["files[0].path"] == {"path.no_dot_segments"}
    assert "repeated.min_items" in found["argv"]


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "a/../../b", "a//b", "a/", ".", "a/./b", "dir\\file", "with space.py", "a/.."]
)
def test_execution_file_paths_must_be_relative_and_plain(path: str) -> None:
    request = executor_service_pb2.ExecuteRequest(
        files=[executor_service_pb2.ExecutionFile(path=path)], argv=["python", "x.py"]
    )
    assert set(violations(request)) == {"files[0].path"}


def test_execute_rejects_bad_env_names_duplicate_paths_and_empty_program() -> None:
    request = executor_service_pb2.ExecuteRequest(
        files=[
            executor_service_pb2.ExecutionFile(path="a.py"),
            executor_service_pb2.ExecutionFile(path="a.py"),
        ],
        argv=[""],
        env={"lower_case": "1", "OK_NAME": "1"},
        collect=["../out/**"],
    )
    found = violations(request)
    assert found["argv"] == {"argv.program_not_empty"}
    assert found["env['lower_case']"] == {"string.pattern"}
    assert found["collect[0]"] == {"collect.no_dot_segments"}
    assert found[""] == {"execute_request.unique_paths"}
    assert "env['OK_NAME']" not in found


def test_execution_limits_are_bounded() -> None:
    limits = executor_service_pb2.Limits(
        max_wall_duration=duration_pb2.Duration(seconds=0),
        max_cpu_duration=duration_pb2.Duration(seconds=90000),
        max_memory_bytes=1024,
        max_processes=0,
    )
    found = violations(limits)
    assert found == {
        "max_wall_duration": {"duration.gt_lte"},
        "max_cpu_duration": {"duration.gt_lte"},
        "max_memory_bytes": {"int64.gte_lte"},
    }


def test_good_execute_request_passes() -> None:
    request = executor_service_pb2.ExecuteRequest(
        execution_id=str(uuid.uuid4()),
        files=[
            executor_service_pb2.ExecutionFile(path="train.py", content=b"print(1)\n"),
            executor_service_pb2.ExecutionFile(path="data/train.csv", content=b"text,label\n"),
            executor_service_pb2.ExecutionFile(path="bin/run.sh", content=b"#!/bin/sh\n", executable=True),
        ],
        argv=["python", "train.py"],
        env={"ZX_SMOKE": "1", "ZX_DATA": "data"},
        limits=executor_service_pb2.Limits(
            max_wall_duration=duration_pb2.Duration(seconds=60),
            max_memory_bytes=512 * 1024 * 1024,
            max_processes=64,
        ),
        collect=["out/**", "*.json"],
        collect_max_bytes=10 * 1024 * 1024,
    )
    VALIDATOR.validate(request)


# --- codegen, trainer, crawler ------------------------------------------------------------------


def test_program_entry_points_must_be_among_its_files() -> None:
    program = _program()
    program.predict_entry_point = "serve.py"
    assert violations(program) == {"": {"program.predict_entry_point_present"}}
    VALIDATOR.validate(_program())


def test_repair_attempt_is_one_to_three_and_inputs_are_required() -> None:
    error = structured_error_pb2.StructuredError(
        phase=structured_error_pb2.PROGRAM_PHASE_DATA_LOADING, exception_type="KeyError", message="'label'"
    )
    good = codegen_service_pb2.RepairProgramRequest(program=_program(), plan=_plan(), error=error, attempt=1)
    VALIDATOR.validate(good)
    bad = codegen_service_pb2.RepairProgramRequest(plan=_plan(), error=error, attempt=4)
    assert violations(bad) == {"program": {"required"}, "attempt": {"int32.gte_lte"}}


def test_plan_needs_a_task_family_and_sane_hyperparameter_names() -> None:
    plan = _plan()
    plan.task_family = task_family_pb2.TASK_FAMILY_UNSPECIFIED
    plan.hyperparameters["Learning Rate"].number_value = 0.1
    found = violations(plan)
    assert found["task_family"] == {"enum.not_in"}
    assert set(found) == {"task_family", "hyperparameters['Learning Rate']"}


def test_train_request_needs_run_id_program_dataset_and_plan() -> None:
    found = violations(trainer_service_pb2.TrainRequest())
    assert set(found) == {"run_id", "program", "dataset", "plan"}


def test_resources_gpu_count_only_with_gpu_device() -> None:
    resources = resources_pb2.Resources(device=resources_pb2.DEVICE_KIND_CPU, gpu_count=1)
    assert violations(resources) == {"": {"resources.gpu_count_needs_gpu"}}


def test_build_dataset_prompt_length_is_bounded() -> None:
    assert violations(crawler_service_pb2.BuildDatasetRequest(prompt="x" * 4000)) == {}
    assert violations(crawler_service_pb2.BuildDatasetRequest(prompt="x" * 4001)) == {
        "prompt": {"string.max_len"}
    }
