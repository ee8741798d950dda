"""Helpers for the Session tests: a real executor served on port 0 and a client for one session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from rpc_helpers import Server, local_settings, serve_executor
from sandbox_helpers import SLOTS, UID_BASE, sandbox_uid_pids
from zehanx.common.v1 import log_pb2
from zehanx.executor.v1 import executor_service_pb2 as pb

TOKEN = "session-test-token"
META = (("x-zx-service-token", TOKEN),)
CALL_TIMEOUT = 120.0
# The sessions of these servers: 3 places (uids UID_BASE + SLOTS + 1 .. + 3; runs take UID_BASE ..
# + SLOTS - 1 and the probe + SLOTS), 512 MiB of session memory in all.
SESSION_SLOTS = 3
SESSION_MEMORY = 512 << 20
SESSION_UIDS = (UID_BASE + SLOTS + 1, UID_BASE + SLOTS + SESSION_SLOTS)

# A warm "predictor": answers each line with its process's token, its pid and the line reversed.
# "crash" exits 3 mid-call after a stderr line, "bomb" allocates without end, "exit" leaves the loop.
SERVE = r"""
import os, sys
token = os.urandom(8).hex()
print('loading', file=sys.stderr, flush=True)
for line in sys.stdin:
    req = line.rstrip('\n')
    if req == 'crash':
        print('boom: the model file is corrupt', file=sys.stderr, flush=True)
        os._exit(3)
    if req == 'bomb':
        hog = [bytearray(1 << 20) for _ in range(100000)]
    if req == 'huge':
        sys.stdout.write('x' * (33 << 20))
        sys.stdout.flush()
    if req == 'exit':
        break
    sys.stdout.write(f'{token} {os.getpid()} {req[::-1]}\n')
    sys.stdout.flush()
"""


@contextlib.asynccontextmanager
async def serving(work_dir: str, runtime_dir: Path | None = None) -> AsyncIterator[Server]:
    settings = local_settings(
        TOKEN,
        work_dir,
        session_slots=SESSION_SLOTS,
        session_memory_bytes=SESSION_MEMORY,
        runtime_dir=runtime_dir,
    )
    async with serve_executor(settings) as served:
        yield served


def start(
    code: str = SERVE,
    *,
    memory: int = 128 << 20,
    idle_s: float | None = None,
    wall_s: int = 60,
    **limits: object,
) -> pb.SessionStart:
    return pb.SessionStart(
        files=[pb.ExecutionFile(path="serve.py", content=code.encode())],
        argv=["python", "serve.py"],
        limits=pb.Limits(
            max_wall_duration=duration_pb2.Duration(seconds=wall_s),
            max_memory_bytes=memory,
            max_disk_bytes=16 << 20,
            **limits,  # type: ignore[arg-type]
        ),
        max_idle_duration=None if idle_s is None else duration_pb2.Duration(nanos=0, seconds=int(idle_s)),
    )


@dataclass
class Client:
    """One Session call: ``send`` calls, ``close`` half-closes, ``next``/``reply``/``ended`` read."""

    server: Server
    first: pb.SessionRequest
    messages: list[pb.SessionResponse] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[pb.SessionRequest | None] = asyncio.Queue()
        self.call = self.server.stub.Session(self._requests(), metadata=META, timeout=CALL_TIMEOUT)

    async def _requests(self) -> AsyncIterator[pb.SessionRequest]:
        yield self.first
        while (item := await self._queue.get()) is not None:
            yield item

    def send(self, call_id: int, payload: bytes) -> None:
        self._queue.put_nowait(pb.SessionRequest(call=pb.SessionCall(call_id=call_id, payload=payload)))

    def send_raw(self, request: pb.SessionRequest) -> None:
        self._queue.put_nowait(request)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def next(self) -> pb.SessionResponse:
        msg = await self.call.read()
        assert msg is not grpc.aio.EOF, "the stream ended without its ended message"
        self.messages.append(msg)
        return msg

    async def until(self, kind: str) -> pb.SessionResponse:
        while (msg := await self.next()).WhichOneof("event") != kind:
            if msg.WhichOneof("event") == "ended":
                raise AssertionError(f"the session ended while waiting for {kind}: {msg.ended}")
        return msg

    async def ready(self) -> pb.SessionReady:
        return (await self.until("ready")).ready

    async def reply(self) -> pb.SessionReply:
        return (await self.until("reply")).reply

    async def ended(self) -> pb.ExecutionResult:
        while (msg := await self.next()).WhichOneof("event") != "ended":
            pass
        assert await self.call.read() is grpc.aio.EOF, "ended is the last message"
        return msg.ended

    def stderr(self) -> str:
        return b"".join(
            m.output.data
            for m in self.messages
            if m.WhichOneof("event") == "output" and m.output.stream == log_pb2.OUTPUT_STREAM_STDERR
        ).decode(errors="replace")


def open_session(server: Server, first: pb.SessionStart) -> Client:
    return Client(server, pb.SessionRequest(start=first))


async def rpc_error(client: Client) -> grpc.aio.AioRpcError:
    try:
        while True:
            msg = await client.call.read()
            if msg is grpc.aio.EOF:
                raise AssertionError("the stream ended without an error")
            client.messages.append(msg)
    except grpc.aio.AioRpcError as err:
        return err


def session_pids() -> list[int]:
    """The live processes of the session slots' sandbox uids."""
    return sandbox_uid_pids(*SESSION_UIDS)
