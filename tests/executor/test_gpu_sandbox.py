"""The GPU path of the local sandbox: with a GPU asked for and present, the program sees only the NVIDIA
device nodes added to its sandbox, no address-space limit is set (RLIMIT_AS breaks CUDA, see
reliability_anchors.md §0.5), and a CUDA matmul runs. Skipped, with the reason, on a host without GPU.
"""

from __future__ import annotations

import pytest
from sandbox_helpers import run
from zehanx_executor.domain import ExitReason
from zehanx_executor.sandbox.local import LocalSandbox
from zehanx_executor.sandbox.probe import gpu_device_nodes

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not any(
            d.startswith("/dev/nvidia") and d[len("/dev/nvidia") :].isdigit() for d in gpu_device_nodes()
        ),
        reason="no NVIDIA GPU on this host (/dev/nvidia[0-9] absent): the sandbox's GPU path cannot run here",
    ),
]

CUDA_MATMUL = """
import os, resource, torch
print('devices', sorted(d for d in os.listdir('/dev') if d.startswith('nvidia')))
print('as_limit', resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY)
assert torch.cuda.is_available(), 'CUDA is not available in the sandbox'
a = torch.randn(2048, 2048, device='cuda')
b = torch.randn(2048, 2048, device='cuda')
c = (a @ b).float()
torch.cuda.synchronize()
ref = (a.cpu().double() @ b.cpu().double()).float()
print('max_err', float((c.cpu() - ref).abs().max()))
print('gpu', torch.cuda.get_device_name(0))
"""


async def test_a_sandboxed_program_sees_the_gpu_and_runs_a_cuda_matmul(box: LocalSandbox) -> None:
    r = await run(
        box, CUDA_MATMUL, gpu=True, wall_time_s=300, memory_bytes=8 << 30, max_processes=256,
        disk_bytes=64 << 20,
    )  # fmt: skip
    assert r.finished.reason is ExitReason.COMPLETED, r.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["as_limit"] == "True"
    assert float(lines["max_err"]) < 1e-1
    assert "nvidiactl" in lines["devices"]


async def test_without_the_gpu_flag_no_device_node_is_visible(box: LocalSandbox) -> None:
    r = await run(box, "import os; print([d for d in os.listdir('/dev') if d.startswith('nvidia')])")
    assert r.finished.reason is ExitReason.COMPLETED and r.stdout.strip() == "[]"
