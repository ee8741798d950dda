"""The Firecrawl backend (firecrawl-py 4.53.2, v2 API) against a local server that answers with recorded
response shapes: the real SDK makes real HTTP requests to it; only the server is a stand-in.

The bodies below follow the v2 API as the SDK parses them (``firecrawl/v2/methods/{search,scrape,crawl}.py``)
and as ../shared/reference/mission_anchors.md §3.2 records them.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from crawler_support import crawler_settings, start_crawler, stop_crawler
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx_crawler.egress import EgressGuard
from zehanx_crawler.firecrawl_backend import FirecrawlBackend
from zehanx_runtime.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from zehanx_runtime.status import error_info_of

pytestmark = pytest.mark.timeout(120)

KEY = "fc-test-0123456789abcdef"
BANK_URL = "https://www.fdic.gov/bank/individual/failed/banklist.html"


def _document(url: str, html: str, title: str) -> dict[str, Any]:
    """A v2 Document as /v2/scrape and /v2/crawl return it with formats rawHtml + links."""
    return {
        "rawHtml": html,
        "links": [url, "https://www.fdic.gov/about/"],
        "metadata": {
            "title": title,
            "language": "en",
            "sourceURL": url,
            "url": url,
            "statusCode": 200,
            "contentType": "text/html; charset=utf-8",
            "scrapeId": "0b6e6c9e-6b7a-4c0e-9a43-6a7b5e1c2d11",
            "proxyUsed": "basic",
            "cacheState": "miss",
            "creditsUsed": 1,
        },
    }


@dataclass
class FakeFirecrawl:
    """Routes ``(method, path)`` to queued ``(status, body, delay_s)`` answers; the last answer repeats."""

    base: str
    routes: dict[tuple[str, str], list[tuple[int, Any, float]]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def answer(self, method: str, path: str, *answers: tuple[int, Any] | tuple[int, Any, float]) -> None:
        self.routes[(method, path)] = [(a[0], a[1], a[2] if len(a) > 2 else 0.0) for a in answers]  # type: ignore[misc]

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        return [body for m, p, body, _ in self.requests if (m, p) == (method, path)]


@pytest.fixture
def firecrawl() -> Iterator[FakeFirecrawl]:
    fake = FakeFirecrawl("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            path = self.path.split("?", 1)[0]
            fake.requests.append((method, path, body, dict(self.headers)))
            queue = fake.routes.get((method, path))
            if not queue:
                status, payload, delay = 404, {"success": False, "error": f"no route {method} {path}"}, 0.0
            else:
                status, payload, delay = queue.pop(0) if len(queue) > 1 else queue[0]
            time.sleep(delay)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def _dns(private: dict[str, str] | None = None) -> Any:
    """DNS for the page URLs handed to Firecrawl (this machine resolves no public names): a public address,
    or the one ``private`` gives the name."""

    async def resolve(host: str, port: int) -> list[str]:
        return [(private or {}).get(host, "93.184.216.34")]

    return resolve


def _backend(fake: FakeFirecrawl, **kwargs: Any) -> FirecrawlBackend:
    options: dict[str, Any] = {"api_url": fake.base, "timeout_s": 5.0, "retries": 2, "backoff_s": 0.01,
                               "poll_interval_s": 0.01, "guard": EgressGuard(resolver=_dns())}  # fmt: skip
    options.update(kwargs)
    return FirecrawlBackend(KEY, **options)


async def test_search_sends_the_key_and_reads_web_results(firecrawl: FakeFirecrawl) -> None:
    firecrawl.answer("POST", "/v2/search", (200, {
        "success": True,
        "data": {"web": [
            {"url": BANK_URL, "title": "Failed Bank List | FDIC", "description": "A list of failed banks", "position": 1},
            {"url": "https://example.org/banks", "title": "Banks", "description": "", "position": 2},
        ]},
        "creditsUsed": 2,
        "id": "a2b9c0f4-1111-4222-8333-944455556666",
    }))  # fmt: skip
    hits = await _backend(firecrawl).search("failed banks dataset csv", 5)
    assert [h.url for h in hits] == [BANK_URL, "https://example.org/banks"]
    assert hits[0].title == "Failed Bank List | FDIC"
    (_, _, body, headers) = firecrawl.requests[0]
    assert body["query"] == "failed banks dataset csv" and body["limit"] == 5
    assert headers["Authorization"] == f"Bearer {KEY}"


async def test_scrape_returns_raw_html_and_links(firecrawl: FakeFirecrawl, shared_data: Path) -> None:
    html = (shared_data / "html/fdic_failed_bank_list/banklist.html").read_text(encoding="utf-8")
    firecrawl.answer(
        "POST", "/v2/scrape", (200, {"success": True, "data": _document(BANK_URL, html, "FDIC")})
    )
    page = await _backend(firecrawl).scrape(BANK_URL)
    assert page.html == html and page.url == BANK_URL and page.title == "FDIC"
    assert "https://www.fdic.gov/about/" in page.links
    assert firecrawl.calls("POST", "/v2/scrape")[0]["formats"] == ["rawHtml", "links"]


async def test_crawl_polls_until_completed_and_collects_pages(firecrawl: FakeFirecrawl) -> None:
    job = "5f1c3b2a-7d6e-4f80-9a1b-2c3d4e5f6a7b"
    firecrawl.answer(
        "POST", "/v2/crawl", (200, {"success": True, "id": job, "url": f"{firecrawl.base}/v2/crawl/{job}"})
    )
    scraping = {"success": True, "status": "scraping", "completed": 1, "total": 2, "creditsUsed": 1,
                "expiresAt": "2026-12-01T00:00:00.000Z", "next": None, "data": []}  # fmt: skip
    done = dict(scraping, status="completed", completed=2, creditsUsed=2, data=[
        _document("https://example.org/a", "<table><tr><th>x</th></tr></table>", "A"),
        _document("https://example.org/b", "<p>b</p>", "B"),
    ])  # fmt: skip
    firecrawl.answer("GET", f"/v2/crawl/{job}", (200, scraping), (200, scraping), (200, done))
    pages = await _backend(firecrawl).crawl("https://example.org/", 10)
    assert [p.url for p in pages] == ["https://example.org/a", "https://example.org/b"]
    assert firecrawl.calls("POST", "/v2/crawl")[0]["limit"] == 10
    assert len(firecrawl.calls("GET", f"/v2/crawl/{job}")) >= 3
    assert not firecrawl.calls("DELETE", f"/v2/crawl/{job}")


async def test_crawl_that_never_finishes_is_cancelled(firecrawl: FakeFirecrawl) -> None:
    job = "6f1c3b2a-7d6e-4f80-9a1b-2c3d4e5f6a7b"
    firecrawl.answer("POST", "/v2/crawl", (200, {"success": True, "id": job, "url": ""}))
    firecrawl.answer(
        "GET",
        f"/v2/crawl/{job}",
        (
            200,
            {
                "success": True,
                "status": "scraping",
                "completed": 0,
                "total": 9,
                "creditsUsed": 0,
                "next": None,
                "data": [],
            },
        ),
    )
    firecrawl.answer("DELETE", f"/v2/crawl/{job}", (200, {"success": True, "status": "cancelled"}))
    with pytest.raises(DeadlineExceeded) as info:
        await _backend(firecrawl, timeout_s=0.2).crawl("https://example.org/", 10)
    assert info.value.reason == "FIRECRAWL_TIMEOUT"
    assert firecrawl.calls("DELETE", f"/v2/crawl/{job}")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/admin",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "https://intranet.corp.test/reports",  # a name that resolves to 10.0.0.5
    ],
)
async def test_m8_firecrawl_refuses_private_urls_before_calling_the_sdk(
    firecrawl: FakeFirecrawl, url: str
) -> None:
    backend = _backend(firecrawl, guard=EgressGuard(resolver=_dns({"intranet.corp.test": "10.0.0.5"})))
    with pytest.raises(PermissionDenied) as scraped:
        await backend.scrape(url)
    with pytest.raises(PermissionDenied) as crawled:
        await backend.crawl(url, 10)
    assert scraped.value.reason == crawled.value.reason == "PRIVATE_ADDRESS"
    assert firecrawl.requests == []  # the SDK was never called


async def test_m8_firecrawl_page_that_landed_on_a_private_address_is_refused(
    firecrawl: FakeFirecrawl,
) -> None:
    """Firecrawl followed a redirect from a public page to the metadata address: its HTML is not used."""
    document = _document("http://169.254.169.254/latest/meta-data/", "<p>ami-id</p>", "metadata")
    document["metadata"]["sourceURL"] = BANK_URL
    firecrawl.answer("POST", "/v2/scrape", (200, {"success": True, "data": document}))
    with pytest.raises(PermissionDenied) as info:
        await _backend(firecrawl).scrape(BANK_URL)
    assert info.value.reason == "PRIVATE_ADDRESS"
    assert len(firecrawl.calls("POST", "/v2/scrape")) == 1


async def test_m8_firecrawl_crawl_drops_pages_on_private_addresses(firecrawl: FakeFirecrawl) -> None:
    job = "7f1c3b2a-7d6e-4f80-9a1b-2c3d4e5f6a7b"
    firecrawl.answer("POST", "/v2/crawl", (200, {"success": True, "id": job, "url": ""}))
    done = {"success": True, "status": "completed", "completed": 2, "total": 2, "creditsUsed": 2,
            "expiresAt": "2026-12-01T00:00:00.000Z", "next": None, "data": [
                _document("https://example.org/a", "<p>a</p>", "A"),
                _document("http://intranet.corp.test/secrets", "<p>internal</p>", "internal"),
            ]}  # fmt: skip
    firecrawl.answer("GET", f"/v2/crawl/{job}", (200, done))
    backend = _backend(firecrawl, guard=EgressGuard(resolver=_dns({"intranet.corp.test": "10.0.0.5"})))
    pages = await backend.crawl("https://example.org/", 10)
    assert [p.url for p in pages] == ["https://example.org/a"]


@pytest.mark.parametrize(
    ("status", "body", "error", "reason"),
    [
        (
            401,
            {"success": False, "error": "Unauthorized: Invalid token"},
            FailedPrecondition,
            "FIRECRAWL_UNAUTHORIZED",
        ),
        (
            402,
            {"success": False, "error": "Payment required to access this resource."},
            ResourceExhausted,
            "FIRECRAWL_PAYMENT_REQUIRED",
        ),
        (
            429,
            {
                "success": False,
                "error": "Rate limit exceeded. Consumed (req/min): 11, Remaining (req/min): 0. "
                "Upgrade your plan at https://firecrawl.dev/pricing for increased rate limits or please retry after "
                "11s, resets at Mon Nov 23 2026 10:00:00 GMT+0000",
            },
            ResourceExhausted,
            "FIRECRAWL_RATE_LIMITED",
        ),
        (
            500,
            {"success": False, "error": "An unexpected error occurred."},
            Unavailable,
            "FIRECRAWL_UNAVAILABLE",
        ),
        (
            403,
            {"success": False, "error": "This website is no longer supported."},
            FailedPrecondition,
            "FIRECRAWL_WEBSITE_NOT_SUPPORTED",
        ),
    ],
)
async def test_errors_map_to_clear_statuses(
    firecrawl: FakeFirecrawl, status: int, body: dict[str, Any], error: type[DomainError], reason: str
) -> None:
    firecrawl.answer("POST", "/v2/search", (status, body))
    with pytest.raises(error) as info:
        await _backend(firecrawl).search("anything", 3)
    assert info.value.reason == reason
    assert KEY not in info.value.message
    retried = status in (429, 500)
    assert len(firecrawl.calls("POST", "/v2/search")) == (3 if retried else 1)


async def test_rate_limit_then_success_is_retried(firecrawl: FakeFirecrawl) -> None:
    firecrawl.answer(
        "POST",
        "/v2/search",
        (429, {"success": False, "error": "Rate limit exceeded."}),
        (200, {"success": True, "data": {"web": [{"url": BANK_URL, "title": "t", "description": ""}]}}),
    )
    hits = await _backend(firecrawl).search("banks", 3)
    assert [h.url for h in hits] == [BANK_URL]


async def test_slow_answer_is_a_timeout(firecrawl: FakeFirecrawl) -> None:
    firecrawl.answer("POST", "/v2/search", (200, {"success": True, "data": {"web": []}}, 3.0))
    with pytest.raises(DeadlineExceeded) as info:
        await _backend(firecrawl, timeout_s=0.5, retries=0).search("banks", 3)
    assert info.value.reason == "FIRECRAWL_TIMEOUT"


async def test_build_dataset_through_firecrawl_search_and_scrape(
    firecrawl: FakeFirecrawl, tmp_path: Path, shared_data: Path
) -> None:
    html = (shared_data / "html/fdic_failed_bank_list/banklist.html").read_text(encoding="utf-8")
    firecrawl.answer("POST", "/v2/search", (200, {"success": True, "data": {"web": [
        {"url": BANK_URL, "title": "Failed Bank List", "description": "banks that failed since 2000"}]}}))  # fmt: skip
    firecrawl.answer(
        "POST",
        "/v2/scrape",
        (200, {"success": True, "data": _document(BANK_URL, html, "FDIC: Failed Bank List")}),
    )
    settings = crawler_settings(
        tmp_path,
        shared_data,
        backend="firecrawl",
        firecrawl_api_key=KEY,
        firecrawl_api_url=firecrawl.base,
        firecrawl_timeout_s=10.0,
    )
    crawler = await start_crawler(settings)
    try:
        messages = [
            m
            async for m in crawler.stream(
                pb.BuildDatasetRequest(prompt="which state did a failed bank operate in")
            )
        ]
        dataset = messages[-1].dataset
        assert dataset.profile.row_count == 506
        assert dataset.target_column == "ST"
        assert dataset.provenance[0].source == BANK_URL
        assert "firecrawl" in dataset.explanation
        assert any(
            m.progress.phase == pb.DATASET_BUILD_PHASE_SEARCHING and "firecrawl" in m.progress.message
            for m in messages[:-1]
        )

        firecrawl.answer(
            "POST", "/v2/search", (401, {"success": False, "error": "Unauthorized: Invalid token"})
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in crawler.stream(
                pb.BuildDatasetRequest(prompt="which state did a failed bank operate in")
            ):
                pass
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_of(info.value).reason == "FIRECRAWL_UNAUTHORIZED"  # type: ignore[union-attr]
        assert KEY not in info.value.details()
    finally:
        await stop_crawler(crawler)


async def test_a_job_owners_own_firecrawl_key_is_used_for_that_build_only(
    firecrawl: FakeFirecrawl, tmp_path: Path, shared_data: Path
) -> None:
    """The gateway sends a job owner's key as x-zx-firecrawl-api-key: the build searches Firecrawl with
    it even on a crawler configured without Firecrawl; a build without it never calls Firecrawl."""
    user_key = "fc-user-9f8e7d6c5b4a39281706"
    firecrawl.answer("POST", "/v2/search", (401, {"success": False, "error": "Unauthorized: Invalid token"}))
    settings = crawler_settings(
        tmp_path, shared_data, backend="local", firecrawl_api_key=None, firecrawl_api_url=firecrawl.base
    )
    crawler = await start_crawler(settings)
    try:
        request = pb.BuildDatasetRequest(prompt="which state did a failed bank operate in")
        metadata = [("x-zx-service-token", "crawler-test-token"), ("x-zx-firecrawl-api-key", user_key)]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in crawler.stub.BuildDataset(request, metadata=metadata, timeout=60):
                pass
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_of(info.value).reason == "FIRECRAWL_UNAUTHORIZED"  # type: ignore[union-attr]
        assert user_key not in (info.value.details() or "")
        assert [headers.get("Authorization") for m, p, _, headers in firecrawl.requests] == [
            f"Bearer {user_key}"
        ]

        # Without the header: the configured (local) backend, and Firecrawl hears nothing.
        messages = [
            m async for m in crawler.stream(pb.BuildDatasetRequest(prompt="predict the species of a penguin"))
        ]
        assert messages[-1].HasField("dataset")
        assert len(firecrawl.requests) == 1
    finally:
        await stop_crawler(crawler)
