"""The shared server start: interceptor behaviour and graceful shutdown, in process on port 0."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as pb_grpc
from zehanx_runtime import errors
from zehanx_runtime.client import call_metadata, downstream_timeout
from zehanx_runtime.server import start_server
from zehanx_runtime.settings import ServiceSettings
from zehanx_runtime.status import error_info_of, field_violations_of

NAME = "zehanx.crawler.v1.CrawlerService"
TOKEN = "s3cret-token"


class SlowCrawler(pb_grpc.CrawlerServiceServicer):
    """Streams one progress message, then holds the stream for ``hold`` seconds."""

    def __init__(self) -> None:
        self.hold = 0.0
        self.cleaned_up = asyncio.Event()
        self.seen_timeout: float | None = None

    async def BuildDataset(self, request: Any, context: Any) -> Any:
        try:
            self.seen_timeout = downstream_timeout(context, 1000.0)
            yield pb.BuildDatasetResponse()
            await asyncio.sleep(self.hold)
            yield pb.BuildDatasetResponse()
        finally:
            self.cleaned_up.set()

    async def ListCatalog(self, request: Any, context: Any) -> Any:
        if request.page_token == "boom":
            raise RuntimeError("a bug")
        if request.page_token == "missing":
            raise errors.NotFound("no such page", metadata={"page_token": request.page_token})
        return pb.ListCatalogResponse()


@pytest.fixture
async def server() -> Any:
    servicer = SlowCrawler()
    settings = ServiceSettings(port=0, service_token=TOKEN)
    running = await start_server(
        settings, [(pb_grpc.add_CrawlerServiceServicer_to_server, servicer, NAME)], service_name="crawler"
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, servicer, pb_grpc.CrawlerServiceStub(channel), channel
    await channel.close()
    await running.server.stop(None)


async def test_domain_errors_and_bugs_get_proper_codes(server: Any) -> None:
    _, _, stub, _ = server
    md = call_metadata(TOKEN)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListCatalog(pb.ListCatalogRequest(page_token="missing"), metadata=md)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    info = error_info_of(caught.value)
    assert info is not None and info.metadata["page_token"] == "missing"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListCatalog(pb.ListCatalogRequest(page_token="boom"), metadata=md)
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "a bug" not in (caught.value.details() or "")  # internals stay in the log


async def test_invalid_request_names_fields_and_bad_bytes_are_invalid_argument(server: Any) -> None:
    _running, _, stub, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListCatalog(pb.ListCatalogRequest(page_size=-5), metadata=call_metadata(TOKEN))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in {f for f, _ in field_violations_of(caught.value)}

    raw = channel.unary_unary(f"/{NAME}/ListCatalog", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\xff\xff\xff\xff", metadata=call_metadata(TOKEN))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_token_checked_before_anything_and_health_is_open(server: Any) -> None:
    _running, _, stub, channel = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListCatalog(pb.ListCatalogRequest(page_size=-5))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_deadline_reaches_the_handler(server: Any) -> None:
    _, servicer, stub, _ = server
    call = stub.BuildDataset(
        pb.BuildDatasetRequest(prompt="digits"), metadata=call_metadata(TOKEN), timeout=7
    )
    async for _ in call:
        pass
    # The handler sees the caller's deadline: 7 s less what the trip took (grpc rounds the deadline it
    # sends, so allow a few milliseconds over).
    assert servicer.seen_timeout is not None and 0 < servicer.seen_timeout <= 7.05


async def test_shutdown_lets_short_calls_finish_and_cancels_long_ones(server: Any) -> None:
    running, servicer, stub, channel = server
    health = health_pb2_grpc.HealthStub(channel)

    servicer.hold = 0.3  # finishes inside the grace
    call = stub.BuildDataset(pb.BuildDatasetRequest(prompt="x"), metadata=call_metadata(TOKEN))
    await call.read()
    await running.health.enter_graceful_shutdown()  # the first step of stop(): probes see NOT_SERVING
    status = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    stopping = asyncio.create_task(running.stop(grace=2.0))
    assert await call.read() is not grpc.aio.EOF  # the second message arrives inside the grace
    assert await call.read() is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK
    await stopping


async def test_shutdown_cancels_stream_past_grace_and_handler_cleans_up() -> None:
    servicer = SlowCrawler()
    servicer.hold = 60
    running = await start_server(
        ServiceSettings(port=0, service_token=TOKEN),
        [(pb_grpc.add_CrawlerServiceServicer_to_server, servicer, NAME)],
        service_name="crawler",
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.CrawlerServiceStub(channel).BuildDataset(
            pb.BuildDatasetRequest(prompt="x"), metadata=call_metadata(TOKEN)
        )
        await call.read()
        started = time.monotonic()
        await running.stop(grace=0.5)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0
        assert await call.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        await asyncio.wait_for(servicer.cleaned_up.wait(), 2)


def test_internal_service_without_token_refuses_to_start() -> None:
    with pytest.raises(RuntimeError, match="SERVICE_TOKEN"):
        asyncio.run(start_server(ServiceSettings(port=0), [], service_name="crawler"))


def test_settle_gc_freezes_start_up_objects_and_still_collects_new_cycles() -> None:
    # In a child interpreter: the collector's state is process-wide and this one runs the other tests.
    probe = """
import gc, json
from zehanx_runtime.server import GC_GEN0_THRESHOLD, settle_gc
before = gc.get_threshold()
settle_gc()
class Node: pass
for _ in range(100):  # garbage cycles made after start-up
    a, b = Node(), Node(); a.other, b.other = b, a
del a, b
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "collected": gc.collect(), "expected": GC_GEN0_THRESHOLD}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["before"][0] == 700  # CPython's default
    assert found["after"] == [found["expected"], *found["before"][1:]]
    assert found["frozen"] > 10_000  # the interpreter and the runtime's imports
    assert found["collected"] >= 200  # every node of the 100 cycles (and their __dict__s)
