"""Support of the end-to-end tests (fixtures are re-exported by conftest.py).

``sandbox``: a real executor (local bubblewrap sandbox) and a real trainer, as processes, shared by the
module's tests; the trainer can be killed and restarted on the same port. ``gateway``: the gateway's
real object graph on a fresh database of the session's PostgreSQL, with its job workers running; the
crawler and codegen ports are in-process stand-ins that hand over real files and real programs (the
services themselves are exercised by the process-level tests in test_suite.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from zehanx.codegen.v1 import codegen_service_pb2 as codegen_pb
from zehanx.common.v1 import dataset_pb2, plan_pb2, program_pb2, task_family_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as crawler_pb
from zehanx.crawler.v1 import dataset_pb2 as crawler_dataset_pb2
from zehanx.gateway.v1 import job_pb2
from zehanx_gateway import convert
from zehanx_gateway.app import Gateway
from zehanx_gateway.domain import AuthMethod, Job, JobEvent, Principal
from zehanx_gateway.orchestrator.runner import Workers, start_workers
from zehanx_gateway.orchestrator.settings import OrchestratorSettings
from zehanx_gateway.settings import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / ".." / "shared").resolve()
for extra in (
    REPO / "tests" / "services",
    REPO / "tests" / "trainer",
    REPO / "examples" / "reference_digits",
):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from support.datasets import TINY_SCHEMA, tiny_rows, write_dataset  # noqa: E402
from support.sandbox import local_executor, require_local_sandbox  # noqa: E402
from svc_harness import ServiceProcess, free_port, start_service  # noqa: E402

TOKEN = "e2e-test-token"
EXECUTOR_SLOTS = 4
#: Sandbox uids in 67000-67499, distinct from a development executor (60600), the executor tests (100000+)
#: and the trainer tests (66000), outside systemd's dynamic-user range the executor refuses, and (by this process's id) from another checkout running these tests at
#: the same time: the tests count the sandbox's processes by uid.
EXECUTOR_UID_BASE = 67000 + (os.getpid() % 100) * (EXECUTOR_SLOTS + 1)
#: The suite's (test_suite.py) executor: uids 60000-60499.
SUITE_UID_BASE = 60000 + (os.getpid() % 100) * (EXECUTOR_SLOTS + 1)
EXECUTOR_WORK_DIR = f"/var/tmp/zx-e2e-tests-{EXECUTOR_UID_BASE}"
DIGITS_PROGRAM = REPO / "examples" / "reference_digits"


# -- the sandbox side: executor + trainer processes -----------------------------------------------------


@dataclass
class Sandbox:
    tmp: Path
    executor: ServiceProcess
    trainer: ServiceProcess
    dataset_root: Path
    artifact_dir: Path
    trainer_port: int

    def trainer_env(self) -> dict[str, str]:
        return {
            "ZX_TRAINER_PORT": str(self.trainer_port),
            "ZX_TRAINER_EXECUTOR_ADDRESS": self.executor.address,
            "ZX_TRAINER_DATASET_ROOTS": json.dumps([str(self.dataset_root)]),
            "ZX_TRAINER_ARTIFACT_DIR": str(self.artifact_dir),
            "ZX_TRAINER_GPUS": "0",
            "ZX_TRAINER_MAX_CONCURRENT_RUNS": "4",
            "ZX_TRAINER_MEMORY_BYTES": str(2 * 1024**3),
            "ZX_TRAINER_DISK_BYTES": str(256 * 1024**2),
            "ZX_TRAINER_TRAINING_GRACE_S": "30",
        }

    def start_trainer(self) -> ServiceProcess:
        trainer = start_service("trainer", self.tmp, token=TOKEN, extra_env=self.trainer_env())
        trainer.address = f"127.0.0.1:{self.trainer_port}"
        trainer.wait_serving(90)
        self.trainer = trainer
        return trainer

    def sandbox_pids(self, *, live_only: bool = False) -> list[int]:
        """Processes running as one of this executor's sandbox uids (zombies too, unless ``live_only``)."""
        return sandbox_pids(EXECUTOR_UID_BASE, live_only=live_only)


def sandbox_pids(uid_base: int, *, live_only: bool = False) -> list[int]:
    """Processes whose uid is one of the sandbox uids from ``uid_base`` (its slots and the probe's)."""
    uids = range(uid_base, uid_base + EXECUTOR_SLOTS + 1)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            if int(fields["Uid"].split()[0]) not in uids:
                continue
            if live_only and fields["State"].split()[0] == "Z":
                continue
        except (KeyError, IndexError, ValueError):
            continue
        found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    tmp = tmp_path_factory.mktemp("e2e-sandbox")
    with local_executor(tmp, TOKEN, EXECUTOR_WORK_DIR, EXECUTOR_UID_BASE, EXECUTOR_SLOTS) as executor:
        box = Sandbox(tmp, executor, None, tmp / "datasets", tmp / "artifacts", free_port())  # type: ignore[arg-type]
        try:
            box.dataset_root.mkdir()
            box.start_trainer()
            yield box
        finally:
            if box.trainer is not None:
                box.trainer.stop()


# -- datasets and programs --------------------------------------------------------------------------------


def _dataset(
    root: Path, name: str, rows: dict[str, list[dict]], schema: dict, family: int
) -> crawler_dataset_pb2.Dataset:
    ref = write_dataset(root, rows, schema)
    target = schema["target"]
    labels = [str(r[target]) for split in rows.values() for r in split]
    classes = sorted(set(labels))
    return crawler_dataset_pb2.Dataset(
        id=ref.dataset_id,
        name=name,
        task_family=family,
        target_column=target,
        explanation="test data written by the test",
        ref=ref,
        profile=dataset_pb2.DatasetProfile(
            row_count=len(labels),
            classes=[
                dataset_pb2.ClassCount(label=c, count=labels.count(c), fraction=labels.count(c) / len(labels))
                for c in classes
            ],
        ),
        provenance=[dataset_pb2.Provenance(source=str(root), description="written by the test")],
        train_row_count=len(rows["train"]),
        validation_row_count=len(rows["validation"]),
        test_row_count=len(rows["test"]),
    )


def digits_dataset(root: Path) -> crawler_dataset_pb2.Dataset:
    from make_dataset import write_digits

    written = write_digits(root / "digits")
    folder = written["dir"]
    rows = {
        split: [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines() if line]
        for split in ("train", "validation", "test")
    }
    return _dataset(
        folder,
        "sklearn-digits",
        rows,
        json.loads(written["schema_json"]),
        task_family_pb2.TASK_FAMILY_IMAGE_CLASSIFICATION,
    )


def tiny_dataset(root: Path) -> crawler_dataset_pb2.Dataset:
    return _dataset(
        root / "tiny",
        "tiny",
        tiny_rows(),
        dict(TINY_SCHEMA),
        task_family_pb2.TASK_FAMILY_TABULAR_CLASSIFICATION,
    )


def digits_program() -> program_pb2.Program:
    files = [
        program_pb2.ProgramFile(path=p.name, content=p.read_bytes())
        for p in sorted(DIGITS_PROGRAM.glob("*.py"))
        if p.name != "make_dataset.py"
    ]
    return program_pb2.Program(
        files=files, train_entry_point="train.py", predict_entry_point="predict.py", runtime_version="1"
    )


def plan_for(dataset: crawler_dataset_pb2.Dataset, inputs: list[str], family: str) -> plan_pb2.Plan:
    return plan_pb2.Plan(
        task_family=dataset.task_family,
        target_column=dataset.target_column,
        input_columns=inputs,
        metric_name="accuracy",
        metric_goal=task_family_pb2.METRIC_GOAL_MAXIMIZE,
        model_family=family,
        rationale="chosen by the test",
    )


# -- in-process stand-ins for the crawler and codegen ports ----------------------------------------------


@dataclass
class StaticCrawler:
    """Hands over one dataset (real files), after one progress message."""

    dataset: crawler_dataset_pb2.Dataset
    calls: int = 0

    async def build_dataset(
        self, request: crawler_pb.BuildDatasetRequest, *, timeout_s: float
    ) -> AsyncIterator[crawler_pb.BuildDatasetResponse]:
        self.calls += 1
        yield crawler_pb.BuildDatasetResponse(
            sequence=1,
            progress=crawler_pb.BuildProgress(
                phase=crawler_pb.DATASET_BUILD_PHASE_FETCHING, message="reading the test's files", rows_done=1
            ),
        )
        yield crawler_pb.BuildDatasetResponse(sequence=2, dataset=self.dataset)


@dataclass
class ScriptedCodegen:
    """Returns ``first`` from GenerateProgram and ``repairs[n-1]`` (else the last) from RepairProgram n."""

    plan: plan_pb2.Plan
    first: program_pb2.Program
    repairs: list[program_pb2.Program] = field(default_factory=list)
    generate_calls: int = 0
    repair_requests: list[codegen_pb.RepairProgramRequest] = field(default_factory=list)

    async def plan_task(
        self, request: codegen_pb.PlanTaskRequest, *, timeout_s: float
    ) -> codegen_pb.PlanTaskResponse:
        return codegen_pb.PlanTaskResponse(plan=self.plan, backend="test")

    async def generate_program(
        self, request: codegen_pb.GenerateProgramRequest, *, timeout_s: float
    ) -> codegen_pb.GenerateProgramResponse:
        self.generate_calls += 1
        return codegen_pb.GenerateProgramResponse(program=self.first, backend="test")

    async def repair_program(
        self, request: codegen_pb.RepairProgramRequest, *, timeout_s: float
    ) -> codegen_pb.RepairProgramResponse:
        self.repair_requests.append(request)
        program = (
            self.repairs[min(request.attempt, len(self.repairs)) - 1] if self.repairs else request.program
        )
        return codegen_pb.RepairProgramResponse(
            program=program, change_summary=f"test repair {request.attempt}", backend="test"
        )


# -- the gateway with its workers ------------------------------------------------------------------------


@dataclass
class Harness:
    gateway: Gateway
    workers: list[Workers]
    principal: Principal

    async def create(self, prompt: str, **options: object) -> Job:
        job = job_pb2.Job(prompt=prompt)
        if options:
            job.options.CopyFrom(job_pb2.JobOptions(**options))  # type: ignore[arg-type]
        return await self.gateway.jobs.create(self.principal, convert.new_job(job, ""))

    async def job(self, job_id: uuid.UUID) -> Job:
        return await self.gateway.registry.get_job(job_id, user_id=None)

    async def events(self, job_id: uuid.UUID) -> list[JobEvent]:
        return await self.gateway.registry.list_events(job_id, after_sequence=0, limit=100_000)

    async def wait(self, job_id: uuid.UUID, predicate: object, within: float = 240.0) -> Job:
        """Poll until ``predicate(job, events)`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            job = await self.job(job_id)
            events = await self.events(job_id)
            if predicate(job, events):  # type: ignore[operator]
                return job
            if loop.time() > deadline:
                kinds = [
                    (e.sequence, e.kind, dict(e.payload).get("text") or dict(e.payload).get("reason"))
                    for e in events[-30:]
                ]
                raise AssertionError(
                    f"timed out; job {job.state} {job.stage} {job.error}; last events {kinds}"
                )
            await asyncio.sleep(0.2)

    async def wait_terminal(self, job_id: uuid.UUID, within: float = 240.0) -> Job:
        return await self.wait(job_id, lambda job, _events: job.terminal, within)


def gateway_settings(database_url: str, tmp: Path, trainer_address: str) -> GatewaySettings:
    return GatewaySettings(
        host="127.0.0.1",
        port=0,
        database_url=database_url,
        artifact_dir=tmp / "gateway-artifacts",
        trainer_address=trainer_address,
        service_token=TOKEN,
        log_json=True,
        log_level="warning",
    )


def worker_settings(**overrides: object) -> OrchestratorSettings:
    values: dict[str, object] = {
        "workers": 1,
        "lease_seconds": 30.0,
        "claim_poll_seconds": 0.2,
        "service_retry_seconds": 90.0,
        "default_training_seconds": 300.0,
    }
    values.update(overrides)
    return OrchestratorSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def open_gateway(database_url: str, tmp_path: Path, sandbox: Sandbox) -> AsyncIterator[Gateway]:
    gateway = await Gateway.open(gateway_settings(database_url, tmp_path, sandbox.trainer.address))
    try:
        yield gateway
    finally:
        await gateway.close()


async def harness_for(gateway: Gateway, crawler: object, codegen: object, **settings: object) -> Harness:
    workers = start_workers(gateway, worker_settings(**settings), crawler=crawler, codegen=codegen)  # type: ignore[arg-type]
    user_id = await gateway.registry.user_by_name("e2e", create=True)
    return Harness(gateway, [workers], Principal(user_id, AuthMethod.API_KEY, "test"))


# -- the whole suite as processes: zx up --detach ----------------------------------------------------------

ZX = [sys.executable, "-m", "zehanx_cli.main"]
SUITE_WORK_DIR = f"/var/tmp/zx-e2e-suite-{SUITE_UID_BASE}"
#: The suite's leases are short so that a killed gateway's job is taken over within seconds.
SUITE_LEASE_SECONDS = 5


def zx(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZX, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def suite_env(home: Path, work_dir: str, uid_base: int, **more: str) -> dict[str, str]:
    """The environment ``zx up`` runs a test suite with (the e2e and web suites): this process's without
    its ZX_ settings; ``home`` as ZX_HOME; every part on a free port and each /metrics on any free port
    (suites of other tests may be up at the same time); the local sandbox in ``work_dir`` with uids from
    ``uid_base``; loopback allowed to the crawler; short leases; ``more`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update(
        {
            "ZX_HOME": str(home),
            **{
                f"ZX_{name.upper()}_PORT": str(free_port())
                for name in ("gateway", "crawler", "codegen", "executor", "trainer", "postgres")
            },
            **{
                f"ZX_{name.upper()}_METRICS_PORT": "0"
                for name in ("gateway", "crawler", "codegen", "executor", "trainer")
            },
            "ZX_EXECUTOR_WORK_DIR": work_dir,
            "ZX_EXECUTOR_UID_BASE": str(uid_base),
            "ZX_EXECUTOR_MAX_CONCURRENT": str(EXECUTOR_SLOTS),
            "ZX_CRAWLER_ALLOW_PRIVATE_NETWORKS": "true",
            "ZX_GATEWAY_LEASE_SECONDS": str(SUITE_LEASE_SECONDS),
            "ZX_GATEWAY_CLAIM_POLL_SECONDS": "0.5",
            "COLUMNS": "160",
            **more,
        }
    )
    return env


@contextmanager
def suite_up(env: dict[str, str]) -> Iterator[None]:
    """``zx up --detach`` with ``env`` (it must succeed); ``zx down --purge`` on exit."""
    up = zx(env, "up", "--detach", timeout=240)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        zx(env, "down", "--purge", timeout=120)


class OtlpCollector:
    """A stand-in OpenTelemetry collector: the OTLP/gRPC TraceService (opentelemetry-proto's own
    generated service, as the SDK's OTLPSpanExporter calls it), recording every span it is sent."""

    def __init__(self) -> None:
        import threading

        self.spans: list[dict[str, object]] = []
        self.lock = threading.Lock()

    def Export(self, request: object, context: object) -> object:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        with self.lock:
            for resource_spans in request.resource_spans:  # type: ignore[attr-defined]
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            {
                                "service": service,
                                "trace_id": span.trace_id.hex(),
                                "name": span.name,
                                "events": [e.name for e in span.events],
                                "parent": span.parent_span_id.hex(),
                                "span_id": span.span_id.hex(),
                                "start": span.start_time_unix_nano,
                                "error": span.status.code == span.status.STATUS_CODE_ERROR,
                            }
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[dict[str, object]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]


@pytest.fixture(scope="session")
def otlp_collector() -> Iterator[tuple[OtlpCollector, int]]:
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    collector = OtlpCollector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector, port
    finally:
        server.stop(None)


@pytest.fixture(scope="session")
def suite(
    tmp_path_factory: pytest.TempPathFactory, otlp_collector: tuple[OtlpCollector, int]
) -> Iterator[dict[str, str]]:
    """``zx up --detach`` with a temporary ZX_HOME and free ports; the environment to run zx with."""
    require_local_sandbox(SUITE_WORK_DIR, SUITE_UID_BASE, EXECUTOR_SLOTS)
    home = tmp_path_factory.mktemp("zx-home")
    # Each service its own data folder, none inside another's or ZX_HOME: nothing is shared but
    # PostgreSQL (uploads, datasets and models cross as gRPC streams).
    own = {name: tmp_path_factory.mktemp(f"{name}-data") for name in ("gateway", "crawler", "trainer")}
    env = suite_env(
        home,
        SUITE_WORK_DIR,
        SUITE_UID_BASE,
        # Traces go to the stand-in collector, flushed every 200 ms (the standard OTEL_* variables).
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_collector[1]}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="200",
        ZX_GATEWAY_ARTIFACT_DIR=str(own["gateway"] / "archives"),
        ZX_GATEWAY_UPLOAD_DIR=str(own["gateway"] / "uploads"),
        ZX_CRAWLER_DATA_DIR=str(own["crawler"] / "datasets"),
        ZX_TRAINER_HOME=str(own["trainer"]),
        ZX_TRAINER_ARTIFACT_DIR=str(own["trainer"] / "artifacts"),
    )
    with suite_up(env):
        key = home / "api-key"
        assert key.stat().st_mode & 0o777 == 0o600, "the API key zx up made is private"
        yield env
