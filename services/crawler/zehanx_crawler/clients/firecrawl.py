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

Each call (a search, a scrape, a start or poll of a crawl) has one deadline, ``timeout_s``, that its
retries share: every attempt gets what is left of it as its HTTP timeout, and Firecrawl is asked to finish
the page a margin before that (the ``timeout`` of the request), so it can answer 408 before the client gives
up. A timeout ends the call; it is never retried, since it used up the deadline. 429, 500, 502, 503, 504 and
connection errors are retried with exponential backoff and jitter, at most ``retries`` times and only while
the wait and a useful attempt fit in what is left; a ``Retry-After`` is waited out exactly, and when it asks
for more than ``backoff_max_s`` or than the deadline leaves, the call fails at once with the status instead
of retrying early. (Firecrawl's docs: "5xx: Server-side errors - these are temporary and should be retried";
"The Retry-After header (if present) indicates how long to wait in seconds".) The SDK's own retry loop is
off (``max_retries=1`` means one attempt, SDK ``firecrawl/v2/utils/http_client.py:85``) and so is its
auto-resume of a 408 scrape, which could sleep up to 20 minutes (SDK ``v2/utils/auto_resume.py``).

Errors become clear statuses:

=====================  ===================  =============================================
Firecrawl              status               reason
=====================  ===================  =============================================
401                    FAILED_PRECONDITION  FIRECRAWL_UNAUTHORIZED (the API key is wrong)
402                    RESOURCE_EXHAUSTED   FIRECRAWL_PAYMENT_REQUIRED (out of credits)
429 (after retries)    RESOURCE_EXHAUSTED   FIRECRAWL_RATE_LIMITED
403 website            FAILED_PRECONDITION  FIRECRAWL_WEBSITE_NOT_SUPPORTED
408, deadline spent    DEADLINE_EXCEEDED    FIRECRAWL_TIMEOUT
5xx, connection error  UNAVAILABLE          FIRECRAWL_UNAVAILABLE (after retries)
other                  FAILED_PRECONDITION  FIRECRAWL_ERROR
=====================  ===================  =============================================
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
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
from zehanx_crawler.fetcher import retry_after_seconds
from zehanx_crawler.web import ScrapedPage, SearchHit

T = TypeVar("T")

#: Answers worth another attempt (SDK ``v2/utils/error_handler.py:187-195``: 429 is ``RateLimitError``,
#: 500 ``InternalServerError``, 502/503/504 the plain ``FirecrawlError`` with ``status_code`` set).
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Firecrawl is asked to finish a page this share of the time left before the HTTP timeout (at most
#: _SERVER_MARGIN_MAX_S), so its own 408 arrives instead of a client timeout.
_SERVER_MARGIN = 0.25
_SERVER_MARGIN_MAX_S = 10.0
#: A retry starts only when at least this much of the deadline (or a quarter of it, if shorter) is left
#: after the wait.
_MIN_ATTEMPT_S = 5.0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, requests.Timeout):  # ConnectTimeout is a ConnectionError too: a timeout first
        return False
    if isinstance(exc, requests.ConnectionError | RateLimitError | InternalServerError):
        return True
    return isinstance(exc, FirecrawlError) and getattr(exc, "status_code", None) in _RETRY_STATUS


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return retry_after_seconds(headers.get("Retry-After")) if headers is not None else None


def map_error(
    exc: BaseException, action: str, *, note: str = "", metadata: dict[str, str] | None = None
) -> DomainError:
    """A Firecrawl SDK exception as a domain error (secrets never appear: the SDK puts none in messages);
    ``note`` is added to the message (how often it was tried, why it was not tried again)."""
    error = _mapped(exc, action)
    if note or metadata:
        error = type(error)(
            error.message + note, reason=error.reason, metadata={**error.metadata, **(metadata or {})}
        )
    return error


def _mapped(exc: BaseException, action: str) -> DomainError:
    detail = (str(exc).strip() or type(exc).__name__)[:300]
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


def _ms(seconds: float) -> int:
    """A Firecrawl ``timeout``: milliseconds, a positive integer (SDK ``v2/methods/scrape.py:134``)."""
    return min(300_000, max(1, int(seconds * 1000)))  # 300000: the most search takes (search.py:122)


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
        backoff_max_s: float = 10.0,
        poll_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._api_key = api_key or None
        self._api_url = api_url
        #: The egress policy for the URLs handed to Firecrawl (default: public addresses only).
        self._guard = guard or EgressGuard()
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._poll_s = poll_interval_s
        self._clock = clock
        self._sleep = sleep

    def _client(self, http_timeout_s: float) -> Firecrawl:
        """An SDK client whose HTTP timeout is ``http_timeout_s`` (the SDK takes it per client, not per call;
        building one costs a fraction of a millisecond). ``max_retries=1``: one attempt, retries are ours."""
        return Firecrawl(api_key=self._api_key, api_url=self._api_url, timeout=http_timeout_s, max_retries=1)

    async def _call(
        self,
        action: str,
        fn: Callable[[Firecrawl, float], T],
        *,
        budget_s: float | None = None,
    ) -> T:
        """``fn(client, server_timeout_s)`` under one deadline of ``budget_s`` (default ``timeout_s``) that
        its retries share (see the module docstring)."""
        budget = self._timeout_s if budget_s is None else budget_s
        deadline = self._clock() + budget
        min_attempt = min(_MIN_ATTEMPT_S, budget / 4)
        meta = {"backend": "firecrawl", "action": action, "deadline_s": f"{budget:g}"}
        attempt = 0
        while True:
            left = deadline - self._clock()
            server_s = max(0.001, left - min(_SERVER_MARGIN_MAX_S, left * _SERVER_MARGIN))
            client = self._client(left)
            try:
                # requests' timeout is per socket read; this bounds the whole attempt by what is left.
                async with asyncio.timeout(left):
                    return await asyncio.to_thread(fn, client, server_s)
            except (TimeoutError, requests.Timeout, RequestTimeoutError) as exc:
                note = f" (the call's deadline is {budget:g} s, retries included)"
                raise map_error(exc, action, note=note, metadata=meta) from None
            except (FirecrawlError, requests.RequestException) as exc:
                if not _retryable(exc):
                    raise map_error(exc, action) from None
                if attempt >= self._retries:
                    raise map_error(exc, action, note=f" ({attempt + 1} attempts)", metadata=meta) from None
                asked = _retry_after(exc)
                if asked is not None:
                    delay = asked * (1 + random.random() / 10)  # a Retry-After is the least wait
                else:
                    delay = min(self._backoff_max_s, self._backoff_s * (2**attempt))
                    delay *= 0.5 + random.random() / 2
                left_after = deadline - self._clock() - delay
                if (asked is not None and asked > self._backoff_max_s) or left_after < min_attempt:
                    why = (
                        f"Firecrawl asked to retry after {asked:g} s"
                        if asked is not None
                        else f"the next retry would wait {delay:.1f} s"
                    )
                    note = (
                        f"; not retried: {why}, and the call's deadline of {budget:g} s leaves "
                        f"{max(0.0, deadline - self._clock()):.1f} s (longest wait {self._backoff_max_s:g} s)"
                    )
                    raise map_error(exc, action, note=note, metadata=meta) from None
                await self._sleep(delay)
                attempt += 1

    async def search(self, query: str, limit: int) -> list[SearchHit]:
        data = await self._call(
            "search", lambda client, server_s: client.search(query, limit=limit, timeout=_ms(server_s))
        )
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
            lambda client, server_s: client.scrape(
                url, formats=["rawHtml", "links"], timeout=_ms(server_s), auto_resume=False
            ),
        )
        await self._check_landing(doc, url)
        return _page(doc, url)

    async def crawl(self, url: str, limit: int) -> list[ScrapedPage]:
        await self._guard.check_url(url)
        options = ScrapeOptions(formats=["rawHtml", "links"])
        job = await self._call(
            f"crawl {url}",
            lambda client, _: client.start_crawl(url, limit=limit, scrape_options=options),
        )
        job_id = job.id
        finished = False
        crawl_deadline = self._clock() + self._timeout_s * 5
        try:
            async with asyncio.timeout(self._timeout_s * 5):
                while True:
                    status = await self._call(
                        "poll a crawl",
                        lambda client, _: client.get_crawl_status(
                            job_id, pagination_config=PaginationConfig(auto_paginate=False)
                        ),
                        budget_s=max(0.001, min(self._timeout_s, crawl_deadline - self._clock())),
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
                    await asyncio.to_thread(self._client(self._timeout_s).cancel_crawl, job_id)
                except Exception:
                    pass
        if status.status != "completed":
            raise FailedPrecondition(
                f"Firecrawl crawl of {url} ended {status.status}", reason="FIRECRAWL_ERROR"
            )
        full = await self._call(
            "collect crawl results",
            lambda client, _: client.get_crawl_status(
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
