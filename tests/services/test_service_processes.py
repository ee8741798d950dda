"""Every service runs as its own process and behaves the same way at the edges.

Health SERVING, reflection, protovalidate → INVALID_ARGUMENT with field violations, internal services
refuse calls without the right service token, and SIGTERM ends the process within its grace with no
process left behind.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from support.services import ServiceProcess, descendants, zx_api_key
from zehanx.codegen.v1 import codegen_service_pb2, codegen_service_pb2_grpc
from zehanx.crawler.v1 import crawler_service_pb2, crawler_service_pb2_grpc
from zehanx.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from zehanx.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from zehanx.trainer.v1 import trainer_service_pb2, trainer_service_pb2_grpc
from zehanx_runtime.status import error_info_of, field_violations_of


def _unary(stub_cls: Any, method: str) -> Any:
    return lambda channel: getattr(stub_cls(channel), method)


def _stream(stub_cls: Any, method: str) -> Any:
    def call(channel: grpc.Channel) -> Any:
        rpc = getattr(stub_cls(channel), method)
        return lambda request, **kw: list(rpc(request, **kw))

    return call


# service → (full service name, rpc factory, an invalid request, the field paths it must name)
SERVICES: dict[str, tuple[str, Any, Any, set[str]]] = {
    "gateway": (
        "zehanx.gateway.v1.GatewayService",
        _unary(gateway_service_pb2_grpc.GatewayServiceStub, "GetJob"),
        gateway_service_pb2.GetJobRequest(job_id="not-a-uuid"),
        {"job_id"},
    ),
    "crawler": (
        "zehanx.crawler.v1.CrawlerService",
        _stream(crawler_service_pb2_grpc.CrawlerServiceStub, "BuildDataset"),
        crawler_service_pb2.BuildDatasetRequest(prompt=""),
        {"prompt"},
    ),
    "codegen": (
        "zehanx.codegen.v1.CodegenService",
        _unary(codegen_service_pb2_grpc.CodegenServiceStub, "PlanTask"),
        codegen_service_pb2.PlanTaskRequest(prompt=""),
        {"prompt", "profile"},
    ),
    "trainer": (
        "zehanx.trainer.v1.TrainerService",
        _stream(trainer_service_pb2_grpc.TrainerServiceStub, "Train"),
        trainer_service_pb2.TrainRequest(),
        {"run_id", "program", "dataset"},
    ),
    "executor": (
        "zehanx.executor.v1.ExecutorService",
        _stream(executor_service_pb2_grpc.ExecutorServiceStub, "Execute"),
        executor_service_pb2.ExecuteRequest(files=[executor_service_pb2.ExecutionFile(path="../escape")]),
        {"files[0].path", "argv"},
    ),
}
INTERNAL = {"crawler", "codegen", "trainer", "executor"}


@pytest.fixture(params=sorted(SERVICES))
def running(request: pytest.FixtureRequest, service_factory: Any) -> ServiceProcess:
    svc = service_factory(request.param)
    svc.wait_serving(timeout=60)
    if svc.name == "gateway":
        svc.api_key = zx_api_key(request.getfixturevalue("postgres_url"), "process-test")
    return svc


def _token(svc: ServiceProcess) -> list[tuple[str, str]]:
    if svc.name == "gateway":
        return [("authorization", f"Bearer {svc.api_key}")]
    return [("x-zx-service-token", svc.token)]


def test_service_serves_health_reflection_and_validates(running: ServiceProcess) -> None:
    full_name, rpc_factory, bad_request, fields = SERVICES[running.name]
    with grpc.insecure_channel(running.address) as channel:
        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {full_name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed

        call = rpc_factory(channel)
        with pytest.raises(grpc.RpcError) as caught:
            call(bad_request, metadata=_token(running), timeout=10)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        named = {field for field, _ in field_violations_of(caught.value)}
        assert fields <= named, named
        info = error_info_of(caught.value)
        assert info is not None and info.domain == f"{running.name}.zehanx"


def test_service_refuses_missing_or_wrong_credentials(running: ServiceProcess) -> None:
    """Internal services want the service token; the public gateway wants a user's API key or JWT."""
    _, rpc_factory, bad_request, _ = SERVICES[running.name]
    if running.name in INTERNAL:
        cases: tuple[tuple[Any, str], ...] = (
            ((), "SERVICE_TOKEN_MISSING"),
            ((("x-zx-service-token", "wrong"),), "SERVICE_TOKEN_INVALID"),
        )
    else:
        key_id = running.api_key[: len("zx_") + 16]  # zx_<key id>_<secret>: keep the id, forge the secret
        cases = (
            ((), "CREDENTIALS_MISSING"),
            ((("x-zx-service-token", running.token),), "CREDENTIALS_MISSING"),  # no back door
            ((("authorization", f"Bearer {key_id}_{'A' * 43}"),), "API_KEY_INVALID"),
        )
    with grpc.insecure_channel(running.address) as channel:
        call = rpc_factory(channel)
        for metadata, reason in cases:
            with pytest.raises(grpc.RpcError) as caught:
                call(bad_request, metadata=metadata, timeout=10)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            info = error_info_of(caught.value)
            assert info is not None and info.reason == reason


def test_sigterm_stops_within_grace_and_leaves_no_process(running: ServiceProcess) -> None:
    pid = running.proc.pid
    children_before = descendants(pid)
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    running.proc.wait(timeout=3.0 + 10)  # grace is 3 s in the fixture; allow interpreter teardown
    elapsed = time.monotonic() - started
    assert running.proc.returncode == 0, running.log.read_text()[-2000:]
    assert elapsed < 3.0 + 5, elapsed
    leftovers = [p for p in children_before if os.path.exists(f"/proc/{p}")]
    assert leftovers == [], leftovers
    assert '"event": "stopped"' in running.log.read_text()
