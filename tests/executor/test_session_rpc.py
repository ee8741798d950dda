"""ExecutorService.Session through a real gRPC server (port 0) over the real local sandbox.

A session keeps one sandboxed process alive: calls go in as stdin lines, replies come back as stdout
lines in order. Checked here: the stream (ready, replies in call order from one and the same process,
stderr as output, ended last, gap-free sequence), the idle timeout, the sessions' own capacity (places
and memory, RESOURCE_EXHAUSTED SESSION_CAPACITY), a crash mid-call, the memory limit, an oversized
reply, bad messages, cancellation (the process is gone), and a backend without sessions.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sandbox_helpers import wait_until
from session_helpers import (
    SERVE,
    SESSION_MEMORY,
    SESSION_SLOTS,
    Client,
    Server,
    open_session,
    rpc_error,
    serving,
    session_pids,
    start,
)
from zehanx.executor.v1 import executor_service_pb2 as pb
from zehanx_executor.domain import Limits
from zehanx_executor.sandbox.probe import Capabilities
from zehanx_executor.sandbox.unsafe import UnsafeDevRunner
from zehanx_executor.service import EnvPolicy, Executor, LimitPolicy, SessionInput, SlotPool
from zehanx_runtime.errors import FailedPrecondition
from zehanx_runtime.status import error_info_of, field_violations_of

pytestmark = pytest.mark.asyncio(loop_scope="module")

WORK_DIR = "/var/tmp/zx-executor-session-tests"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(caps: Capabilities) -> AsyncIterator[Server]:
    async with serving(WORK_DIR) as s:
        yield s


async def test_a_session_answers_calls_in_order_from_one_process(server: Server) -> None:
    client = open_session(server, start())
    ready = await client.ready()
    assert ready.backend == "local" and "unprivileged uid" in ready.sandbox_description
    assert ready.execution_id and ready.effective_limits.max_memory_bytes == 128 << 20
    assert ready.max_idle_duration.seconds == 300  # the server's default
    assert ready.start_duration.ToNanoseconds() > 0
    assert server.executor.sessions is not None and server.executor.sessions.busy == 1
    assert server.executor.slots.busy == 0  # a session takes no run slot

    # Pipelined: five calls before any reply; they come back in order, each with its call_id.
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon"]
    for n, word in enumerate(words, start=10):
        client.send(n, word)
    replies = [await client.reply() for _ in words]
    assert [r.call_id for r in replies] == list(range(10, 15))
    parts = [r.payload.decode().split() for r in replies]
    assert [p[2].encode() for p in parts] == [w[::-1] for w in words]
    assert len({(p[0], p[1]) for p in parts}) == 1  # one process: the same token and pid every time
    assert all(r.call_duration.ToNanoseconds() > 0 for r in replies)

    # Later calls still reach the same process.
    client.send(99, b"again")
    later = await client.reply()
    assert later.call_id == 99 and later.payload.decode().split()[:2] == parts[0][:2]

    client.close()  # half-close: stdin is closed, the loop ends, status 0
    ended = await client.ended()
    assert ended.reason == pb.EXIT_REASON_COMPLETED and ended.exit_code == 0, ended
    assert "loading" in client.stderr()
    assert [m.sequence for m in client.messages] == list(range(1, len(client.messages) + 1))
    assert all(m.HasField("event_time") for m in client.messages)
    await wait_until(lambda: server.executor.sessions.busy == 0, "the session's place is free")
    assert session_pids() == []


async def test_the_idle_timeout_ends_the_session_and_frees_its_place(server: Server) -> None:
    client = open_session(server, start(idle_s=1))
    ready = await client.ready()
    assert ready.max_idle_duration.seconds == 1
    client.send(1, b"ping")
    assert (await client.reply()).call_id == 1
    t0 = time.monotonic()
    ended = await client.ended()
    assert ended.reason == pb.EXIT_REASON_TIMEOUT and "idle" in ended.message, ended
    assert 0.8 < time.monotonic() - t0 < 5.0
    await wait_until(lambda: server.executor.sessions.busy == 0, "the idle session's place is free")
    assert session_pids() == []


async def test_sessions_beyond_the_places_or_the_memory_total_are_refused_at_once(server: Server) -> None:
    assert SESSION_SLOTS == 3 and SESSION_MEMORY == 512 << 20
    clients = [open_session(server, start()) for _ in range(SESSION_SLOTS)]
    for c in clients:
        await c.ready()
    try:
        extra = open_session(server, start())
        err = await rpc_error(extra)
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        info = error_info_of(err)
        assert info is not None and info.reason == "SESSION_CAPACITY"
        assert info.metadata["session_slots"] == "3" and info.metadata["sessions_open"] == "3"
        # The gauges read the pool when scraped; a training run's slot is untouched.
        assert REGISTRY.get_sample_value("zx_executor_sessions_open") == 3
        assert REGISTRY.get_sample_value("zx_executor_session_memory_reserved_bytes") == 3 * (128 << 20)
        assert REGISTRY.get_sample_value("zx_executor_slots_busy") == 0
        assert info.metadata["session_memory_reserved_bytes"] == str(3 * (128 << 20))

        clients[0].close()
        assert (await clients[0].ended()).reason == pb.EXIT_REASON_COMPLETED
        await wait_until(lambda: server.executor.sessions.busy == 2, "one place free")
        # A place is free, but 256 MiB + 300 MiB is over the 512 MiB total.
        err = await rpc_error(open_session(server, start(memory=300 << 20)))
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info_of(err)
        assert (
            info is not None
            and info.reason == "SESSION_CAPACITY"
            and info.metadata["memory_bytes"] == str(300 << 20)
        )
        # More than the whole total could never fit: a precondition, not a wait-and-retry.
        err = await rpc_error(open_session(server, start(memory=600 << 20)))
        assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_of(err).reason == "SESSION_MEMORY_BUDGET"  # type: ignore[union-attr]
        # What fits is admitted.
        fits = open_session(server, start(memory=256 << 20))
        await fits.ready()
        fits.close()
        await fits.ended()
    finally:
        for c in clients[1:]:
            c.close()
            await c.ended()
    await wait_until(lambda: server.executor.sessions.busy == 0, "every place free")
    assert server.executor.sessions.memory_reserved == 0


async def test_a_process_that_crashes_mid_call_ends_the_session_failed_with_its_stderr(
    server: Server,
) -> None:
    client = open_session(server, start())
    await client.ready()
    client.send(1, b"fine")
    await client.reply()
    client.send(7, b"crash")
    ended = await client.ended()
    assert ended.reason == pb.EXIT_REASON_FAILED and ended.exit_code == 3, ended
    assert "boom: the model file is corrupt" in ended.message
    assert "unanswered: call_id 7" in ended.message
    await wait_until(lambda: server.executor.sessions.busy == 0, "the place is free")


async def test_a_memory_bomb_in_a_session_ends_it_with_memory(server: Server) -> None:
    client = open_session(server, start(memory=64 << 20))
    await client.ready()
    client.send(1, b"bomb")
    ended = await client.ended()
    assert ended.reason == pb.EXIT_REASON_MEMORY, ended
    assert ended.usage.max_rss_bytes <= 64 << 20
    assert session_pids() == []


async def test_a_reply_line_over_32_mib_ends_the_session_with_output_limit(server: Server) -> None:
    client = open_session(server, start(memory=256 << 20))
    await client.ready()
    client.send(1, b"huge")
    ended = await client.ended()
    assert ended.reason == pb.EXIT_REASON_OUTPUT_LIMIT and "longer than" in ended.message, ended


async def test_cancelling_the_call_kills_the_process(server: Server) -> None:
    client = open_session(server, start())
    await client.ready()
    client.send(1, b"x")
    await client.reply()
    assert session_pids(), "the session's process runs"
    client.call.cancel()
    await wait_until(lambda: session_pids() == [], "the session's processes are gone", 2.0)
    await wait_until(lambda: server.executor.sessions.busy == 0, "the place is free", 2.0)


async def test_bad_messages_are_invalid_argument(server: Server) -> None:
    # A newline inside a payload would be two calls to the process.
    client = open_session(server, start())
    await client.ready()
    client.send(1, b"two\nlines")
    err = await rpc_error(client)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "call.payload" in dict(field_violations_of(err))
    # A call first, and a second start.
    first_call = Client(server, pb.SessionRequest(call=pb.SessionCall(call_id=1, payload=b"x")))
    err = await rpc_error(first_call)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "start" in dict(field_violations_of(err))
    again = open_session(server, start())
    await again.ready()
    again.send_raw(pb.SessionRequest(start=start()))
    err = await rpc_error(again)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    # protovalidate on the start message, as for Execute.
    bad = open_session(server, pb.SessionStart(argv=[""], execution_id="not-a-uuid"))
    err = await rpc_error(bad)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {"start.argv", "start.execution_id"} <= set(dict(field_violations_of(err)))
    await wait_until(lambda: server.executor.sessions.busy == 0, "every place free")
    assert session_pids() == []


async def test_a_backend_without_sessions_answers_sessions_unsupported() -> None:
    executor = Executor(
        UnsafeDevRunner(python_bin_dir="/usr/bin"),
        slots=SlotPool(1, max_waiting=0, wait_timeout_s=1),
        limits=LimitPolicy(Limits(), Limits()),
        env=EnvPolicy(),
    )
    with pytest.raises(FailedPrecondition) as caught:
        async with executor.open_session(SessionInput(execution_id="s1", argv=("python", "-c", SERVE))):
            pass
    assert caught.value.reason == "SESSIONS_UNSUPPORTED" and "Execute" in caught.value.message


async def test_sessions_ended_are_counted_by_reason(server: Server) -> None:
    before = (
        REGISTRY.get_sample_value(
            "zx_executor_sessions_ended_total", {"backend": "local", "reason": "completed"}
        )
        or 0
    )
    calls = REGISTRY.get_sample_value("zx_executor_session_calls_total", {"backend": "local"}) or 0
    client = open_session(server, start())
    await client.ready()
    client.send(1, b"x")
    await client.reply()
    client.close()
    await client.ended()
    assert (
        REGISTRY.get_sample_value(
            "zx_executor_sessions_ended_total", {"backend": "local", "reason": "completed"}
        )
        == before + 1
    )
    assert REGISTRY.get_sample_value("zx_executor_session_calls_total", {"backend": "local"}) == calls + 1


async def test_a_half_close_right_after_start_ends_the_session_completed(server: Server) -> None:
    client = open_session(server, start())
    client.close()  # before the process is even started: its stdin is closed once it is
    t0 = time.monotonic()
    ended = await client.ended()
    assert ended.reason == pb.EXIT_REASON_COMPLETED, ended
    assert time.monotonic() - t0 < 10  # not the 300 s idle timeout
    assert client.messages[0].WhichOneof("event") == "ready"


async def test_more_than_64_unanswered_calls_end_the_session_with_failed_precondition(server: Server) -> None:
    client = open_session(server, start("import time\ntime.sleep(600)\n"))  # never reads its stdin
    await client.ready()
    for n in range(65):
        client.send(n, b"x")
    err = await rpc_error(client)
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info_of(err).reason == "TOO_MANY_PENDING_CALLS"  # type: ignore[union-attr]
    await wait_until(lambda: session_pids() == [], "the session's process is gone")
