"""Fixtures of the crawler tests: the real shared data over a real local HTTP server, a real gRPC server.

The HTTP server serves ``../shared/data`` as it is (no charset in any Content-Type, as the data README
asks) plus a few routes that behave like bad hosts: a robots.txt that disallows a folder, a 404, a
server error, a body bigger than it says, a page linking to data files. The crawler server runs in
process on port 0 with its real builder, fetcher, store and catalogue; only its settings differ
(loopback allowed, fast retries, a temporary dataset store).
"""

from __future__ import annotations

import gzip
import http.server
import io
import ipaddress
import os
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpcore
import pytest
from zehanx.common.v1 import dataset_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as rpc
from zehanx_crawler.app import CrawlerApp, build
from zehanx_crawler.servicer import SERVICE_NAME
from zehanx_crawler.settings import CrawlerSettings
from zehanx_runtime import transfer
from zehanx_runtime.server import RunningServer, ServiceBinding, start_server

REPO = Path(__file__).resolve().parents[2]
TOKEN = "crawler-test-token"


class Internet(httpcore.AsyncNetworkBackend):
    """The network behind the crawler's egress guard: opens the sockets the guard asks for and logs every
    address it was asked for. ``routes`` sends a (public) address to a local port; loopback goes where it
    says; anything else is unreachable (there is no internet in tests)."""

    def __init__(self, routes: dict[str, int] | None = None) -> None:
        self.routes = routes or {}
        self.connects: list[str] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        *options: Any,
    ) -> httpcore.AsyncNetworkStream:
        """``options``: httpcore's ``local_address`` and ``socket_options``, passed on as they came."""
        self.connects.append(host)
        if host in self.routes:
            return await self._real.connect_tcp("127.0.0.1", self.routes[host], timeout, *options)
        if ipaddress.ip_address(host).is_loopback:
            return await self._real.connect_tcp(host, port, timeout, *options)
        raise httpcore.ConnectError(f"{host}: network unreachable (no internet in tests)")

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


def shared_data_dir() -> Path:
    return Path(os.environ.get("ZX_TEST_DATA") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "README.md").is_file():
        pytest.skip(f"the shared test data is not at {root} (set ZX_TEST_DATA)")
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the shared data read-only, plus routes that misbehave on purpose."""

    extensions_map = {"": "application/octet-stream", ".html": "text/html", ".csv": "text/csv",
                      ".txt": "text/plain", ".gz": "application/gzip"}  # fmt: skip
    hits: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "text/plain", length: int | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with self.lock:
            self.hits[self.path] = self.hits.get(self.path, 0) + 1
        path = self.path.split("?", 1)[0]
        if path == "/robots.txt":
            return self._send(200, b"User-agent: *\nDisallow: /private/\n")
        if path == "/broken":
            return self._send(500, b"internal error")
        if path == "/flaky.csv":
            if self.hits[self.path] % 2 == 1:  # fails once, then works
                return self._send(503, b"try again")
            return self._send(
                200,
                b"a,b,label\n"
                + b"".join(b"%d,%d,%s\n" % (i, i * 2, b"xy"[i % 2 : i % 2 + 1]) for i in range(40)),
                "text/csv",
            )
        if path == "/huge.csv":
            return self._send(200, b"a,b\n1,2\n", "text/csv", length=5 * 1024**3)  # claims 5 GiB
        if path == "/private/data.csv":
            return self._send(200, b"a,b\n1,2\n", "text/csv")
        if path == "/links/index.html":
            body = (
                b"<html><head><title>Spam data</title></head><body><p>No table here, but files:</p>"
                b'<a href="/data/sms_spam_collection/SMSSpamCollection.tsv">the SMS spam collection</a>'
                b'<a href="/data/sms_spam_collection/readme">readme</a>'
                b'<a href="https://elsewhere.example/data.csv">offsite</a></body></html>'
            )
            return self._send(200, body, "text/html")
        if path == "/data/sms_spam_collection/SMSSpamCollection.tsv":
            self.path = "/data/sms_spam_collection/SMSSpamCollection"
        if path.startswith("/archives/"):
            return self._archive(path)
        if not self.path.startswith("/data/"):
            return self._send(404, b"not found")
        self.path = self.path[len("/data") :]
        super().do_GET()

    def _archive(self, path: str) -> None:
        data_root = Path(self.directory)
        if path == "/archives/sentences.zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for name in (
                    "amazon_cells_labelled.txt",
                    "imdb_labelled.txt",
                    "yelp_labelled.txt",
                    "readme.txt",
                ):
                    z.write(data_root / "sentiment_labelled_sentences" / name, f"sentences/{name}")
            return self._send(200, buf.getvalue(), "application/zip")
        if path == "/archives/bomb.zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("zeros.csv", b"a,b\n" + b"0" * (64 * 1024 * 1024))
            return self._send(200, buf.getvalue(), "application/zip")
        if path == "/archives/bomb.csv.gz":
            return self._send(
                200, gzip.compress(b"a,b\n" + b"0,0\n" * (10 * 1024 * 1024)), "application/gzip"
            )
        return self._send(404, b"not found")


@dataclass
class HttpSite:
    base: str
    handler: type[_Handler]

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture(scope="session")
def http_site(shared_data: Path) -> Iterator[HttpSite]:
    handler = type("Handler", (_Handler,), {"hits": {}})

    def make(*args: Any, **kwargs: Any) -> _Handler:
        return handler(*args, directory=str(shared_data), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="shared-data-http", daemon=True)
    thread.start()
    try:
        yield HttpSite(f"http://127.0.0.1:{server.server_address[1]}", handler)
    finally:
        server.shutdown()
        server.server_close()


def crawler_settings(tmp_path: Path, shared_data: Path, **overrides: Any) -> CrawlerSettings:
    values: dict[str, Any] = {
        "port": 0,
        "service_token": TOKEN,
        "data_dir": tmp_path / "datasets",
        "local_roots": [shared_data],
        "allow_private_networks": True,
        "per_host_rps": 1000.0,
        "retries": 2,
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
        "firecrawl_api_key": None,
        "backend": "local",
        "max_uncompressed_bytes": 32 * 1024 * 1024,
    }
    values.update(overrides)
    return CrawlerSettings(**values)


@dataclass
class Crawler:
    app: CrawlerApp
    running: RunningServer
    channel: grpc.aio.Channel
    settings: CrawlerSettings

    @property
    def stub(self) -> rpc.CrawlerServiceStub:
        return rpc.CrawlerServiceStub(self.channel)

    async def build(self, prompt: str, *sources: str, **options: Any) -> list[pb.BuildDatasetResponse]:
        """Every message of a BuildDataset stream (``sources``: URLs, absolute paths, catalogue names)."""
        return [m async for m in self.stream(build_request(prompt, *sources, **options))]

    def stream(self, request: pb.BuildDatasetRequest, timeout: float = 120.0) -> Any:
        return self.stub.BuildDataset(request, metadata=[("x-zx-service-token", TOKEN)], timeout=timeout)

    async def read(self, uri: str, sha256: str | None = None) -> bytes:
        """A dataset file as another service gets it: ``ReadDatasetFile``, checked by zehanx_runtime.transfer."""
        call = self.stub.ReadDatasetFile(
            pb.ReadDatasetFileRequest(uri=uri), metadata=[("x-zx-service-token", TOKEN)], timeout=60
        )
        _, data = await transfer.receive_bytes(call, what=uri, max_bytes=1 << 30, expected_sha256=sha256)
        return data


def build_request(prompt: str, *sources: str, **options: Any) -> pb.BuildDatasetRequest:
    request = pb.BuildDatasetRequest(prompt=prompt)
    for source in sources:
        if source.startswith(("http://", "https://")):
            request.sources.add(url=source)
        elif source.startswith("/"):
            request.sources.add(local_path=source)
        else:
            request.sources.add(catalog_name=source)
    fractions = options.pop("split_fractions", None)
    if fractions:
        request.options.split_fractions.CopyFrom(
            dataset_pb2.SplitFractions(
                train_fraction=fractions[0], validation_fraction=fractions[1], test_fraction=fractions[2]
            )
        )
    for key, value in options.items():
        setattr(request.options, key, value)
    return request


async def start_crawler(settings: CrawlerSettings) -> Crawler:
    app = build(settings)
    running = await start_server(
        settings,
        [ServiceBinding(rpc.add_CrawlerServiceServicer_to_server, app.servicer, SERVICE_NAME)],
        service_name="crawler",
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return Crawler(app, running, channel, settings)


async def stop_crawler(crawler: Crawler) -> None:
    await crawler.channel.close()
    await crawler.running.stop(None)
    await crawler.app.close()


@pytest.fixture
async def crawler(tmp_path: Path, shared_data: Path) -> AsyncIterator[Crawler]:
    c = await start_crawler(crawler_settings(tmp_path, shared_data))
    try:
        yield c
    finally:
        await stop_crawler(c)
