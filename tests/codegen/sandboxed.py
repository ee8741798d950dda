"""Running a generated program inside the executor's real local sandbox (bubblewrap as an
unprivileged uid, no network, read-only venv and runtime, a size-capped job folder as HOME, private
/tmp), in-process like tests/executor: train.py with the data, then predict.py with the weights that
came back, the way the trainer stages them. Skips with the probe's reasons when this host cannot
sandbox.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from running import ZXRT
from support.sandbox import require_local_sandbox
from zehanx_codegen.domain import Program
from zehanx_executor.domain import (
    ExitReason,
    FileChunk,
    Finished,
    GiB,
    JobFile,
    JobSpec,
    Limits,
    Metric,
    MiB,
    Output,
    Stream,
)
from zehanx_executor.sandbox.local import LocalSandbox, LocalSandboxConfig

#: Distinct from a development executor (60600), the trainer (66000), e2e (60000, 67000) and the
#: executor tests (100000+), outside systemd's dynamic-user range: sandbox uids 68500..68501, probe 68502.
WORK_DIR = Path("/var/tmp/zx-codegen-tests")
UID_BASE = 68500
SLOTS = 2


@dataclass
class SandboxRun:
    finished: Finished
    stdout: str
    stderr: str
    metrics: list[dict] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)

    def check(self, what: str) -> None:
        assert self.finished.reason is ExitReason.COMPLETED, (
            f"{what} in the sandbox: {self.finished}\n{self.stderr[-3000:]}"
        )


def local_sandbox() -> LocalSandbox:
    caps = require_local_sandbox(WORK_DIR, UID_BASE, SLOTS)
    config = LocalSandboxConfig(
        work_dir=WORK_DIR,
        uid_base=UID_BASE,
        python_roots=tuple(dict.fromkeys([Path(sys.prefix), Path(sys.base_prefix)])),
        path_dirs=(str(Path(sys.prefix) / "bin"),),
    )
    return LocalSandbox(config, caps)


def _limits() -> Limits:
    # What the trainer gives a CPU run, give or take: generous wall time for a shared, slow machine.
    return Limits(wall_time_s=420.0, cpu_time_s=900.0, memory_bytes=3 * GiB, max_processes=64,
                  disk_bytes=256 * MiB, file_size_bytes=256 * MiB)  # fmt: skip


_runs = iter(range(1, 1_000_000))


async def run(
    box: LocalSandbox,
    program: Program,
    argv: tuple[str, ...],
    extra: dict[str, bytes],
    collect: tuple[str, ...],
) -> SandboxRun:
    files = [JobFile(p, t.encode()) for p, t in program.files.items()]
    files += [JobFile("zxrt.py", ZXRT.read_bytes())] + [JobFile(p, d) for p, d in extra.items()]
    env = {"ZX_DATA": "data", "ZX_OUTPUT": "output", "ZX_SMOKE": "0", "ZX_DEVICE": "cpu", "ZX_SEED": "42",
           "OMP_NUM_THREADS": "2"}  # fmt: skip
    spec = JobSpec(f"codegen{next(_runs)}", argv, tuple(files), env, _limits(), collect)
    out: dict[Stream, bytearray] = {Stream.STDOUT: bytearray(), Stream.STDERR: bytearray()}
    metrics: list[dict] = []
    produced: dict[str, bytes] = {}
    finished = None
    events = box.start(spec, 0).events()
    try:
        async for event in events:
            if isinstance(event, Output):
                out[event.stream] += event.data
            elif isinstance(event, Metric):
                metrics.append(event.payload)
            elif isinstance(event, FileChunk):
                assert event.content_included, f"{event.path} came back without its content"
                produced[event.path] = produced.get(event.path, b"") + event.data
            elif isinstance(event, Finished):
                finished = event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert finished is not None
    return SandboxRun(finished, out[Stream.STDOUT].decode(errors="replace"),
                      out[Stream.STDERR].decode(errors="replace"), metrics, produced)  # fmt: skip


def job_files(data: Path, inputs: Path) -> tuple[dict[str, bytes], bytes]:
    """The dataset folder as job files under data/, and the prediction inputs."""
    return {f"data/{p.name}": p.read_bytes() for p in data.iterdir() if p.is_file()}, inputs.read_bytes()


async def train_and_predict(
    box: LocalSandbox, program: Program, data: dict[str, bytes], inputs: bytes
) -> tuple[SandboxRun, SandboxRun, list[dict]]:
    """train.py on ``data`` (train, validation, schema), then predict.py on ``inputs`` in a fresh
    sandbox that sees only the program and the weights the first run produced."""
    trained = await run(box, program, ("python", "train.py"), data, ("output/**",))
    trained.check("train.py")
    predicted = await run(
        box, program, ("python", "predict.py", "data/inputs.jsonl", "predictions.jsonl"),
        {**trained.files, "data/inputs.jsonl": inputs}, ("predictions.jsonl",),
    )  # fmt: skip
    predicted.check("predict.py")
    rows = [json.loads(line) for line in predicted.files["predictions.jsonl"].decode().splitlines()]
    return trained, predicted, rows
