"""GPU runs: what the trainer asks of the executor (always tested, with an in-memory executor that
records the request), and a real run on an NVIDIA GPU (skipped where there is none)."""

from __future__ import annotations

import glob
from collections.abc import AsyncIterator

import pytest
from trainer_support import DIGITS_PROGRAM, Dataset, Run, Suite, program_of, request_for
from zehanx.common.v1 import resources_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx_runtime.errors import FailedPrecondition
from zehanx_trainer.artifacts import ArtifactStore, LocalBlobBackend
from zehanx_trainer.convert import to_spec
from zehanx_trainer.domain import ProgramFailed, TrainerConfig
from zehanx_trainer.executor_port import ExecEvent, ExecRequest, ExecResult, ExecUsage, ExitReason
from zehanx_trainer.training import Trainer

HAS_GPU = bool(glob.glob("/dev/nvidia[0-9]*"))


class RecordingExecutor:
    """Records each request and answers that the program exited 1 (the run then stops)."""

    def __init__(self) -> None:
        self.requests: list[ExecRequest] = []

    async def execute(self, request: ExecRequest, *, timeout_s: float) -> AsyncIterator[ExecEvent]:
        self.requests.append(request)
        yield ExecResult(ExitReason.FAILED, 1, 0, "exited 1", ExecUsage())


async def _first_request(
    tmp_path, digits: Dataset, gpus: int, device: int, gpu_count: int = 0
) -> ExecRequest:
    executor = RecordingExecutor()
    trainer = Trainer(
        executor,
        ArtifactStore(LocalBlobBackend(tmp_path)),
        TrainerConfig(dataset_roots=(digits.root.parent,), gpus=gpus),
    )
    request = request_for(program_of(DIGITS_PROGRAM), digits)
    request.resources.device = device
    request.resources.gpu_count = gpu_count
    events = [item.event async for item in trainer.train(to_spec(request))]
    assert isinstance(events[-1], ProgramFailed)
    return executor.requests[0]


async def test_several_gpus_launch_the_program_under_torchrun(tmp_path, digits: Dataset) -> None:
    request = await _first_request(
        tmp_path, digits, gpus=4, device=resources_pb2.DEVICE_KIND_GPU, gpu_count=2
    )
    assert request.argv == (
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "train.py",
    )
    assert request.env["ZX_DEVICE"] == "cuda" and request.env["ZX_SMOKE"] == "1"
    assert request.limits.gpu


async def test_one_gpu_runs_plain_python_on_cuda_and_no_gpu_means_cpu(tmp_path, digits: Dataset) -> None:
    one = await _first_request(tmp_path, digits, gpus=1, device=resources_pb2.DEVICE_KIND_UNSPECIFIED)
    assert one.argv == ("python", "train.py") and one.env["ZX_DEVICE"] == "cuda" and one.limits.gpu
    cpu = await _first_request(tmp_path, digits, gpus=0, device=resources_pb2.DEVICE_KIND_UNSPECIFIED)
    assert cpu.env["ZX_DEVICE"] == "cpu" and not cpu.limits.gpu
    with pytest.raises(FailedPrecondition, match="GPU"):
        await _first_request(tmp_path, digits, gpus=0, device=resources_pb2.DEVICE_KIND_GPU)


@pytest.mark.gpu
@pytest.mark.skipif(
    not HAS_GPU, reason="no NVIDIA GPU on this host (/dev/nvidia0 missing); run on a GPU machine"
)
def test_reference_program_trains_on_the_gpu(suite: Suite, digits: Dataset) -> None:  # pragma: no cover
    request = request_for(program_of(DIGITS_PROGRAM), digits)
    request.resources.device = resources_pb2.DEVICE_KIND_GPU
    run = Run(request, suite.train(request))
    assert "on cuda" in next(s.message for s in run.of("stage_change") if s.stage == pb.TRAIN_STAGE_TRAINING)
    assert run.result.held_out_metrics.values["accuracy"] >= 0.97
