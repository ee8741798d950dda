"""Fixtures for the trainer tests: a real executor (local sandbox) and a real trainer, as processes.

Everything runs for real: the executor's bubblewrap sandbox, the trainer's gRPC API, the programs'
training. When the host cannot sandbox, the tests that need it skip with the probe's reasons.
"""

from __future__ import annotations

import glob
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from zehanx.common.v1 import dataset_pb2, plan_pb2, program_pb2, resources_pb2, task_family_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "services"))
sys.path.insert(0, str(REPO / "examples" / "reference_digits"))

from support.datasets import TINY_SCHEMA, tiny_rows, write_dataset  # noqa: E402
from support.sandbox import local_executor  # noqa: E402
from svc_harness import ServiceProcess, start_service  # noqa: E402
from zehanx_runtime.server import ServiceBinding, start_server  # noqa: E402
from zehanx_trainer.app import TrainerApp, build  # noqa: E402
from zehanx_trainer.servicer import SERVICE_NAME  # noqa: E402
from zehanx_trainer.settings import TrainerSettings  # noqa: E402

PROGRAMS = Path(__file__).resolve().parent / "programs"
DIGITS_PROGRAM = REPO / "examples" / "reference_digits"
#: Distinct from a development executor (60600) and the executor tests (100000+); outside systemd's
#: dynamic-user range (61184-65535), which the executor refuses.
EXECUTOR_WORK_DIR = "/var/tmp/zx-trainer-tests"
EXECUTOR_UID_BASE = 66000
EXECUTOR_SLOTS = 4
TOKEN = "trainer-test-token"


@dataclass
class Dataset:
    root: Path
    ref: dataset_pb2.DatasetRef
    rows: dict[str, list[dict]]
    schema: dict


@dataclass
class Suite:
    executor: ServiceProcess
    trainer: ServiceProcess
    artifact_dir: Path
    dataset_root: Path
    channel: grpc.Channel

    @property
    def stub(self) -> rpc.TrainerServiceStub:
        return rpc.TrainerServiceStub(self.channel)

    def train(self, request: pb.TrainRequest, timeout: float = 240.0) -> list[pb.TrainResponse]:
        return list(self.stub.Train(request, metadata=[("x-zx-service-token", TOKEN)], timeout=timeout))


def _write_dataset(root: Path, rows: dict[str, list[dict]], schema: dict) -> Dataset:
    ref = write_dataset(root, rows, schema)
    return Dataset(root, ref, rows, schema)


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def digits(dataset_root: Path) -> Dataset:
    """scikit-learn's 8x8 digits, split 70/15/15 by the reference program's make_dataset.py."""
    from make_dataset import write_digits

    written = write_digits(dataset_root / "digits")
    root = written["dir"]
    rows = {
        split: [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines() if line]
        for split in ("train", "validation", "test")
    }
    return _write_dataset(root, rows, json.loads(written["schema_json"]))


@pytest.fixture(scope="session")
def tiny(dataset_root: Path) -> Dataset:
    """A tiny two-class tabular dataset: label = x > 0 (the cheap programs use it)."""

    return _write_dataset(dataset_root / "tiny", tiny_rows(), dict(TINY_SCHEMA))


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory, dataset_root: Path) -> Iterator[Suite]:
    tmp = tmp_path_factory.mktemp("suite")
    with local_executor(tmp, TOKEN, EXECUTOR_WORK_DIR, EXECUTOR_UID_BASE, EXECUTOR_SLOTS) as executor:
        artifact_dir = tmp / "artifacts"
        trainer = start_service(
            "trainer",
            tmp,
            token=TOKEN,
            extra_env={
                "ZX_TRAINER_EXECUTOR_ADDRESS": executor.address,
                "ZX_TRAINER_DATASET_ROOTS": json.dumps([str(dataset_root)]),
                "ZX_TRAINER_ARTIFACT_DIR": str(artifact_dir),
                # The host's GPUs (none here: runs get the CPU; on a GPU machine the GPU test uses them).
                "ZX_TRAINER_GPUS": str(len(glob.glob("/dev/nvidia[0-9]*"))),
                "ZX_TRAINER_MAX_CONCURRENT_RUNS": "4",
                "ZX_TRAINER_MEMORY_BYTES": str(2 * 1024**3),
                "ZX_TRAINER_DISK_BYTES": str(256 * 1024**2),
                "ZX_TRAINER_TRAINING_GRACE_S": "30",
            },
        )
        try:
            trainer.wait_serving(60)
            with grpc.insecure_channel(
                trainer.address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            ) as channel:
                yield Suite(executor, trainer, artifact_dir, dataset_root, channel)
        finally:
            trainer.stop()


def program_of(folder: Path, *, exclude: tuple[str, ...] = ("make_dataset.py",)) -> program_pb2.Program:
    files = [
        program_pb2.ProgramFile(path=p.name, content=p.read_bytes())
        for p in sorted(folder.glob("*.py"))
        if p.name not in exclude
    ]
    return program_pb2.Program(
        files=files, train_entry_point="train.py", predict_entry_point="predict.py", runtime_version="1"
    )


def cheap_program(name: str) -> program_pb2.Program:
    """A program from tests/trainer/programs/<name>/ (numpy only: starts in a fraction of a second)."""
    return program_of(PROGRAMS / name, exclude=())


def request_for(
    program: program_pb2.Program,
    dataset: Dataset,
    *,
    family: int = task_family_pb2.TASK_FAMILY_IMAGE_CLASSIFICATION,
    target: str = "digit",
    training_s: float = 300,
    smoke_only: bool = False,
    hyperparameters: dict | None = None,
) -> pb.TrainRequest:
    hp = {}
    for key, value in (hyperparameters or {}).items():
        v = struct_pb2.Value()
        v.number_value = value
        hp[key] = v
    return pb.TrainRequest(
        run_id=str(uuid.uuid4()),
        job_id=str(uuid.uuid4()),
        program=program,
        dataset=dataset.ref,
        plan=plan_pb2.Plan(
            task_family=family,
            target_column=target,
            metric_name="accuracy",
            model_family="cnn",
            hyperparameters=hp,
            rationale="test",
        ),
        resources=resources_pb2.Resources(
            device=resources_pb2.DEVICE_KIND_CPU,
            max_training_duration=duration_pb2.Duration(seconds=int(training_s)),
        ),
        smoke_only=smoke_only,
        model_metadata=pb.ModelMetadata(title="test model", prompt="test prompt", dataset_name="test data"),
    )


@dataclass
class Run:
    request: pb.TrainRequest
    events: list[pb.TrainResponse]

    def of(self, kind: str) -> list:
        return [getattr(e, kind) for e in self.events if e.WhichOneof("event") == kind]

    @property
    def last(self) -> pb.TrainResponse:
        return self.events[-1]

    @property
    def result(self) -> pb.TrainResult:
        assert self.last.WhichOneof("event") == "result", self.last
        return self.last.result

    def stages(self) -> list[int]:
        return [s.stage for s in self.of("stage_change")]

    def logs(self, source: int | None = None) -> list[str]:
        return [line.text for line in self.of("log_line") if source is None or line.source == source]


@pytest.fixture(scope="session")
def digits_run(suite: Suite, digits: Dataset) -> Run:
    """The reference CNN trained once through the gRPC API (shared by the tests that read it)."""
    request = request_for(program_of(DIGITS_PROGRAM), digits)
    return Run(request, suite.train(request))


def manifests(artifact_dir: Path) -> set[str]:
    folder = artifact_dir / "manifests"
    return {p.name for p in folder.glob("*.json")} if folder.is_dir() else set()


@asynccontextmanager
async def serve_trainer_app(
    settings: TrainerSettings,
) -> AsyncIterator[tuple[TrainerApp, rpc.TrainerServiceStub]]:
    """The trainer built in-process exactly as ``zx-trainer`` builds it (``build``), served on port 0 by the
    shared runtime; yields the app (so a test can look at its predictor) and a stub on it."""
    app = build(settings)
    server = await start_server(
        settings,
        [ServiceBinding(rpc.add_TrainerServiceServicer_to_server, app.servicer, SERVICE_NAME)],
        service_name="trainer",
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield app, rpc.TrainerServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)
        await app.close()
