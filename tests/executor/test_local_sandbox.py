"""The local sandbox, run for real: what a program sees, what comes back, and each limit with its reason."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest
from sandbox_helpers import assert_still_serving, run, sandbox_uid_pids, spec
from zehanx_executor.domain import ExitReason, Finished, Output, Started, Stream
from zehanx_executor.sandbox.local import LocalSandbox
from zehanx_executor.sandbox.probe import ISOLATION_PROBE, isolation_problems


async def test_hello_world_runs_as_an_unprivileged_uid_in_its_own_namespaces(box: LocalSandbox) -> None:
    r = await run(box, ISOLATION_PROBE, slot=3)
    assert isinstance(r.events[0], Started)
    assert r.finished.reason is ExitReason.COMPLETED and r.finished.exit_code == 0
    info = json.loads(r.stdout)
    assert isolation_problems(r.stdout) == []
    assert info["uid"] == box.config.uid_base + 3  # each slot has its own uid
    assert info["visible_pids"] == [1, 2]
    assert info["hostname"] == "zx-sandbox"


async def test_environment_is_the_allow_list_plus_the_executors_own(box: LocalSandbox) -> None:
    r = await run(box, "import os, json; print(json.dumps(dict(os.environ)))", env={"ZX_SMOKE": "1"})
    env = json.loads(r.stdout)
    assert env["ZX_SMOKE"] == "1"
    assert env["HOME"] == "/job" and env["ZX_JOB_DIR"] == "/job" and env["ZX_RUNTIME"] == "/zx/runtime"
    assert set(env) <= {
        "PATH", "HOME", "TMPDIR", "LANG", "USER", "LOGNAME", "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE", "ZX_JOB_DIR", "ZX_RUNTIME", "ZX_SMOKE", "PWD",
    }  # fmt: skip


async def test_the_program_sees_only_the_runtime_read_only_and_its_job_folder(box: LocalSandbox) -> None:
    code = """
import os
print(sorted(os.listdir('/')))
print(open('/zx/runtime/zxrt.py').read().strip())
print(sorted(os.listdir('/job')))
"""
    r = await run(box, code, files={"data/train.csv": b"a,b\n1,2\n"})
    lines = r.stdout.splitlines()
    top = eval(lines[0])  # a list literal printed by the program
    assert "home" not in top and "var" not in top and "sys" not in top and "run" not in top
    assert lines[1] == "VERSION = 1"
    assert eval(lines[2]) == ["data", "main.py"]


@pytest.mark.slow
async def test_programs_can_import_torch_numpy_sklearn_and_safetensors(box: LocalSandbox) -> None:
    code = """
import torch, numpy, sklearn, safetensors.torch as st
x = torch.randn(64, 64)
st.save_file({'w': x @ x}, 'model.safetensors')
print(torch.__version__, numpy.__version__, sklearn.__version__)
"""
    r = await run(box, code, wall_time_s=60, memory_bytes=1 << 30, collect=("*.safetensors",))
    assert r.finished.reason is ExitReason.COMPLETED, r.stderr[-2000:]
    assert r.stdout.startswith("2.13.0")
    assert set(r.files) == {"model.safetensors"} and len(r.files["model.safetensors"]) > 64 * 64 * 4


async def test_output_comes_line_buffered_with_metric_lines_parsed_in_order(box: LocalSandbox) -> None:
    code = r"""
import sys
print('one'); print('@@zx:{"v": 1, "kind": "metric", "loss": 0.5}'); print('two')
print('err', file=sys.stderr)
print('partial', end='')
"""
    r = await run(box, code)
    kinds = [(type(e).__name__, getattr(e, "data", None)) for e in r.events[1:-1]]
    stdout_events = [k for k in kinds if k[0] != "Output" or k[1] != b"err\n"]
    assert stdout_events == [
        ("Output", b"one\n"),
        ("Metric", None),
        ("Output", b"two\n"),
        ("Output", b"partial"),
    ]
    assert r.metrics[0].payload == {"v": 1, "kind": "metric", "loss": 0.5}
    assert r.stderr == "err\n"
    assert r.finished.usage.metric_lines == 1


async def test_exit_status_is_reported_and_non_zero_is_failed(box: LocalSandbox) -> None:
    r = await run(box, "import sys; sys.exit(7)")
    assert (r.finished.reason, r.finished.exit_code, r.finished.signal) == (ExitReason.FAILED, 7, 0)
    r = await run(box, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert (r.finished.reason, r.finished.exit_code, r.finished.signal) == (ExitReason.FAILED, -1, 11)


async def test_produced_files_matching_collect_come_back_with_size_and_sha256(box: LocalSandbox) -> None:
    code = """
import os
os.makedirs('out/sub')
open('out/a.txt', 'w').write('alpha')
open('out/sub/b.bin', 'wb').write(bytes(range(256)) * 8192)
open('skip.log', 'w').write('not collected')
open('input.txt', 'w').write('changed')
"""
    r = await run(
        box, code, files={"input.txt": b"original", "same.txt": b"same"}, collect=("out/**", "*.txt")
    )
    assert r.finished.reason is ExitReason.COMPLETED
    assert set(r.files) == {"out/a.txt", "out/sub/b.bin", "input.txt"}  # same.txt unchanged: not produced
    big = bytes(range(256)) * 8192
    assert r.files["out/sub/b.bin"] == big
    chunks = [e for e in r.file_events if e.path == "out/sub/b.bin"]
    assert len(chunks) == 2 and chunks[-1].last_chunk and not chunks[0].last_chunk
    assert all(c.sha256 == hashlib.sha256(big).hexdigest() and c.size == len(big) for c in chunks)
    assert [c.offset for c in chunks] == [0, 1 << 20]


async def test_files_over_the_collect_budget_are_reported_without_content(box: LocalSandbox) -> None:
    job = spec(
        "open('big.bin','wb').write(b'x' * 300000); open('small.bin','wb').write(b'y')", collect=("*.bin",)
    )
    from dataclasses import replace

    job = replace(job, collect_max_bytes=1000)
    events = [e async for e in box.start(job, 0).events()]
    files = {e.path: e for e in events if type(e).__name__ == "FileChunk"}
    assert files["big.bin"].content_included is False and files["big.bin"].data == b""
    assert files["big.bin"].size == 300000
    assert files["small.bin"].content_included is True and files["small.bin"].data == b"y"


async def test_over_memory_is_reported_as_memory(box: LocalSandbox) -> None:
    r = await run(box, "b = [b'x' * (1 << 20) for _ in range(1000)]", memory_bytes=96 << 20)
    assert r.finished.reason is ExitReason.MEMORY, r.finished
    assert r.finished.signal == 9
    assert r.finished.usage.max_rss_bytes <= 96 << 20


async def test_over_wall_time_is_reported_as_timeout(box: LocalSandbox) -> None:
    t0 = time.monotonic()
    r = await run(box, "import time; time.sleep(60)", wall_time_s=1.0)
    assert r.finished.reason is ExitReason.TIMEOUT and "wall-clock" in r.finished.message
    assert time.monotonic() - t0 < 30.0  # killed at its limit, not after its 60 s sleep


async def test_over_cpu_time_is_reported_as_timeout(box: LocalSandbox) -> None:
    r = await run(box, "while True: pass", cpu_time_s=1.0, wall_time_s=20)
    assert r.finished.reason is ExitReason.TIMEOUT and "CPU-time" in r.finished.message
    assert 1.0 <= r.finished.usage.cpu_time_s < 2.5


async def test_over_output_is_reported_as_output_limit(box: LocalSandbox) -> None:
    r = await run(box, "import sys\nwhile True: sys.stdout.write('A' * 65536)", output_bytes=200_000)
    assert r.finished.reason is ExitReason.OUTPUT_LIMIT
    got = sum(len(e.data) for e in r.events if isinstance(e, Output))
    assert got <= 200_000 and r.finished.usage.output_bytes <= 200_000


async def test_full_job_folder_is_reported_as_disk_limit(box: LocalSandbox) -> None:
    code = "[open(f'f{i}', 'wb').write(b'x' * (4 << 20)) for i in range(20)]"
    r = await run(box, code, disk_bytes=8 << 20, file_size_bytes=8 << 20)
    assert r.finished.reason is ExitReason.DISK_LIMIT, r.finished
    assert "No space left" in r.stderr


async def test_file_over_the_size_limit_is_reported_as_disk_limit(box: LocalSandbox) -> None:
    r = await run(
        box, "open('big', 'wb').write(b'x' * (8 << 20))", disk_bytes=32 << 20, file_size_bytes=1 << 20
    )
    assert r.finished.reason is ExitReason.DISK_LIMIT, r.finished
    assert "File too large" in r.stderr


async def test_a_program_that_cannot_start_is_a_failure_with_its_error(box: LocalSandbox) -> None:
    events = [e async for e in box.start(spec("", argv=("no-such-program",)), 0).events()]
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason is ExitReason.FAILED
    err = b"".join(e.data for e in events if isinstance(e, Output) and e.stream is Stream.STDERR)
    assert b"no-such-program" in err


async def test_closing_the_event_stream_kills_the_whole_tree_within_a_second(box: LocalSandbox) -> None:
    code = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        time.sleep(600)
print('ready', flush=True)
time.sleep(600)
"""
    events = box.start(spec(code), 1).events()
    async for event in events:
        if isinstance(event, Output) and b"ready" in event.data:
            break
    assert len(sandbox_uid_pids()) >= 4
    t0 = time.monotonic()
    await events.aclose()  # type: ignore[attr-defined]
    # cgroup.kill takes the tree down in milliseconds (bench/bench_executor.py measures it); the bound
    # here is generous so a loaded, shared machine does not make it flaky.
    while sandbox_uid_pids():
        assert time.monotonic() - t0 < 10.0, "processes survived the cancel"
        await asyncio.sleep(0.005)
    await assert_still_serving(box, slot=1)


async def test_abort_ends_the_stream_with_cancelled(box: LocalSandbox) -> None:
    run_ = box.start(spec("import time; print('go', flush=True); time.sleep(600)"), 2)
    seen = []
    async for event in run_.events():
        seen.append(event)
        if isinstance(event, Output):
            run_.abort()
    fin = seen[-1]
    assert isinstance(fin, Finished) and fin.reason is ExitReason.CANCELLED
    assert sandbox_uid_pids() == []
