"""The Firecrawl backend (firecrawl-py 4.53.2, v2 API) against a local server that answers with recorded
response shapes: the real SDK makes real HTTP requests to it; only the server is a stand-in.

The bodies below follow the v2 API as the SDK parses them (``firecrawl/v2/methods/{search,scrape,crawl}.py``)
and as ../shared/reference/mission_anchors.md §3.2 records them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from crawler_support import Internet, crawler_settings, start_crawler, stop_crawler
from support.http_stand_in import QuietHandler, serve_http
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx_crawler.app import fetch_policy
from zehanx_crawler.builder import DatasetBuilder
from zehanx_crawler.catalogue import Catalogue
from zehanx_crawler.clients.firecrawl import FirecrawlBackend
from zehanx_crawler.domain import BuildRequest, BuiltDataset, Resource, Source, SourceKind
from zehanx_crawler.egress import EgressGuard
from zehanx_crawler.fetcher import HttpFetcher
from zehanx_crawler.store import DatasetStore
from zehanx_crawler.web import raw_file_url
from zehanx_runtime.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    NotFound,
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


Answer = tuple[int, Any, float, dict[str, str]]


@dataclass
class FakeFirecrawl:
    """Routes ``(method, path)`` to queued ``(status, body, delay_s, headers)`` answers (delay and headers
    optional); the last answer repeats. A ``str`` body is sent as HTML (a load balancer's error page), any
    other body as JSON."""

    base: str
    routes: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def answer(self, method: str, path: str, *answers: tuple[Any, ...]) -> None:
        self.routes[(method, path)] = [
            (a[0], a[1], a[2] if len(a) > 2 else 0.0, a[3] if len(a) > 3 else {}) for a in answers
        ]

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        return [body for m, p, body, _ in self.requests if (m, p) == (method, path)]


@pytest.fixture
def firecrawl() -> Iterator[FakeFirecrawl]:
    fake = FakeFirecrawl("")

    class Handler(QuietHandler):
        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            path = self.path.split("?", 1)[0]
            fake.requests.append((method, path, body, dict(self.headers)))
            queue = fake.routes.get((method, path))
            headers: dict[str, str] = {}
            if not queue:
                status, payload, delay = 404, {"success": False, "error": f"no route {method} {path}"}, 0.0
            else:
                status, payload, delay, headers = queue.pop(0) if len(queue) > 1 else queue[0]
            time.sleep(delay)
            html = isinstance(payload, str)
            data = payload.encode() if html else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header(
                    "Content-Type", "text/html; charset=UTF-8" if html else "application/json; charset=utf-8"
                )
                for name, value in headers.items():
                    self.send_header(name, value)
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

    with serve_http(Handler) as port:
        fake.base = f"http://127.0.0.1:{port}"
        yield fake


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


# -- issue 16: 502/503/504 retried within one deadline, data on other hosts, GitHub blob links ----------
#
# Sources of the stand-in's answers:
# - Firecrawl error catalogue (https://docs.firecrawl.dev/api-reference/errors.md): "All non-2xx responses
#   return JSON with a top-level `success: false` and a string `error`."
# - Firecrawl error-handling guide (developer-guides/advanced-guides/error-handling-and-retries): "5xx:
#   Server-side errors - these are temporary and should be retried"; "The Retry-After header (if present)
#   indicates how long to wait in seconds".
# - A 502 from api.firecrawl.dev in front of the API is the load balancer's HTML page, not JSON
#   (firecrawl/firecrawl#1029 quotes it: "<title>502 Server Error</title> ... The server encountered a
#   temporary error and could not complete your request.<p>Please try again in 30 seconds.").
# - The SDK reads any of these as: non-JSON body -> "Server returned non-JSON response: ..." (SDK
#   firecrawl/v2/utils/error_handler.py:149-158); 502/503/504 -> the plain FirecrawlError carrying
#   status_code (error_handler.py:193-195), which the old adapter never retried; its own loop retries
#   nothing with max_retries=1 (v2/utils/http_client.py:85, num_attempts = max(1, retries)).

GFE_502 = (
    '<html><head>\n<meta http-equiv="content-type" content="text/html;charset=utf-8">\n'
    "<title>502 Server Error</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n"
    "<h1>Error: Server Error</h1>\n<h2>The server encountered a temporary error and could not complete your "
    "request.<p>Please try again in 30 seconds.</h2>\n<h2></h2>\n</body></html>"
)  # firecrawl/firecrawl#1029
UNAVAILABLE_503 = {"success": False, "error": "Service Unavailable"}  # docs: success false + error string
GATEWAY_TIMEOUT_504 = "<html><body><h1>504 Gateway Time-out</h1></body></html>"  # a proxy's page, not JSON


class FakeTime:
    """The backend's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _fake_time_backend(fake: FakeFirecrawl, clock: FakeTime, **kwargs: Any) -> FirecrawlBackend:
    return _backend(fake, clock=clock.clock, sleep=clock.sleep, **kwargs)


def _scraped(url: str, html: str) -> tuple[int, Any]:
    return 200, {"success": True, "data": _document(url, html, "page")}


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_scrape_answered_5xx_then_200_succeeds_after_a_retry(
    firecrawl: FakeFirecrawl, status: int
) -> None:
    body = {502: GFE_502, 503: UNAVAILABLE_503, 504: GATEWAY_TIMEOUT_504}[status]
    firecrawl.answer("POST", "/v2/scrape", (status, body), _scraped(BANK_URL, "<p>ok</p>"))
    clock = FakeTime()
    page = await _fake_time_backend(firecrawl, clock, timeout_s=30.0, backoff_s=0.5).scrape(BANK_URL)
    assert page.html == "<p>ok</p>"
    assert len(firecrawl.calls("POST", "/v2/scrape")) == 2
    assert len(clock.sleeps) == 1 and 0.25 <= clock.sleeps[0] <= 0.5  # backoff_s with jitter


async def test_502_on_every_attempt_is_unavailable_after_the_retries(firecrawl: FakeFirecrawl) -> None:
    firecrawl.answer("POST", "/v2/scrape", (502, GFE_502))
    clock = FakeTime()
    with pytest.raises(Unavailable) as info:
        await _fake_time_backend(firecrawl, clock, timeout_s=60.0, retries=2).scrape(BANK_URL)
    assert info.value.reason == "FIRECRAWL_UNAVAILABLE"
    assert info.value.metadata["http_status"] == "502" and "3 attempts" in info.value.message
    assert len(firecrawl.calls("POST", "/v2/scrape")) == 3


async def test_503_retry_after_is_waited_out_then_the_call_succeeds(firecrawl: FakeFirecrawl) -> None:
    firecrawl.answer(
        "POST", "/v2/search", (503, UNAVAILABLE_503, 0.0, {"Retry-After": "3"}),
        (200, {"success": True, "data": {"web": [{"url": BANK_URL, "title": "t", "description": ""}]}}),
    )  # fmt: skip
    clock = FakeTime()
    hits = await _fake_time_backend(firecrawl, clock, timeout_s=30.0, backoff_s=0.01).search("banks", 3)
    assert [h.url for h in hits] == [BANK_URL]
    assert len(clock.sleeps) == 1 and 3.0 <= clock.sleeps[0] <= 3.3  # the asked wait (plus <= 10 % jitter)


async def test_503_retry_after_longer_than_the_deadline_leaves_fails_at_once(
    firecrawl: FakeFirecrawl,
) -> None:
    """Retrying before the asked time would only be refused again; waiting past the deadline is not allowed."""
    firecrawl.answer("POST", "/v2/scrape", (503, UNAVAILABLE_503, 0.0, {"Retry-After": "120"}))
    clock = FakeTime()
    with pytest.raises(Unavailable) as info:
        await _fake_time_backend(firecrawl, clock, timeout_s=30.0, backoff_max_s=60.0).scrape(BANK_URL)
    assert "asked to retry after 120 s" in info.value.message
    assert clock.sleeps == [] and len(firecrawl.calls("POST", "/v2/scrape")) == 1


async def test_retries_share_one_deadline_and_each_attempt_gets_what_is_left(
    firecrawl: FakeFirecrawl,
) -> None:
    """Two 502s, then a page: three attempts, each asking Firecrawl to finish within less than the one
    before (the time slept is gone), all of it within the one deadline."""
    firecrawl.answer("POST", "/v2/scrape", (502, GFE_502), (502, GFE_502), _scraped(BANK_URL, "<p>ok</p>"))
    clock = FakeTime()
    backend = _fake_time_backend(firecrawl, clock, timeout_s=20.0, retries=5, backoff_s=2.0)
    await backend.scrape(BANK_URL)
    asked = [body["timeout"] for body in firecrawl.calls("POST", "/v2/scrape")]
    assert len(asked) == 3
    assert asked[0] == 15_000  # 20 s less the margin (a quarter) that lets Firecrawl answer 408 in time
    assert asked[0] > asked[1] > asked[2]
    assert sum(clock.sleeps) + asked[2] / 1000 <= 20.0


async def test_a_retry_that_would_not_fit_in_the_deadline_is_not_made(firecrawl: FakeFirecrawl) -> None:
    firecrawl.answer("POST", "/v2/scrape", (502, GFE_502))
    clock = FakeTime()
    with pytest.raises(Unavailable) as info:
        await _fake_time_backend(
            firecrawl, clock, timeout_s=10.0, retries=3, backoff_s=20.0, backoff_max_s=60.0
        ).scrape(BANK_URL)
    assert "not retried" in info.value.message
    assert clock.sleeps == [] and len(firecrawl.calls("POST", "/v2/scrape")) == 1


async def test_a_slow_page_costs_one_deadline_not_one_per_retry(firecrawl: FakeFirecrawl) -> None:
    """The old adapter retried client timeouts 3 times at the full timeout each (4 x 60 s for one page).
    Now the first attempt has the whole deadline and its timeout ends the call: one request to Firecrawl,
    which was asked to finish the page before the client gives up."""
    firecrawl.answer("POST", "/v2/scrape", (*_scraped(BANK_URL, "<p>late</p>"), 3.0))
    with pytest.raises(DeadlineExceeded) as info:
        await _backend(firecrawl, timeout_s=0.5, retries=3).scrape(BANK_URL)
    assert info.value.reason == "FIRECRAWL_TIMEOUT"
    assert info.value.metadata["deadline_s"] == "0.5"
    calls = firecrawl.calls("POST", "/v2/scrape")
    assert len(calls) == 1
    assert 0 < calls[0]["timeout"] < 500  # Firecrawl's own limit falls inside the client's deadline


async def test_408_from_firecrawl_is_a_timeout_and_is_not_retried(firecrawl: FakeFirecrawl) -> None:
    # docs.firecrawl.dev/api-reference/errors: 408 "Request Timeout": the page took longer than the
    # request's timeout; SDK error_handler.py:184-186 -> RequestTimeoutError.
    firecrawl.answer("POST", "/v2/scrape", (408, {"success": False, "error": "Request timed out"}))
    with pytest.raises(DeadlineExceeded) as info:
        await _backend(firecrawl, timeout_s=30.0, retries=3).scrape(BANK_URL)
    assert info.value.reason == "FIRECRAWL_TIMEOUT"
    assert len(firecrawl.calls("POST", "/v2/scrape")) == 1
    assert 22_000 < firecrawl.calls("POST", "/v2/scrape")[0]["timeout"] <= 22_500  # 30 s less a quarter


@pytest.mark.parametrize(
    ("url", "raw"),
    [
        ("https://github.com/owner/repo/blob/main/data/x.csv",
         "https://raw.githubusercontent.com/owner/repo/main/data/x.csv"),
        ("https://github.com/owner/repo/raw/v1.2/x.csv?raw=true",
         "https://raw.githubusercontent.com/owner/repo/v1.2/x.csv"),
        ("https://github.com/owner/repo/blob/feature/a/x.csv#L10",
         "https://raw.githubusercontent.com/owner/repo/feature/a/x.csv"),
        ("https://github.com/owner/repo/tree/main/data", "https://github.com/owner/repo/tree/main/data"),
        ("https://gist.github.com/owner/repo/blob/main/x.csv", "https://gist.github.com/owner/repo/blob/main/x.csv"),
        ("https://example.org/owner/repo/blob/main/x.csv", "https://example.org/owner/repo/blob/main/x.csv"),
    ],
)  # fmt: skip
def test_github_file_pages_become_raw_urls_and_nothing_else_changes(url: str, raw: str) -> None:
    assert raw_file_url(url) == raw


# A build whose page is scraped by Firecrawl and whose data files are fetched by the crawler itself.

CATALOG_URL = "https://catalog.data.test/dataset/penguins"
DATA_HOST = "data.agency.test"  # a public host of its own: resolved to a public address by the stand-in
DATA_PUBLIC = "93.184.216.35"


@pytest.fixture
def data_host(shared_data: Path) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """The agency's file server: penguins.csv under /files/, robots.txt 404 (everything allowed)."""
    log: list[tuple[str, str]] = []
    csv = (shared_data / "palmer_penguins/penguins.csv").read_bytes()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            log.append((self.path, self.headers.get("Host", "")))
            status, data = (200, csv) if self.path == "/files/penguins.csv" else (404, b"not found")
            self.reply(status, data, "text/csv")

    with serve_http(Handler) as port:
        yield port, log


async def _build(builder: DatasetBuilder, prompt: str, url: str) -> BuiltDataset:
    async for item in builder.build(BuildRequest(prompt=prompt, sources=(Source(SourceKind.URL, url),))):
        if isinstance(item, BuiltDataset):
            return item
    raise AssertionError("the build ended without a dataset")


async def test_page_linking_data_on_another_host_gets_the_data_through_the_egress_guard(
    firecrawl: FakeFirecrawl, tmp_path: Path, shared_data: Path, data_host: tuple[int, list[tuple[str, str]]]
) -> None:
    """A catalogue page (no table) links its CSV on the agency's host: the link is followed (it used to be
    dropped as another host's) and fetched by the crawler over the guarded transport, which resolved the
    name and connected only to the vetted public address."""
    port, log = data_host
    page = (
        "<html><head><title>Palmer penguins</title></head><body><p>Size measurements of penguins.</p>"
        f'<a href="http://{DATA_HOST}/files/penguins.csv">CSV</a>'
        '<a href="http://metadata.internal.test/latest/data.csv">mirror</a></body></html>'
    )
    firecrawl.answer("POST", "/v2/scrape", _scraped(CATALOG_URL, page))
    internet = Internet({DATA_PUBLIC: port})
    guard = EgressGuard(
        resolver=_dns({DATA_HOST: DATA_PUBLIC, "metadata.internal.test": "169.254.169.254"}),
        connector=internet,
    )
    settings = crawler_settings(tmp_path, shared_data, allow_private_networks=False, backend="firecrawl")
    fetcher = HttpFetcher(fetch_policy(settings), guard=guard)
    builder = DatasetBuilder(
        settings, fetcher=fetcher, catalogue=Catalogue(), store=DatasetStore(settings.datasets_dir),
        web=_backend(firecrawl, guard=guard),
    )  # fmt: skip
    try:
        dataset = await _build(builder, "predict the species of a penguin", CATALOG_URL)
    finally:
        await builder.close()
        await fetcher.aclose()
    assert dataset.provenance[0].uri == f"http://{DATA_HOST}/files/penguins.csv"
    assert dataset.target == "species" and dataset.profile["rows"] > 300
    assert log == [("/robots.txt", DATA_HOST), ("/files/penguins.csv", DATA_HOST)]
    assert set(internet.connects) == {DATA_PUBLIC}  # the metadata-address link was refused before connecting


@dataclass
class RecordingFetcher:
    """The builder's Fetcher port: serves ``files`` by URL and records every URL it was asked for."""

    files: dict[str, bytes]
    requested: list[str] = field(default_factory=list)

    async def fetch(self, url: str, *, max_bytes: int | None = None) -> Resource:
        self.requested.append(url)
        if url not in self.files:
            raise NotFound(f"{url} answered 404 (not found)", reason="SOURCE_NOT_FOUND")
        data = self.files[url]
        return Resource(uri=url, name=url.rsplit("/", 1)[-1], data=data, content_type="text/plain",
                        fetched_at=datetime.now(UTC), sha256=hashlib.sha256(data).hexdigest())  # fmt: skip

    async def aclose(self) -> None:
        pass


async def test_github_blob_link_is_fetched_from_raw_githubusercontent(
    firecrawl: FakeFirecrawl, tmp_path: Path, shared_data: Path
) -> None:
    """github.com/.../blob/... is GitHub's HTML page around the file; the fetcher is asked for the raw URL."""
    blob = "https://github.com/allisonhorst/palmerpenguins/blob/main/inst/extdata/penguins.csv"
    raw = "https://raw.githubusercontent.com/allisonhorst/palmerpenguins/main/inst/extdata/penguins.csv"
    page = f'<html><body><p>Penguin data, see <a href="{blob}">penguins.csv</a>.</p></body></html>'
    firecrawl.answer("POST", "/v2/scrape", _scraped(CATALOG_URL, page))
    fetcher = RecordingFetcher({raw: (shared_data / "palmer_penguins/penguins.csv").read_bytes()})
    settings = crawler_settings(tmp_path, shared_data, backend="firecrawl")
    builder = DatasetBuilder(
        settings, fetcher=fetcher, catalogue=Catalogue(), store=DatasetStore(settings.datasets_dir),
        web=_backend(firecrawl),
    )  # fmt: skip
    try:
        dataset = await _build(builder, "predict the species of a penguin", CATALOG_URL)
    finally:
        await builder.close()
    assert fetcher.requested == [raw]
    assert dataset.provenance[0].uri == raw and dataset.target == "species"
