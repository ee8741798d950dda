"""Trainer benchmark: the reference digits program bare vs through the trainer and the executor, and
the cost of reporting metrics every step. Ratios are against baselines measured in the same run.

    .venv/bin/python bench/bench_trainer.py [--reps 2]

1. Bare: ``python train.py`` in a plain child process (ZX_DATA, ZX_OUTPUT, zxrt on PYTHONPATH).
   Through the platform: ``TrainerService.Train`` on a real trainer and executor (local sandbox). The
   target compares the full-run stage (TRAINING to EVALUATING) with the bare run: <= 1.10. The whole
   RPC (smoke run, evaluation and publishing included) is printed too.
2. Metrics: the reference CNN's training step timed in one process with and without a
   ``zxrt.log_metrics`` call per step (stdout a pipe the parent drains, as the executor does): the
   default (throttled to 20 lines/s) and ``force=True`` (a line every step). Target: <= 3 % of step time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness import trainer_over_executor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "services"))
sys.path.insert(0, str(REPO / "examples" / "reference_digits"))
ZXRT_DIR = REPO / "services" / "trainer" / "zehanx_trainer" / "zxrt_runtime"
PROGRAM = REPO / "examples" / "reference_digits"
TOKEN = "bench-token"


def bare_run(dataset: Path, work: Path) -> float:
    program = work / f"bare-{uuid.uuid4().hex[:6]}"
    shutil.copytree(PROGRAM, program)
    env = {
        **os.environ,
        "ZX_DATA": str(dataset),
        "ZX_OUTPUT": str(program / "output"),
        "ZX_SMOKE": "0",
        "ZX_DEVICE": "cpu",
        "ZX_SEED": "42",
        "ZX_TIME_BUDGET_S": "600",
        "PYTHONPATH": str(ZXRT_DIR),
    }
    started = time.monotonic()
    subprocess.run([sys.executable, "train.py"], cwd=program, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def platform_run(stub, dataset_ref) -> tuple[float, float, float, float]:
    """(whole RPC s, full-run stage s, executor wall of the full run s, held-out accuracy)."""
    from google.protobuf import duration_pb2
    from zehanx.common.v1 import plan_pb2, program_pb2, resources_pb2, task_family_pb2
    from zehanx.trainer.v1 import trainer_service_pb2 as pb

    files = [
        program_pb2.ProgramFile(path=p.name, content=p.read_bytes())
        for p in sorted(PROGRAM.glob("*.py"))
        if p.name != "make_dataset.py"
    ]
    request = pb.TrainRequest(
        run_id=str(uuid.uuid4()),
        program=program_pb2.Program(
            files=files, train_entry_point="train.py", predict_entry_point="predict.py", runtime_version="1"
        ),
        dataset=dataset_ref,
        plan=plan_pb2.Plan(
            task_family=task_family_pb2.TASK_FAMILY_IMAGE_CLASSIFICATION,
            target_column="digit",
            model_family="cnn",
            metric_name="accuracy",
        ),
        resources=resources_pb2.Resources(
            device=resources_pb2.DEVICE_KIND_CPU, max_training_duration=duration_pb2.Duration(seconds=600)
        ),
    )
    started = time.monotonic()
    events = list(stub.Train(request, metadata=[("x-zx-service-token", TOKEN)], timeout=900))
    total = time.monotonic() - started
    stage_times = {
        e.stage_change.stage: e.event_time.ToDatetime()
        for e in events
        if e.WhichOneof("event") == "stage_change"
    }
    last = events[-1]
    if last.WhichOneof("event") != "result":
        raise SystemExit(f"the run failed: {last}")
    stage = (stage_times[pb.TRAIN_STAGE_EVALUATING] - stage_times[pb.TRAIN_STAGE_TRAINING]).total_seconds()
    usage = last.result.usage.wall_duration
    return total, stage, usage.seconds + usage.nanos / 1e9, last.result.held_out_metrics.values["accuracy"]


STEP_SCRIPT = r"""
import sys, time, json, torch, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
import zxrt
from model import SmallCNN
from sklearn.datasets import load_digits
torch.manual_seed(0)
d = load_digits()
x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
y = torch.tensor(d.target)
model = SmallCNN(10, 8, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
def step(i):
    idx = torch.randint(0, len(x), (64,))
    loss = F.cross_entropy(model(x[idx]), y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    return loss
for i in range(30): step(i)  # warm up
times = {"none": [], "throttled": [], "every_step": []}
block, i = 50, 0
for rep in range(int(sys.argv[2])):
    for mode in times:
        t0 = time.perf_counter()
        for _ in range(block):
            i += 1
            loss = step(i)
            if mode == "throttled":
                zxrt.log_metrics(i, epoch=0, loss=loss.item(), lr=1e-3, samples_per_s=1000.0)
            elif mode == "every_step":
                zxrt.log_metrics(i, epoch=0, loss=loss.item(), lr=1e-3, samples_per_s=1000.0, force=True)
            else:
                loss.item()  # the same sync point the reporting modes pay
        times[mode].append((time.perf_counter() - t0) / block)
print("RESULT " + json.dumps(times), file=sys.stderr)
"""


def metrics_cost(reps: int) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STEP_SCRIPT, str(ZXRT_DIR), str(reps)],
        cwd=PROGRAM,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PROGRAM)},
    )
    lines = sum(1 for _ in proc.stdout)  # drain stdout as the executor does
    stderr = proc.stderr.read().decode()
    if proc.wait() != 0:
        raise SystemExit(stderr)
    times = json.loads(stderr.split("RESULT ", 1)[1])
    return {mode: statistics.median(values) for mode, values in times.items()} | {"lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    import grpc
    from make_dataset import write_digits
    from zehanx.common.v1 import dataset_pb2
    from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc

    work = Path(tempfile.mkdtemp(prefix="zx-bench-trainer-"))
    dataset = work / "datasets" / "digits"
    written = write_digits(dataset)
    files = written["files"]
    ref = dataset_pb2.DatasetRef(
        dataset_id=str(uuid.uuid4()),
        format=dataset_pb2.DATASET_FILE_FORMAT_JSONL,
        schema_json=written["schema_json"],
        train_uri=(dataset / "train.jsonl").as_uri(),
        train_sha256=files["train"]["sha256"],
        validation_uri=(dataset / "validation.jsonl").as_uri(),
        validation_sha256=files["validation"]["sha256"],
        test_uri=(dataset / "test.jsonl").as_uri(),
        test_sha256=files["test"]["sha256"],
    )
    bare, platform = [], []
    with trainer_over_executor(
        work, TOKEN, sandbox_dir="/var/tmp/zx-trainer-bench", uid_base=64100
    ) as address:
        with grpc.insecure_channel(address) as channel:
            stub = rpc.TrainerServiceStub(channel)
            for _ in range(args.reps):  # alternate, so both see the same machine load
                bare.append(bare_run(dataset, work))
                platform.append(platform_run(stub, ref))

    b = statistics.median(bare)
    total = statistics.median(p[0] for p in platform)
    stage = statistics.median(p[1] for p in platform)
    sandbox = statistics.median(p[2] for p in platform)
    print(f"reference digits program, {args.reps} runs each, medians (cpu, {os.cpu_count()} cores)")
    print(f"  bare python train.py                 {b:7.2f} s   1.00")
    print(f"  full-run stage via trainer+executor  {stage:7.2f} s   {stage / b:.2f}  (target <= 1.10)")
    print(f"  executor wall of the full run        {sandbox:7.2f} s   {sandbox / b:.2f}")
    print(f"  whole Train RPC (smoke, eval, publish){total:6.2f} s   {total / b:.2f}")
    print(f"  held-out accuracy                    {', '.join(f'{p[3]:.4f}' for p in platform)}")

    cost = metrics_cost(reps=max(6, 3 * args.reps))
    base = cost["none"]
    print("cost of reporting metrics every step (reference CNN, batch 64, median per-step time)")
    print(f"  no reporting                 {base * 1e3:7.3f} ms   1.000")
    for mode in ("throttled", "every_step"):
        print(
            f"  log_metrics {mode:<16} {cost[mode] * 1e3:7.3f} ms   {cost[mode] / base:.3f}"
            f"  ({(cost[mode] / base - 1) * 100:+.1f} %, target <= 3 %)"
        )
    print(f"  metric lines written: {cost['lines']}")


if __name__ == "__main__":
    main()
