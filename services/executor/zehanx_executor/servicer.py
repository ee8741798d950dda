"""ExecutorService over gRPC: convert the request in (:mod:`zehanx_executor.convert`), run it through the domain, convert events out.

Each response carries a gap-free ``sequence`` from 1 and an ``event_time``. Cancelling the call (or
its deadline passing) fires a done-callback that kills the program's whole tree at once; the event
iterator's own cleanup then waits for the cgroup to empty and frees the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from zehanx.executor.v1 import executor_service_pb2 as pb
from zehanx.executor.v1 import executor_service_pb2_grpc as rpc
from zehanx_runtime import provider_keys
from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_executor.convert import to_input, to_response, to_session_input, to_session_response
from zehanx_executor.service import Executor, Session

SERVICE_NAME = "zehanx.executor.v1.ExecutorService"


class ExecutorServicer(rpc.ExecutorServiceServicer):
    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ExecuteResponse]:
        # A job owner's own E2B key, sent by the trainer: it creates the cloud sandbox (E2B backend).
        key = provider_keys.caller_key(context.invocation_metadata(), provider_keys.E2B_KEY)
        async with self.executor.open(to_input(request, sandbox_api_key=key)) as execution:
            # Cancellation or a passed deadline: kill the tree now, from the callback, whatever the
            # handler is awaiting at that moment.
            context.add_done_callback(lambda _ctx: execution.abort())
            sequence = 0
            async for event in execution.events():
                sequence += 1
                yield to_response(event, sequence)

    async def Session(
        self, requests: AsyncIterator[pb.SessionRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SessionResponse]:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("request") != "start":
            raise InvalidArgument(
                "the first message of a session must carry start",
                violations=[FieldViolation("start", "must be set in the first message (and only there)")],
            )
        async with self.executor.open_session(to_session_input(first.start)) as session:
            context.add_done_callback(lambda _ctx: session.abort())
            feeder = asyncio.create_task(_feed(requests, session))
            try:
                sequence = 0
                async for event in session.events():
                    sequence += 1
                    yield to_session_response(event, sequence)
            finally:
                feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder


async def _feed(requests: AsyncIterator[pb.SessionRequest], session: Session) -> None:
    """Write the caller's calls to the session in order; its half-close closes the process's stdin. A bad
    message (or an error reading the stream) ends the session with that error."""
    try:
        async for request in requests:
            if request.WhichOneof("request") != "call":
                raise InvalidArgument(
                    "only the first message of a session may carry start",
                    violations=[FieldViolation("start", "must be set in the first message only")],
                )
            await session.call(request.call.call_id, request.call.payload)
        session.close_input()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a DomainError is mapped by the interceptor; anything else is INTERNAL
        session.fail(exc)
