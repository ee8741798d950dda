"""The Ray backend against the local backend, in the same run, on this host.

    .venv/bin/python bench/bench_ray_backend.py [--reps 10]

Starts a one-node Ray cluster with ``deploy/ray/start-node.sh head`` (token authentication, every port
explicit from base 6780, worker ports 22000-22099, --memory, no dashboard), joins it as the executor
does (RaySandbox), and measures for each backend, interleaved:

1. hello-world: submit to the first Output event, and to Finished (Ray: the first run includes the Ray
   worker's start and the node's sandbox probe + self-test; reported apart as "cold");
2. placement: Ray submit to the task's Placed marker (warm);
3. interactive line latency: a program prints 40 lines 20 ms apart with its clock; receive time minus
   print time (same host, same clock), p50 and p99;
4. throughput: a program prints 200,000 short lines as fast as it can; lines per second received;
5. the reference digits program (examples/reference_digits, 30 epochs on scikit-learn's 8x8 digits, the
   files, environment and collect pattern the trainer gives it, 1 core, 2 GiB): wall from submit to
   Finished through each backend, ``--digits-reps`` times each, interleaved (target: Ray <= 1.10x local).

The cluster is stopped by the pid of the process group the script started (never ``ray stop``).
Needs root and a host that can sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT_BASE = 6780
WORK_DIR = Path("/var/tmp/zx-bench-ray")
UID_BASE = 140_000
JOB = dict(
    wall_time_s=120.0,
    cpu_time_s=240.0,
    memory_bytes=256 << 20,
    max_processes=32,
    disk_bytes=16 << 20,
    cpus=1.0,
)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spec(code: str, n: int, **limits: object):  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import JobFile, JobSpec, Limits

    return JobSpec(
        execution_id=f"bench{n}",
        command=("python", "main.py"),
        files=(JobFile("main.py", code.encode()),),
        limits=Limits(**{**JOB, **limits}),  # type: ignore[arg-type]
    )


async def hello(box, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import Finished, Output

    t0 = time.perf_counter()
    first = end = 0.0
    events = box.start(spec("print('hello')", n), 0).events()
    async for event in events:
        if isinstance(event, Output) and not first:
            first = time.perf_counter() - t0
        if isinstance(event, Finished):
            assert event.reason.value == "completed", event
            end = time.perf_counter() - t0
    await events.aclose()
    return first, end


async def latency(box, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import Output

    code = "import time\nfor i in range(40):\n    print(time.time(), flush=True)\n    time.sleep(0.02)\n"
    lags: list[float] = []
    events = box.start(spec(code, n), 0).events()
    async for event in events:
        if isinstance(event, Output):
            now = time.time()
            lags += [now - float(x) for x in event.data.decode().split()]
    await events.aclose()
    return lags


async def throughput(box, n: int, lines: int = 200_000) -> float:  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import Output

    code = f"import sys\nw = sys.stdout.write\nfor i in range({lines}):\n    w('line %d\\n' % i)\n"
    got = 0
    t0 = time.perf_counter()
    events = box.start(spec(code, n, output_bytes=64 << 20), 0).events()
    async for event in events:
        if isinstance(event, Output):
            got += event.data.count(b"\n")
    await events.aclose()
    assert got == lines, got
    return lines / (time.perf_counter() - t0)


def start_head(token_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ZX_RAY_TOKEN_FILE": str(token_file),
        "ZX_RAY_MEMORY_BYTES": str(4 << 30),
        "ZX_RAY_CPUS": "2",
        "ZX_RAY_PORT_BASE": str(PORT_BASE),
        "ZX_RAY_WORKER_PORTS": "22000-22099",
        "ZX_RAY_OBJECT_STORE_BYTES": str(200_000_000),
        "ZX_RAY_BLOCK": "1",
        "RAY": str(ROOT / ".venv" / "bin" / "ray"),
    }
    return subprocess.Popen(
        [str(ROOT / "deploy" / "ray" / "start-node.sh"), "head"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def digits_spec(n: int, folder: Path):  # type: ignore[no-untyped-def]
    """The reference digits program as the trainer stages it: program files, zxrt, two data splits."""
    from zehanx_executor.domain import JobFile, JobSpec, Limits
    from zehanx_trainer.runtime_helper import zxrt_source

    program = ROOT / "examples" / "reference_digits"
    files = [
        JobFile(p.name, p.read_bytes()) for p in sorted(program.glob("*.py")) if p.name != "make_dataset.py"
    ]
    files.append(JobFile("zxrt.py", zxrt_source()))
    files += [
        JobFile(f"data/{name}", (folder / name).read_bytes())
        for name in ("train.jsonl", "validation.jsonl", "schema.json")
    ]
    return JobSpec(
        execution_id=f"digits{n}",
        command=("python", "train.py"),
        files=tuple(files),
        env={"ZX_DATA": "data", "ZX_OUTPUT": "output", "ZX_SMOKE": "0", "ZX_DEVICE": "cpu", "ZX_SEED": "42"},
        limits=Limits(
            **{
                **JOB,
                "memory_bytes": 2 << 30,
                "disk_bytes": 256 << 20,
                "wall_time_s": 900.0,
                "cpu_time_s": 1800.0,
            }
        ),  # type: ignore[arg-type]
        collect=("output/*",),
    )


async def digits(box, n: int, folder: Path) -> float:  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import FileChunk, Finished

    t0 = time.perf_counter()
    files: set[str] = set()
    events = box.start(digits_spec(n, folder), 0).events()
    async for event in events:
        if isinstance(event, FileChunk):
            files.add(event.path)
        if isinstance(event, Finished):
            assert event.reason.value == "completed", event
    await events.aclose()
    assert any(f.endswith(".safetensors") for f in files), files
    return time.perf_counter() - t0


async def main(reps: int, digits_reps: int) -> None:
    from zehanx_executor.app import local_config, self_test
    from zehanx_executor.sandbox.local import LocalSandbox
    from zehanx_executor.sandbox.probe import probe
    from zehanx_executor.sandbox.raycluster import RayConfig, RaySandbox
    from zehanx_executor.sandbox.raynode import NodeConfig
    from zehanx_executor.settings import ExecutorSettings

    caps = probe(work_dir=WORK_DIR, probe_uid=UID_BASE + 8)
    if not caps.ok:
        sys.exit("this host cannot sandbox: " + "; ".join(caps.missing))
    local = LocalSandbox(local_config(ExecutorSettings(work_dir=WORK_DIR, uid_base=UID_BASE)), caps)
    await self_test(local)
    scratch = Path(tempfile.mkdtemp(prefix="zx-bench-ray-"))
    token_file = scratch / "token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    t0 = time.perf_counter()
    head = start_head(token_file, scratch / "head.log")
    try:
        config = RayConfig(
            address=f"127.0.0.1:{PORT_BASE}", auth_token=token_file.read_text(), first_event_timeout_s=120
        )
        node = NodeConfig(work_dir=WORK_DIR, uid_base=UID_BASE + 16, probe_slot=8)
        deadline = time.monotonic() + 90
        while True:
            try:
                ray_box = RaySandbox(config, node)
                break
            except Exception:
                if time.monotonic() > deadline or head.poll() is not None:
                    print((scratch / "head.log").read_text()[-3000:])
                    raise
                await asyncio.sleep(1)
        print(f"Ray head via deploy/ray/start-node.sh up and joined in {time.perf_counter() - t0:.1f} s")
        cold = await hello(ray_box, 0)
        print(
            f"ray cold hello-world (worker start + probe + self-test): first output {ms(cold[0])}, done {ms(cold[1])}"
        )
        rows: dict[str, dict[str, list[float]]] = {"local": {}, "ray": {}}
        for i in range(reps):
            for name, box in (("local", local), ("ray", ray_box)):
                first, end = await hello(box, i + 1)
                rows[name].setdefault("first", []).append(first)
                rows[name].setdefault("end", []).append(end)
        placements = []
        for i in range(reps):
            run = ray_box.start(spec("pass", 100 + i), 0)
            events = run.events()
            t = time.perf_counter()
            async for _ in events:
                if run.placed is not None and len(placements) == i:
                    placements.append(time.perf_counter() - t)
            await events.aclose()
        print(f"\nhello-world, {reps} warm runs each, interleaved (p50 / p90):")
        for name in ("local", "ray"):
            r = rows[name]
            print(
                f"  {name:5s} submit->first output {ms(pct(r['first'], 0.5))} / {ms(pct(r['first'], 0.9))}; "
                f"submit->finished {ms(pct(r['end'], 0.5))} / {ms(pct(r['end'], 0.9))}"
            )
        ratio = statistics.median(rows["ray"]["end"]) / statistics.median(rows["local"]["end"])
        print(f"  ray/local wall (p50): {ratio:.2f}x")
        print(
            f"ray placement (submit -> Placed marker, warm): p50 {ms(pct(placements, 0.5))}, p90 {ms(pct(placements, 0.9))}"
        )
        for name, box in (("local", local), ("ray", ray_box)):
            lags = await latency(box, 300)
            print(
                f"{name:5s} line latency, 40 lines / 20 ms: p50 {ms(pct(lags, 0.5))}, p99 {ms(pct(lags, 0.99))}"
            )
        for name, box in (("local", local), ("ray", ray_box)):
            rate = await throughput(box, 400)
            print(f"{name:5s} throughput, 200,000 lines: {rate:,.0f} lines/s")
        if digits_reps:
            sys.path.insert(0, str(ROOT / "examples" / "reference_digits"))
            from make_dataset import write_digits

            write_digits(scratch / "digits")
            walls: dict[str, list[float]] = {"local": [], "ray": []}
            for i in range(digits_reps):
                for name, box in (("local", local), ("ray", ray_box)):
                    walls[name].append(await digits(box, 500 + i, scratch / "digits"))
            lw, rw = statistics.median(walls["local"]), statistics.median(walls["ray"])
            print(
                f"reference digits program, {digits_reps} run(s) each: local {lw:.1f} s, ray {rw:.1f} s "
                f"({rw / lw:.2f}x; target <= 1.10x)"
            )
    finally:
        import ray

        ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        await local.close()
        # The Ray workers' sandboxes died with the head: a new sandbox removes what they left.
        await LocalSandbox(
            local_config(ExecutorSettings(work_dir=WORK_DIR, uid_base=UID_BASE + 16)), caps
        ).close()
        print(f"Ray head stopped (ray start --block exited {head.returncode})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--digits-reps", type=int, default=1, help="0 skips the digits program")
    args = parser.parse_args()
    asyncio.run(main(args.reps, args.digits_reps))
