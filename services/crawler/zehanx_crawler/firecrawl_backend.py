"""Firecrawl (firecrawl-py 4.53, v2 API) behind the :class:`~zehanx_crawler.web.WebBackend` port.

Search finds candidate pages, scrape returns a page's raw HTML and links, crawl walks a site; the HTML goes
through the same table parsers as the local crawler. The SDK is synchronous (``requests``), so each call
runs in a worker thread; crawls are polled here (not with the SDK's blocking ``crawl``) so a cancelled or
timed-out build cancels the crawl job too.

Firecrawl fetches pages itself, so the crawler cannot pin the address it connects to; instead every URL is
checked by the local fetcher's egress policy (:class:`~zehanx_crawler.egress.EgressGuard`) before it is
handed to Firecrawl, and the URL a page says it finally came from (after Firecrawl followed redirects) is
checked again before its HTML is used. That matters for a self-hosted ``firecrawl_api_url`` inside the
internal network.

Errors become clear statuses:

=====================  ===================  =============================================
Firecrawl              status               reason
=====================  ===================  =============================================
401                    FAILED_PRECONDITION  FIRECRAWL_UNAUTHORIZED (the API key is wrong)
402                    RESOURCE_EXHAUSTED   FIRECRAWL_PAYMENT_REQUIRED (out of credits)
429 (after retries)    RESOURCE_EXHAUSTED   FIRECRAWL_RATE_LIMITED
403 website            FAILED_PRECONDITION  FIRECRAWL_WEBSITE_NOT_SUPPORTED
408, client timeout    DEADLINE_EXCEEDED    FIRECRAWL_TIMEOUT
5xx, connection error  UNAVAILABLE          FIRECRAWL_UNAVAILABLE
other                  FAILED_PRECONDITION  FIRECRAWL_ERROR
=====================  ===================  =============================================
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from firecrawl import Firecrawl
from firecrawl.v2.types import PaginationConfig, ScrapeOptions
from firecrawl.v2.utils.error_handler import (
    CrawlJobTimeoutError,
    FirecrawlError,
    InternalServerError,
    PaymentRequiredError,
    RateLimitError,
    RequestTimeoutError,
    UnauthorizedError,
    WebsiteNotSupportedError,
)
from zehanx_runtime.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)

from zehanx_crawler.egress import EgressGuard
from zehanx_crawler.web import ScrapedPage, SearchHit

T = TypeVar("T")


def map_error(exc: BaseException, action: str) -> DomainError:
    """A Firecrawl SDK exception as a domain error (secrets never appear: the SDK puts none in messages)."""
    detail = str(exc).strip() or type(exc).__name__
    meta = {"backend": "firecrawl", "action": action}
    status = getattr(exc, "status_code", None)
    if status is not None:
        meta["http_status"] = str(status)
    if isinstance(exc, UnauthorizedError):
        return FailedPrecondition(
            f"Firecrawl rejected the API key while trying to {action} (401); check FIRECRAWL_API_KEY",
            reason="FIRECRAWL_UNAUTHORIZED", metadata=meta,
        )  # fmt: skip
    if isinstance(exc, PaymentRequiredError):
        return ResourceExhausted(
            f"Firecrawl needs payment to {action} (402: the account is out of credits): {detail}",
            reason="FIRECRAWL_PAYMENT_REQUIRED", metadata=meta,
        )  # fmt: skip
    if isinstance(exc, RateLimitError):
        return ResourceExhausted(
            f"Firecrawl rate limit hit while trying to {action} (429), retries exhausted: {detail}",
            reason="FIRECRAWL_RATE_LIMITED", metadata=meta,
        )  # fmt: skip
    if isinstance(exc, WebsiteNotSupportedError):
        return FailedPrecondition(
            f"Firecrawl does not support this website ({detail})", reason="FIRECRAWL_WEBSITE_NOT_SUPPORTED",
            metadata=meta,
        )  # fmt: skip
    if isinstance(exc, RequestTimeoutError | CrawlJobTimeoutError | requests.Timeout | TimeoutError):
        return DeadlineExceeded(
            f"Firecrawl timed out while trying to {action}: {detail}",
            reason="FIRECRAWL_TIMEOUT",
            metadata=meta,
        )
    if isinstance(exc, InternalServerError | requests.ConnectionError) or (
        status is not None and status >= 500
    ):
        return Unavailable(
            f"Firecrawl is unavailable ({detail}) while trying to {action}", reason="FIRECRAWL_UNAVAILABLE",
            metadata=meta,
        )  # fmt: skip
    if isinstance(exc, requests.RequestException):
        return Unavailable(
            f"Firecrawl request failed while trying to {action}: {detail}",
            reason="FIRECRAWL_UNAVAILABLE",
            metadata=meta,
        )
    return FailedPrecondition(
        f"Firecrawl failed to {action}: {detail}", reason="FIRECRAWL_ERROR", metadata=meta
    )


def _page(doc: Any, fallback_url: str) -> ScrapedPage:
    metadata = doc.metadata_typed
    html = doc.raw_html or doc.html or ""
    return ScrapedPage(
        url=metadata.source_url or metadata.url or fallback_url,
        html=html,
        links=list(doc.links or []),
        status=metadata.status_code or 200,
        content_type=(metadata.content_type or "text/html").split(";")[0],
        title=metadata.title or "",
    )


class FirecrawlBackend:
    """Search, scrape and crawl through Firecrawl."""

    name = "firecrawl"

    def __init__(
        self,
        api_key: str | None,
        *,
        guard: EgressGuard | None = None,
        api_url: str = "https://api.firecrawl.dev",
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        poll_interval_s: float = 2.0,
    ) -> None:
        # max_retries=1: the SDK's own loop only retries 502; 429 and timeouts are retried here.
        self._client = Firecrawl(api_key=api_key or None, api_url=api_url, timeout=timeout_s, max_retries=1)
        #: The egress policy for the URLs handed to Firecrawl (default: public addresses only).
        self._guard = guard or EgressGuard()
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._poll_s = poll_interval_s

    async def _call(self, action: str, fn: Callable[[], T]) -> T:
        for attempt in range(self._retries + 1):
            try:
                return await asyncio.to_thread(fn)
            except (RateLimitError, InternalServerError, requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self._retries:
                    raise map_error(exc, action) from None
                await asyncio.sleep(self._backoff_s * (2**attempt) * (0.5 + random.random() / 2))
            except (FirecrawlError, requests.RequestException, TimeoutError) as exc:
                raise map_error(exc, action) from None
        raise AssertionError("unreachable")

    async def search(self, query: str, limit: int) -> list[SearchHit]:
        data = await self._call("search", lambda: self._client.search(query, limit=limit))
        hits = []
        for item in data.web or []:
            url = getattr(item, "url", None) or getattr(getattr(item, "metadata", None), "url", None)
            if url:
                hits.append(
                    SearchHit(
                        url=url,
                        title=getattr(item, "title", "") or "",
                        description=getattr(item, "description", "") or "",
                    )
                )
        return hits

    async def _check_landing(self, doc: Any, url: str) -> None:
        """Refuse a page Firecrawl reached somewhere else than ``url`` (a redirect) when that is refused."""
        metadata = doc.metadata_typed
        for landed in {metadata.url, metadata.source_url} - {None, "", url}:
            await self._guard.check_url(str(landed))

    async def scrape(self, url: str) -> ScrapedPage:
        await self._guard.check_url(url)
        doc = await self._call(
            f"scrape {url}",
            lambda: self._client.scrape(
                url, formats=["rawHtml", "links"], timeout=int(self._timeout_s * 1000)
            ),
        )
        await self._check_landing(doc, url)
        return _page(doc, url)

    async def crawl(self, url: str, limit: int) -> list[ScrapedPage]:
        await self._guard.check_url(url)
        options = ScrapeOptions(formats=["rawHtml", "links"])
        job = await self._call(
            f"crawl {url}", lambda: self._client.start_crawl(url, limit=limit, scrape_options=options)
        )
        job_id = job.id
        finished = False
        try:
            async with asyncio.timeout(self._timeout_s * 5):
                while True:
                    status = await self._call(
                        "poll a crawl",
                        lambda: self._client.get_crawl_status(
                            job_id, pagination_config=PaginationConfig(auto_paginate=False)
                        ),
                    )
                    if status.status in ("completed", "failed", "cancelled"):
                        break
                    await asyncio.sleep(self._poll_s)
            finished = True
        except TimeoutError:
            raise DeadlineExceeded(
                f"Firecrawl crawl of {url} did not finish within {self._timeout_s * 5:.0f} s",
                reason="FIRECRAWL_TIMEOUT",
                metadata={"backend": "firecrawl", "action": "crawl"},
            ) from None
        finally:
            if not finished and job_id:
                try:
                    await asyncio.to_thread(self._client.cancel_crawl, job_id)
                except Exception:
                    pass
        if status.status != "completed":
            raise FailedPrecondition(
                f"Firecrawl crawl of {url} ended {status.status}", reason="FIRECRAWL_ERROR"
            )
        full = await self._call(
            "collect crawl results",
            lambda: self._client.get_crawl_status(
                job_id, pagination_config=PaginationConfig(auto_paginate=True, max_results=limit)
            ),
        )
        pages = []
        for doc in full.data:
            try:
                await self._check_landing(doc, "")
            except DomainError:
                continue  # a page on a refused address (or one that no longer resolves) is not used
            pages.append(_page(doc, url))
        return pages
