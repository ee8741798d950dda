"""The generated stubs import and the contracts keep the house rules (AIP-131..158, STYLE.md)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import zehanx
from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, ServiceDescriptor
from zehanx.codegen.v1 import codegen_service_pb2, codegen_service_pb2_grpc
from zehanx.crawler.v1 import crawler_service_pb2, crawler_service_pb2_grpc
from zehanx.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from zehanx.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc, job_event_pb2
from zehanx.trainer.v1 import trainer_service_pb2, trainer_service_pb2_grpc

UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI_STREAM = "unary", "server-stream", "client-stream", "bidi-stream"

# Every service and its RPCs, with their shape.
EXPECTED_RPCS: dict[str, dict[str, str]] = {
    "zehanx.gateway.v1.GatewayService": {
        "CreateJob": UNARY,
        "GetJob": UNARY,
        "ListJobs": UNARY,
        "CancelJob": UNARY,
        "WatchJob": SERVER_STREAM,
        "ListJobEvents": UNARY,
        "ListModels": UNARY,
        "GetModel": UNARY,
        "DownloadModel": SERVER_STREAM,
        "DeleteModel": UNARY,
        "Predict": UNARY,
        # Chunks of instances in, one answer per chunk out (gRPC only: the web edge cannot serve it).
        "PredictStream": BIDI_STREAM,
        "ListDatasets": UNARY,
        "GetDataset": UNARY,
        "UploadFile": UNARY,
        "CreateApiKey": UNARY,
        "ListApiKeys": UNARY,
        "RevokeApiKey": UNARY,
        "SetProviderKey": UNARY,
        "ListProviderKeys": UNARY,
        "DeleteProviderKey": UNARY,
        "GetUserSettings": UNARY,
        "UpdateUserSettings": UNARY,
    },
    "zehanx.crawler.v1.CrawlerService": {
        "BuildDataset": SERVER_STREAM,
        # The crawler's store crosses to other services only as streams (no shared disk).
        "ReadDatasetFile": SERVER_STREAM,
        "PutSourceFile": CLIENT_STREAM,
        "ListCatalog": UNARY,
    },
    "zehanx.codegen.v1.CodegenService": {
        "PlanTask": UNARY,
        "GenerateProgram": UNARY,
        "RepairProgram": UNARY,
    },
    # Session: a bidirectional stream (a warm sandbox: calls in, replies out).
    "zehanx.executor.v1.ExecutorService": {"Execute": SERVER_STREAM, "Session": BIDI_STREAM},
    "zehanx.trainer.v1.TrainerService": {
        "Train": SERVER_STREAM,
        "Predict": UNARY,
        "ReadArtifact": SERVER_STREAM,
        "ReleasePredictor": UNARY,
    },
}
SERVICE_MODULES = {
    "zehanx.gateway.v1.GatewayService": (gateway_service_pb2, gateway_service_pb2_grpc),
    "zehanx.crawler.v1.CrawlerService": (crawler_service_pb2, crawler_service_pb2_grpc),
    "zehanx.codegen.v1.CodegenService": (codegen_service_pb2, codegen_service_pb2_grpc),
    "zehanx.executor.v1.ExecutorService": (executor_service_pb2, executor_service_pb2_grpc),
    "zehanx.trainer.v1.TrainerService": (trainer_service_pb2, trainer_service_pb2_grpc),
}
# RPCs that return the resource itself (AIP-131/133/136); buf.yaml documents the exception.
RESOURCE_RETURNING = {
    "zehanx.gateway.v1.GatewayService.CreateJob": "zehanx.gateway.v1.Job",
    "zehanx.gateway.v1.GatewayService.GetJob": "zehanx.gateway.v1.Job",
    "zehanx.gateway.v1.GatewayService.CancelJob": "zehanx.gateway.v1.Job",
    "zehanx.gateway.v1.GatewayService.GetModel": "zehanx.gateway.v1.Model",
    "zehanx.gateway.v1.GatewayService.GetDataset": "zehanx.gateway.v1.DatasetRecord",
    "zehanx.gateway.v1.GatewayService.UploadFile": "zehanx.gateway.v1.UploadedFile",
    "zehanx.gateway.v1.GatewayService.RevokeApiKey": "zehanx.gateway.v1.ApiKey",
    "zehanx.gateway.v1.GatewayService.SetProviderKey": "zehanx.gateway.v1.ProviderKey",
    "zehanx.gateway.v1.GatewayService.GetUserSettings": "zehanx.gateway.v1.UserSettings",
    "zehanx.gateway.v1.GatewayService.UpdateUserSettings": "zehanx.gateway.v1.UserSettings",
}
# List RPCs over a handful of items (one per key or provider) that return them all, unpaginated.
UNPAGINATED_LISTS = {"ListApiKeys", "ListProviderKeys"}


def _all_contract_files() -> list[FileDescriptor]:
    files = []
    for info in pkgutil.walk_packages(zehanx.__path__, prefix="zehanx."):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(info.name).DESCRIPTOR)
    return sorted(files, key=lambda f: f.name)


def _all_messages() -> list[Descriptor]:
    out: list[Descriptor] = []

    def walk(message: Descriptor) -> None:
        if message.GetOptions().map_entry:
            return
        out.append(message)
        for nested in message.nested_types:
            walk(nested)

    for file in _all_contract_files():
        for message in file.message_types_by_name.values():
            walk(message)
    return out


def _service(full_name: str) -> ServiceDescriptor:
    pb2, _ = SERVICE_MODULES[full_name]
    return pb2.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]]


def test_every_contract_file_is_generated_and_importable() -> None:
    names = {f.name for f in _all_contract_files()}
    assert {
        "zehanx/common/v1/dataset.proto",
        "zehanx/common/v1/program.proto",
        "zehanx/gateway/v1/gateway_service.proto",
        "zehanx/gateway/v1/job.proto",
        "zehanx/executor/v1/executor_service.proto",
    } <= names
    assert all(name.startswith("zehanx/") and "/v1/" in name for name in names)


@pytest.mark.parametrize("service_name", sorted(EXPECTED_RPCS))
def test_service_has_exactly_the_listed_rpcs(service_name: str) -> None:
    service = _service(service_name)
    shapes = {
        method.name: BIDI_STREAM
        if method.client_streaming and method.server_streaming
        else CLIENT_STREAM
        if method.client_streaming
        else SERVER_STREAM
        if method.server_streaming
        else UNARY
        for method in service.methods
    }
    assert shapes == EXPECTED_RPCS[service_name]


@pytest.mark.parametrize("service_name", sorted(EXPECTED_RPCS))
def test_grpc_module_exposes_stub_servicer_and_registration(service_name: str) -> None:
    _, grpc_module = SERVICE_MODULES[service_name]
    short = service_name.rsplit(".", 1)[1]
    stub = getattr(grpc_module, f"{short}Stub")
    servicer = getattr(grpc_module, f"{short}Servicer")
    assert callable(getattr(grpc_module, f"add_{short}Servicer_to_server"))
    for rpc in EXPECTED_RPCS[service_name]:
        assert callable(getattr(servicer, rpc))
    assert stub.__init__.__code__.co_varnames[:2] == ("self", "channel")


def test_requests_and_responses_are_named_after_their_rpc() -> None:
    for service_name in EXPECTED_RPCS:
        for method in _service(service_name).methods:
            assert method.input_type.name == f"{method.name}Request", method.full_name
            expected = RESOURCE_RETURNING.get(method.full_name)
            if expected:
                assert method.output_type.full_name == expected, method.full_name
            else:
                assert method.output_type.name == f"{method.name}Response", method.full_name


def test_every_list_rpc_paginates() -> None:
    list_methods = [
        method
        for service_name in EXPECTED_RPCS
        for method in _service(service_name).methods
        if method.name.startswith("List") and method.name not in UNPAGINATED_LISTS
    ]
    assert {m.name for m in list_methods} == {
        "ListJobs",
        "ListJobEvents",
        "ListModels",
        "ListCatalog",
        "ListDatasets",
    }
    for method in list_methods:
        request, response = method.input_type.fields_by_name, method.output_type
        assert not method.server_streaming, f"{method.full_name}: AIP-158 forbids streaming List"
        assert request["page_size"].type == FieldDescriptor.TYPE_INT32, method.full_name
        assert request["page_token"].type == FieldDescriptor.TYPE_STRING, method.full_name
        assert response.fields_by_name["next_page_token"].type == FieldDescriptor.TYPE_STRING
        first = response.fields_by_number[1]
        assert first.is_repeated and first.message_type is not None, f"{method.full_name}: results first"


def test_streams_carry_sequence_and_event_time() -> None:
    streamed = [
        executor_service_pb2.ExecuteResponse,
        executor_service_pb2.SessionResponse,
        trainer_service_pb2.TrainResponse,
        crawler_service_pb2.BuildDatasetResponse,
        job_event_pb2.JobEvent,
    ]
    for cls in streamed:
        fields = cls.DESCRIPTOR.fields_by_name
        assert fields["sequence"].type == FieldDescriptor.TYPE_INT64, cls.DESCRIPTOR.full_name
        assert fields["event_time"].message_type.full_name == "google.protobuf.Timestamp"
        assert "event" in cls.DESCRIPTOR.oneofs_by_name, cls.DESCRIPTOR.full_name


def test_time_and_duration_fields_follow_aip_142() -> None:
    for message in _all_messages():
        for field in message.fields:
            kind = field.message_type.full_name if field.message_type else None
            if kind == "google.protobuf.Timestamp":
                assert field.name.endswith("_time"), f"{message.full_name}.{field.name}"
            elif kind == "google.protobuf.Duration":
                assert field.name.endswith("_duration"), f"{message.full_name}.{field.name}"
            else:
                assert not field.name.endswith("_time"), (
                    f"{message.full_name}.{field.name} is not a Timestamp"
                )


def test_ids_named_like_uuids_are_validated_as_uuids_in_requests() -> None:
    checked = []
    for message in _all_messages():
        if not message.name.endswith("Request"):
            continue
        for field in message.fields:
            if field.name in {"job_id", "model_id", "request_id", "run_id", "execution_id"}:
                rules = field.GetOptions().Extensions[validate_pb2.field]
                assert rules.string.uuid, f"{message.full_name}.{field.name} lacks string.uuid"
                checked.append(f"{message.name}.{field.name}")
    assert len(checked) >= 15, checked


def test_enums_have_prefixed_unspecified_zero() -> None:
    for file in _all_contract_files():
        for enum in file.enum_types_by_name.values():
            prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_")
            assert enum.values_by_number[0].name == f"{prefix}_UNSPECIFIED", enum.full_name
            assert all(v.name.startswith(prefix + "_") for v in enum.values), enum.full_name
