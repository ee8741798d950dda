"""Executor benchmark: what the local sandbox costs a program, and how fast a kill takes its tree down.
Every figure is measured in this run, against a baseline measured in the same run.

    .venv/bin/python bench/bench_executor.py [--reps 40]

1. Start-to-first-output of a hello-world: ``python main.py`` started bare (a plain child process of
   the same interpreter, stdout a pipe) vs the same file through the real LocalSandbox (tmpfs job
   folder, cgroups, setpriv, prlimit, bwrap, seccomp) from ``start`` to the first Output event. The two
   are interleaved. Target: the sandbox adds at most 50 ms at p50.
2. Cancel-to-dead: a program (a busy loop, and a tree of four processes) prints "ready"; then
   ``abort()`` (what the gRPC done-callback calls) and the time until the job's cgroup is empty; and the
   same through gRPC: ``call.cancel()`` on a real in-process server until the cgroup is empty.
   Every run has the executor's default CPU quota, as in production. A last case, four busy processes
   under a 0.1-core quota (throttled for 90 ms of each 100 ms period), is measured twice: as the
   executor kills (quota lifted, then cgroup.kill) and with the lift switched off, which shows why the
   quota must go first: a throttled tree may not run its exit path until its next period.
   Target: p99 <= 100 ms.
3. A warm session's round trip against a cold Execute, both through gRPC on a real in-process server:
   ``Session`` keeps one sandboxed echo loop alive and each call is one line in, one line back (send to
   reply); ``Execute`` of the same trivial program (prints one line) from the call to its result (the
   server's cleanup afterwards not counted), which is what a caller without sessions pays per request. The two are measured in the same run.

Needs root and a host that can sandbox (the probe says what is missing otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "executor"))

from sandbox_helpers import TREE  # noqa: E402  (the tree the hardening tests kill)

WORK_DIR = Path("/var/tmp/zx-executor-bench")
UID_BASE = 68000  # distinct from the tests' ranges and a dev executor (60600); outside 61184-65535
TOKEN = "bench-token"

HELLO = "print('hello')\n"
BUSY = "print('ready', flush=True)\nwhile True: pass\n"
BUSY_TREE = """
import os
for _ in range(3):
    if os.fork() == 0:
        while True: pass
print('ready', flush=True)
while True: pass
"""
THROTTLED_CPUS = 0.1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


async def bare_first_output(folder: Path) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "main.py", cwd=folder, stdout=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    first = await proc.stdout.read(1)
    elapsed = time.perf_counter() - t0
    assert first == b"h", first
    await proc.stdout.read()
    await proc.wait()
    return elapsed


def job(code: str, n: int, cpus: float):  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import JobFile, JobSpec, Limits

    return JobSpec(
        execution_id=f"bench{n}",
        command=("python", "main.py"),
        files=(JobFile("main.py", code.encode()),),
        limits=Limits(wall_time_s=60, cpu_time_s=120, memory_bytes=256 << 20, max_processes=16,
                      disk_bytes=4 << 20, output_bytes=1 << 20, file_size_bytes=1 << 20, cpus=cpus),
    )  # fmt: skip


async def sandbox_first_output(box, n: int, cpus: float) -> float:  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import Finished, Output

    t0 = time.perf_counter()
    elapsed = None
    events = box.start(job(HELLO, n, cpus), 0).events()
    try:
        async for event in events:
            if elapsed is None and isinstance(event, Output):
                elapsed = time.perf_counter() - t0
                assert event.data.startswith(b"h"), event
            if isinstance(event, Finished):
                assert event.reason.value == "completed", event
    finally:
        await events.aclose()
    assert elapsed is not None
    return elapsed


async def abort_to_empty(
    box, code: str, n: int, cpus: float, *, lift: bool = True, settle_s: float = 0.0
) -> float:  # type: ignore[no-untyped-def]
    from zehanx_executor.domain import Finished, Output

    run = box.start(job(code, n, cpus), 1)
    if not lift:  # the kill as it was before the quota existed: cgroup.kill alone
        run.cgroup.lift_cpu_quota = lambda: None
    events = run.events()
    elapsed = None
    try:
        async for event in events:
            if elapsed is None and isinstance(event, Output) and b"ready" in event.data:
                await asyncio.sleep(settle_s)  # a busy tree uses up its quota: throttled from here on
                t0 = time.perf_counter()
                run.abort()  # synchronous: cgroup.kill is written before it returns
                while run.cgroup.populated():
                    pass
                elapsed = time.perf_counter() - t0
            if isinstance(event, Finished):
                assert event.reason.value == "cancelled", event
    finally:
        await events.aclose()
    assert elapsed is not None
    return elapsed


async def grpc_cancel_to_empty(stub, box, code: str) -> float:  # type: ignore[no-untyped-def]
    from zehanx.executor.v1 import executor_service_pb2 as pb

    request = pb.ExecuteRequest(files=[pb.ExecutionFile(path="main.py", content=code.encode())],
                                argv=["python", "main.py"], limits=pb.Limits(max_memory_bytes=256 << 20))  # fmt: skip
    call = stub.Execute(request, metadata=(("x-zx-service-token", TOKEN),), timeout=120)
    async for msg in call:
        if msg.WhichOneof("event") == "output" and b"ready" in msg.output.data:
            break
    jobs = [d for d in (box.layout.unified_base or box.layout.pids_base).joinpath(
        "zehanx", box.instance).iterdir() if d.is_dir()]  # fmt: skip
    assert len(jobs) == 1, jobs
    cg = box.layout.job(box.instance, jobs[0].name)
    t0 = time.perf_counter()
    call.cancel()
    while cg.populated():  # noqa: ASYNC110 - polling the kernel's cgroup state is the measurement
        await asyncio.sleep(0)  # the server's done-callback runs on this loop
    elapsed = time.perf_counter() - t0
    while cg.memory.exists():  # noqa: ASYNC110 - let the server finish its cleanup before the next run
        await asyncio.sleep(0.005)
    return elapsed


ECHO = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"
PONG = "print('pong')\n"


async def session_round_trips(stub, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    """One warm session (an echo loop); ``count`` calls one after the other, send to reply."""
    from zehanx.executor.v1 import executor_service_pb2 as pb

    queue: asyncio.Queue[pb.SessionRequest | None] = asyncio.Queue()
    start = pb.SessionStart(files=[pb.ExecutionFile(path="main.py", content=ECHO.encode())],
                            argv=["python", "main.py"], limits=pb.Limits(max_memory_bytes=256 << 20))  # fmt: skip

    async def requests():  # type: ignore[no-untyped-def]
        yield pb.SessionRequest(start=start)
        while (item := await queue.get()) is not None:
            yield item

    call = stub.Session(requests(), metadata=(("x-zx-service-token", TOKEN),), timeout=600)
    assert (await call.read()).WhichOneof("event") == "ready"
    times = []
    for n in range(count):
        t0 = time.perf_counter()
        queue.put_nowait(pb.SessionRequest(call=pb.SessionCall(call_id=n, payload=b"ping %d" % n)))
        while (msg := await call.read()).WhichOneof("event") != "reply":
            assert msg.WhichOneof("event") == "output", msg
        times.append(time.perf_counter() - t0)
        assert msg.reply.call_id == n and msg.reply.payload == b"ping %d" % n, msg
    queue.put_nowait(None)
    while (msg := await call.read()).WhichOneof("event") != "ended":
        pass
    assert msg.ended.reason == pb.EXIT_REASON_COMPLETED, msg.ended
    return times


async def execute_round_trip(stub) -> float:  # type: ignore[no-untyped-def]
    from zehanx.executor.v1 import executor_service_pb2 as pb

    request = pb.ExecuteRequest(files=[pb.ExecutionFile(path="main.py", content=PONG.encode())],
                                argv=["python", "main.py"], limits=pb.Limits(max_memory_bytes=256 << 20))  # fmt: skip
    t0 = time.perf_counter()
    out = b""
    elapsed = 0.0
    async for msg in stub.Execute(request, metadata=(("x-zx-service-token", TOKEN),), timeout=120):
        if msg.WhichOneof("event") == "output":
            out += msg.output.data
        elif msg.WhichOneof("event") == "result":
            elapsed = time.perf_counter() - t0  # the answer is complete; the server's cleanup follows
            assert msg.result.reason == pb.EXIT_REASON_COMPLETED, msg.result
    assert out == b"pong\n" and elapsed, out
    return elapsed


async def main(reps: int) -> None:
    from zehanx.executor.v1 import executor_service_pb2_grpc as rpc
    from zehanx_executor.app import build_executor, local_config
    from zehanx_executor.sandbox.local import LocalSandbox
    from zehanx_executor.sandbox.probe import probe
    from zehanx_executor.servicer import SERVICE_NAME, ExecutorServicer
    from zehanx_executor.settings import ExecutorSettings
    from zehanx_runtime.logging import configure_logging
    from zehanx_runtime.server import ServiceBinding, start_server

    configure_logging("warning", False, service="executor-bench")

    settings = ExecutorSettings(port=0, service_token=TOKEN, backend="local", work_dir=WORK_DIR,
                                uid_base=UID_BASE, max_concurrent=2, log_level="warning")  # fmt: skip
    caps = probe(work_dir=WORK_DIR, probe_uid=UID_BASE + 2)
    if not caps.ok:
        raise SystemExit("this host cannot run the local sandbox:\n  - " + "\n  - ".join(caps.missing))
    box = LocalSandbox(local_config(settings), caps)
    cpus = settings.resolved_default_cpus()
    print(f"executor bench: {os.cpu_count()} CPUs, cgroup v{caps.cgroups.version}, reps {reps}, "  # type: ignore[union-attr]
          f"CPU quota {cpus:g} cores (cpu controller: {caps.cgroups.has_cpu})")  # type: ignore[union-attr]  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "main.py").write_text(HELLO)
        for i in range(3):  # warm the page cache and the interpreter's imports
            await bare_first_output(folder)
            await sandbox_first_output(box, i, cpus)
        bare, boxed = [], []
        for i in range(reps):
            bare.append(await bare_first_output(folder))
            boxed.append(await sandbox_first_output(box, 100 + i, cpus))

    busy = [await abort_to_empty(box, BUSY, 1000 + i, cpus) for i in range(reps)]
    tree = [await abort_to_empty(box, TREE, 2000 + i, cpus) for i in range(reps)]
    throttled, unlifted = [], []
    for i in range(reps):  # interleaved, so both see the same host load
        throttled.append(await abort_to_empty(box, BUSY_TREE, 3000 + i, THROTTLED_CPUS, settle_s=0.3))
        unlifted.append(
            await abort_to_empty(box, BUSY_TREE, 4000 + i, THROTTLED_CPUS, lift=False, settle_s=0.3)
        )
    await box.close()

    executor = await build_executor(settings)
    running = await start_server(
        settings,
        [ServiceBinding(rpc.add_ExecutorServiceServicer_to_server, ExecutorServicer(executor), SERVICE_NAME)],
        service_name="executor",
    )
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = rpc.ExecutorServiceStub(channel)
        via_grpc = [await grpc_cancel_to_empty(stub, executor.backend, TREE) for _ in range(reps)]
        await session_round_trips(stub, 20)  # warm-up
        warm = await session_round_trips(stub, reps * 5)
        cold = [await execute_round_trip(stub) for _ in range(reps)]
    await running.stop(1.0)
    await executor.close()

    print("\n1. hello world, start to first output")
    print(f"   {'':28s} {'p50':>10s} {'p90':>10s} {'p99':>10s}")
    for name, values in (("bare python", bare), ("local sandbox", boxed)):
        print(f"   {name:28s} {ms(pct(values, 50))} {ms(pct(values, 90))} {ms(pct(values, 99))}")
    diff = statistics.median(boxed) - statistics.median(bare)
    ratio = statistics.median(boxed) / statistics.median(bare)
    verdict = "meets" if diff <= 0.050 else "MISSES"
    print(f"   sandbox - bare at p50: {diff * 1000:.1f} ms (ratio {ratio:.2f}); target <= 50 ms: {verdict}")

    print("\n2. cancel to dead (job cgroup empty)")
    print(f"   {'':28s} {'p50':>10s} {'p99':>10s} {'max':>10s}")
    for name, values in (
        ("abort(), busy loop", busy),
        ("abort(), 4-process tree", tree),
        ("gRPC cancel, 4-process tree", via_grpc),
        (f"abort(), 4 busy, {THROTTLED_CPUS:g}-core", throttled),
        ("  same, quota not lifted", unlifted),
    ):
        ok = "meets" if pct(values, 99) <= 0.100 else "MISSES"
        print(
            f"   {name:28s} {ms(pct(values, 50))} {ms(pct(values, 99))} {ms(max(values))}  target p99 <= 100 ms: {ok}"
        )
    print(
        f"   throttled tree, not lifted / lifted: p50 x{pct(unlifted, 50) / pct(throttled, 50):.1f}, "
        f"p99 x{pct(unlifted, 99) / pct(throttled, 99):.1f}"
    )

    print("\n3. one request through gRPC: warm session call vs cold Execute of the same trivial program")
    print(f"   {'':28s} {'p50':>10s} {'p90':>10s} {'p99':>10s}")
    for name, values in (("Session call (warm)", warm), ("Execute (cold)", cold)):
        print(f"   {name:28s} {ms(pct(values, 50))} {ms(pct(values, 90))} {ms(pct(values, 99))}")
    print(f"   cold / warm at p50: x{statistics.median(cold) / statistics.median(warm):.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    asyncio.run(main(args.reps))
