"""zehanx_runtime.metrics: the gRPC server metrics the one interceptor records, served on /metrics and
read back with Prometheus' own text parser, on a real server on port 0."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as pb_grpc
from zehanx_runtime import errors
from zehanx_runtime.metrics import serve_metrics
from zehanx_runtime.server import start_server
from zehanx_runtime.settings import ServiceSettings

NAME = "zehanx.crawler.v1.CrawlerService"
TOKEN = "metrics-token"


class TwoMessages(pb_grpc.CrawlerServiceServicer):
    async def BuildDataset(self, request: Any, context: Any) -> Any:
        yield pb.BuildDatasetResponse(sequence=1)
        yield pb.BuildDatasetResponse(sequence=2)

    async def ListCatalog(self, request: Any, context: Any) -> Any:
        raise errors.NotFound("no catalogue here", reason="NO_CATALOGUE")


def _samples(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_calls_are_counted_by_method_type_and_code_and_served_on_metrics() -> None:
    server = await start_server(
        ServiceSettings(port=0, service_token=TOKEN),
        [(pb_grpc.add_CrawlerServiceServicer_to_server, TwoMessages(), NAME)],
        service_name="crawler",
    )
    http, port = serve_metrics("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient() as client:
            before = (await client.get(url)).text
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.CrawlerServiceStub(channel)
            auth = [("x-zx-service-token", TOKEN)]
            assert (
                len([m async for m in stub.BuildDataset(pb.BuildDatasetRequest(prompt="p"), metadata=auth)])
                == 2
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ListCatalog(pb.ListCatalogRequest(), metadata=auth)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ListCatalog(pb.ListCatalogRequest())  # no token
        async with httpx.AsyncClient() as client:
            after = (await client.get(url)).text
    finally:
        http.shutdown()
        await server.stop(None)

    def moved(name: str, **labels: str) -> float:
        return _samples(after, name, **labels) - _samples(before, name, **labels)

    stream = {"grpc_service": NAME, "grpc_method": "BuildDataset", "grpc_type": "server_stream"}
    assert moved("grpc_server_started_total", **stream) == 1
    assert moved("grpc_server_handled_total", grpc_code="OK", **stream) == 1
    assert moved("grpc_server_msg_sent_total", **stream) == 2
    assert moved("grpc_server_handling_seconds_count", **stream) == 1
    unary = {"grpc_service": NAME, "grpc_method": "ListCatalog", "grpc_type": "unary"}
    assert moved("grpc_server_handled_total", grpc_code="NOT_FOUND", **unary) == 1
    assert moved("grpc_server_handled_total", grpc_code="UNAUTHENTICATED", **unary) == 1
    assert _samples(after, "zx_grpc_server_in_flight_rpcs", grpc_service=NAME) == 0
    assert _samples(after, "process_cpu_seconds_total") > 0  # prometheus-client's own process metrics
