"""ExecutorService.Execute through a real gRPC server (port 0) over the real local sandbox.

The server is built exactly as ``python -m zehanx_executor`` builds it (``build_executor``: probe, self-test,
slots, limit and env policies) and served by the shared runtime (interceptor, protovalidate, token). The
client is the generated stub. What is checked: the stream (started, line-buffered output, metric
records, produced files with sha256, one final result with reason and usage, gap-free sequence), bad
requests (INVALID_ARGUMENT with field violations, never UNKNOWN), cancellation and deadlines (the whole
process tree is gone), each limit with its reason, and the slots (eight at once, the ninth waits, the
one beyond the queue gets RESOURCE_EXHAUSTED, nothing hangs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, json_format
from rpc_helpers import local_settings, serve_executor
from sandbox_helpers import SLOTS, sandbox_uid_pids, wait_until
from zehanx.common.v1 import log_pb2
from zehanx.executor.v1 import executor_service_pb2 as pb
from zehanx.executor.v1 import executor_service_pb2_grpc as rpc
from zehanx_executor.sandbox.probe import Capabilities
from zehanx_executor.service import Executor
from zehanx_runtime.status import error_info_of, field_violations_of

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "rpc-test-token"
META = (("x-zx-service-token", TOKEN),)
WORK_DIR = "/var/tmp/zx-executor-rpc-tests"
# Generous: the machine is shared and slow; a correct executor answers far sooner.
CALL_TIMEOUT = 120.0


@dataclass
class Server:
    executor: Executor
    channel: grpc.aio.Channel
    stub: rpc.ExecutorServiceStub
    gate: Path
    """The sandbox's read-only runtime folder (/zx/runtime): tests drop files here to release programs."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(caps: Capabilities, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    gate = tmp_path_factory.mktemp("gate")
    gate.chmod(0o755)
    settings = local_settings(TOKEN, WORK_DIR, max_queue=1, queue_timeout_s=CALL_TIMEOUT, runtime_dir=gate)
    async with serve_executor(settings) as served:
        yield Server(served.executor, served.channel, served.stub, gate)


def request(code: str, *, limits: pb.Limits | None = None, **kw: object) -> pb.ExecuteRequest:
    files = [pb.ExecutionFile(path="main.py", content=code.encode())]
    files += kw.pop("files", [])  # type: ignore[operator]
    return pb.ExecuteRequest(
        files=files,
        argv=kw.pop("argv", ["python", "main.py"]),  # type: ignore[arg-type]
        limits=limits or pb.Limits(max_wall_duration=duration_pb2.Duration(seconds=60)),
        **kw,  # type: ignore[arg-type]
    )


def small(**kw: object) -> pb.Limits:
    base: dict[str, object] = {
        "max_wall_duration": duration_pb2.Duration(seconds=60),
        "max_memory_bytes": 256 << 20,
        "max_disk_bytes": 16 << 20,
    }
    base.update(kw)
    return pb.Limits(**base)  # type: ignore[arg-type]


@dataclass
class Reply:
    messages: list[pb.ExecuteResponse]

    def of(self, kind: str) -> list:
        return [getattr(m, kind) for m in self.messages if m.WhichOneof("event") == kind]

    def out(self, stream: int = log_pb2.OUTPUT_STREAM_STDOUT) -> str:
        return b"".join(o.data for o in self.of("output") if o.stream == stream).decode()

    @property
    def result(self) -> pb.ExecutionResult:
        assert self.messages[-1].WhichOneof("event") == "result", self.messages[-1]
        return self.messages[-1].result


async def execute(server: Server, req: pb.ExecuteRequest, deadline_s: float = CALL_TIMEOUT) -> Reply:
    call = server.stub.Execute(req, metadata=META, timeout=deadline_s)
    return Reply([m async for m in call])


async def rpc_error(server: Server, req: pb.ExecuteRequest, metadata: tuple = META) -> grpc.aio.AioRpcError:
    call = server.stub.Execute(req, metadata=metadata, timeout=CALL_TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


# -- the stream ------------------------------------------------------------------------------------


async def test_execute_streams_output_metrics_files_and_one_final_result(server: Server) -> None:
    code = r"""
import os, sys
print('hello')
print('@@zx:{"kind": "metric", "step": 1, "loss": 0.25}')
print('to stderr', file=sys.stderr)
os.makedirs('out', exist_ok=True)
open('out/model.bin', 'wb').write(bytes(range(256)) * 4096)
open('out/card.md', 'w').write('# card')
open('scratch.tmp', 'w').write('not collected')
print('bye')
"""
    job_id = "9b2f8a9e-4c1e-4a53-9d7e-2a9a5f3c1d00"
    reply = await execute(
        server, request(code, collect=["out/**"], job_id=job_id, env={"ZX_SMOKE": "1"}, limits=small())
    )
    assert [m.sequence for m in reply.messages] == list(range(1, len(reply.messages) + 1))
    assert all(m.HasField("event_time") for m in reply.messages)

    started = reply.messages[0].started
    assert reply.messages[0].WhichOneof("event") == "started"
    assert started.backend == "local" and "unprivileged uid" in started.sandbox_description
    assert started.execution_id  # assigned by the server
    assert started.effective_limits.max_memory_bytes == 256 << 20
    assert started.effective_limits.max_wall_duration.seconds == 60

    assert reply.out() == "hello\nbye\n"  # the metric line is not also output
    assert reply.out(log_pb2.OUTPUT_STREAM_STDERR) == "to stderr\n"
    metrics = reply.of("metric")
    assert len(metrics) == 1
    assert json_format.MessageToDict(metrics[0].payload) == {"kind": "metric", "step": 1, "loss": 0.25}
    assert metrics[0].raw_line_bytes == len('@@zx:{"kind": "metric", "step": 1, "loss": 0.25}')

    files: dict[str, bytes] = {}
    for f in reply.of("file"):
        assert f.content_included
        files[f.path] = files.get(f.path, b"") + f.data
    model = bytes(range(256)) * 4096
    assert files == {"out/model.bin": model, "out/card.md": b"# card"}
    chunks = [f for f in reply.of("file") if f.path == "out/model.bin"]
    assert [c.offset for c in chunks] == [0] and chunks[-1].last_chunk
    assert chunks[0].sha256 == hashlib.sha256(model).hexdigest() and chunks[0].size_bytes == len(model)

    result = reply.result
    assert result.reason == pb.EXIT_REASON_COMPLETED and result.exit_code == 0 and result.signal == 0
    assert result.usage.output_bytes == len("hello\nbye\nto stderr\n") + metrics[0].raw_line_bytes + 1
    assert result.usage.wall_duration.ToNanoseconds() > 0
    assert result.usage.cpu_duration.ToNanoseconds() > 0
    assert result.usage.max_rss_bytes > 1 << 20
    assert result.usage.disk_bytes >= len(model)
    assert result.dropped_metric_count == 0


async def test_a_failing_program_is_a_result_not_an_rpc_error(server: Server) -> None:
    reply = await execute(server, request("import sys; print('x'); sys.exit(3)", limits=small()))
    r = reply.result
    assert (r.reason, r.exit_code, r.signal) == (pb.EXIT_REASON_FAILED, 3, 0)
    assert "status 3" in r.message


# -- each limit with its reason -------------------------------------------------------------------


async def test_each_limit_is_reported_with_its_reason(server: Server) -> None:
    cases = [
        (
            "memory",
            "b = [b'x' * (1 << 20) for _ in range(1000)]",
            small(max_memory_bytes=64 << 20),
            pb.EXIT_REASON_MEMORY,
        ),
        (
            "wall time",
            "import time; time.sleep(600)",
            small(max_wall_duration=duration_pb2.Duration(seconds=1)),
            pb.EXIT_REASON_TIMEOUT,
        ),
        (
            "output",
            "import sys\nwhile True: sys.stdout.write('A' * 65536)",
            small(max_output_bytes=100_000),
            pb.EXIT_REASON_OUTPUT_LIMIT,
        ),
        (
            "disk",
            "[open(f'f{i}', 'wb').write(b'x' * (1 << 20)) for i in range(64)]",
            small(max_disk_bytes=4 << 20),
            pb.EXIT_REASON_DISK_LIMIT,
        ),
    ]
    for name, code, limits, reason in cases:
        r = (await execute(server, request(code, limits=limits))).result
        assert r.reason == reason, (name, r)
        assert r.message, name
    # A program that cannot be started at all: the sandbox says so (exit 127 from bwrap's exec).
    r = (await execute(server, request("", argv=["/no/such/program"], limits=small()))).result
    assert r.reason == pb.EXIT_REASON_FAILED and r.exit_code != 0


async def test_a_gpu_request_on_a_host_without_one_is_failed_precondition(server: Server) -> None:
    if server.executor.backend.gpu_devices:  # type: ignore[attr-defined]
        pytest.skip("this host has NVIDIA devices: the GPU path is tested in test_gpu_sandbox")
    err = await rpc_error(server, request("print(1)", limits=small(gpu=True)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = error_info_of(err)
    assert info is not None and info.reason == "GPU_UNAVAILABLE"


# -- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "fields"),
    [
        (pb.ExecuteRequest(argv=[]), {"argv"}),
        (pb.ExecuteRequest(argv=[""]), {"argv"}),
        (
            pb.ExecuteRequest(argv=["python"], files=[pb.ExecutionFile(path="../../etc/passwd")]),
            {"files[0].path"},
        ),
        (
            pb.ExecuteRequest(argv=["python"], files=[pb.ExecutionFile(path="/abs")]),
            {"files[0].path"},
        ),
        (pb.ExecuteRequest(argv=["python"], collect=["../x"]), {"collect[0]"}),
        (pb.ExecuteRequest(argv=["python"], execution_id="not-a-uuid"), {"execution_id"}),
        (
            pb.ExecuteRequest(argv=["python"], limits=pb.Limits(max_memory_bytes=1)),
            {"limits.max_memory_bytes"},
        ),
        (
            pb.ExecuteRequest(
                argv=["python"], limits=pb.Limits(max_wall_duration=duration_pb2.Duration(seconds=-1))
            ),
            {"limits.max_wall_duration"},
        ),
        (pb.ExecuteRequest(argv=["python"], env={"lower": "x"}), {"env"}),
    ],
)
async def test_bad_requests_get_invalid_argument_with_field_violations(
    server: Server, bad: pb.ExecuteRequest, fields: set[str]
) -> None:
    err = await rpc_error(server, bad)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    named = {f.split("[")[0] if f.startswith("env") else f for f, _ in field_violations_of(err)}
    assert fields <= named, field_violations_of(err)


async def test_environment_outside_the_allow_list_or_looking_secret_is_refused(server: Server) -> None:
    err = await rpc_error(
        server,
        request("print(1)", env={"AWS_SECRET_ACCESS_KEY": "x", "LD_PRELOAD": "/job/evil.so", "PATH": "/job"}),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = dict(field_violations_of(err))
    assert "secret" in violations["env[AWS_SECRET_ACCESS_KEY]"]
    assert "allow-list" in violations["env[LD_PRELOAD]"]
    assert "cannot be overridden" in violations["env[PATH]"]


async def test_calls_without_the_service_token_are_refused(server: Server) -> None:
    err = await rpc_error(server, request("print(1)"), metadata=())
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED


# -- cancellation and deadlines -------------------------------------------------------------------

FORKING_SLEEPER = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
print('ready', flush=True)
time.sleep(600)
"""


async def _until_ready(call: grpc.aio.UnaryStreamCall) -> None:
    async for msg in call:
        if msg.WhichOneof("event") == "output" and b"ready" in msg.output.data:
            return
    raise AssertionError("the program ended before it printed ready")


async def test_cancelling_the_call_kills_the_whole_process_tree(server: Server) -> None:
    call = server.stub.Execute(request(FORKING_SLEEPER, limits=small()), metadata=META, timeout=CALL_TIMEOUT)
    await _until_ready(call)
    assert len(sandbox_uid_pids()) >= 4  # the program and its three children
    call.cancel()
    await wait_until(lambda: not sandbox_uid_pids(), "every sandboxed process is gone after cancel")
    await wait_until(lambda: server.executor.slots.busy == 0, "the slot is free again")
    # The executor keeps serving.
    assert (await execute(server, request("print('next')", limits=small()))).out() == "next\n"


async def test_a_passed_deadline_kills_the_whole_process_tree(server: Server) -> None:
    call = server.stub.Execute(request(FORKING_SLEEPER, limits=small()), metadata=META, timeout=8.0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: not sandbox_uid_pids(), "every sandboxed process is gone after the deadline")
    await wait_until(lambda: server.executor.slots.busy == 0, "the slot is free again")


# -- slots ---------------------------------------------------------------------------------------

GATED = """
import os, sys, time
n = int(sys.argv[1])
print('ready', n, flush=True)
while not os.path.exists('/zx/runtime/go'):
    time.sleep(0.02)
print(sum(i * n for i in range(100000)))
"""


async def test_eight_at_once_finish_the_ninth_waits_and_beyond_the_queue_is_refused(server: Server) -> None:
    (server.gate / "go").unlink(missing_ok=True)
    calls = [
        server.stub.Execute(
            request(GATED, argv=["python", "main.py", str(n)], limits=small()),
            metadata=META,
            timeout=CALL_TIMEOUT,
        )
        for n in range(SLOTS)
    ]
    readers = [asyncio.ensure_future(_collect(call)) for call in calls]
    try:
        # All eight run at the same time: every one printed "ready" while none may finish yet.
        await wait_until(lambda: server.executor.slots.busy == SLOTS, "eight slots busy", 60)
        await wait_until(lambda: len(sandbox_uid_pids()) >= SLOTS, "eight programs running", 60)

        ninth = server.stub.Execute(
            request("print('ninth')", limits=small()), metadata=META, timeout=CALL_TIMEOUT
        )
        ninth_reader = asyncio.ensure_future(_collect(ninth))
        await wait_until(lambda: server.executor.slots.waiting == 1, "the ninth waits for a slot")
        assert not ninth_reader.done()

        # The queue holds one: the tenth is refused at once, it does not hang.
        err = await rpc_error(server, request("print('tenth')", limits=small()))
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info_of(err)
        assert info is not None and info.reason == "EXECUTOR_BUSY"

        (server.gate / "go").write_text("")
        replies = await asyncio.gather(*readers)
        for n, reply in enumerate(replies):
            assert reply.result.reason == pb.EXIT_REASON_COMPLETED, (n, reply.result)
            assert reply.out() == f"ready {n}\n{sum(i * n for i in range(100000))}\n"
        ninth_reply = await ninth_reader
        assert ninth_reply.result.reason == pb.EXIT_REASON_COMPLETED and ninth_reply.out() == "ninth\n"
    finally:
        (server.gate / "go").unlink(missing_ok=True)
        for call in calls:
            call.cancel()
        for reader in readers:
            with contextlib.suppress(BaseException):
                await reader
    await wait_until(lambda: server.executor.slots.busy == 0, "every slot is free again")
    assert server.executor.slots.waiting == 0


async def _collect(call: grpc.aio.UnaryStreamCall) -> Reply:
    return Reply([m async for m in call])
