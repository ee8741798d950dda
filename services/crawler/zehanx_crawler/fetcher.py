"""HTTP(S) fetching for the local crawler: polite, bounded, and loud when it fails.

- robots.txt is obeyed per RFC 9309 (a 4xx robots.txt allows everything; a 5xx one, after retries,
  blocks the host), including ``Crawl-delay``.
- A per-host rate limit spaces requests; redirects are followed by hand (at most 5) so every hop is
  checked again.
- Connect errors, timeouts, 429 and 5xx are retried with exponential backoff and jitter
  (``Retry-After`` honoured up to the backoff cap); 4xx are not.
- ``Content-Length`` past the size cap is refused before a byte is read; a body without one is counted
  while it streams and cut at the cap. A whole-fetch budget bounds slow-drip servers.
- Unless ``allow_private_networks`` is set, only global unicast addresses are reached, so a request cannot
  make the crawler probe the internal network. The check is part of the connection itself
  (:mod:`zehanx_crawler.egress`): every new connection resolves the name once, checks every address and
  connects to a checked one, robots.txt and each redirect hop included. Nothing is cached, so DNS
  rebinding cannot reach an address that was not checked for that connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
import urllib.robotparser
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import httpx
from prometheus_client import Counter
from zehanx_runtime.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)

from zehanx_crawler.domain import Resource
from zehanx_crawler.egress import EgressGuard

_RETRY_STATUS = {429, 500, 502, 503, 504}
_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5
# Prometheus (served by zehanx_runtime.metrics); the reason is one of the fetcher's fixed reason codes.
FETCHED_BYTES = Counter("zx_crawler_fetched_bytes_total", "Bytes of sources fetched over HTTP(S).")
FETCH_REFUSALS = Counter(
    "zx_crawler_fetch_refusals_total",
    "Fetches refused or failed, by reason (PRIVATE_ADDRESS, ROBOTS_DISALLOWED, SOURCE_TOO_LARGE, ...).",
    ["reason"],
)
_ROBOTS_MAX_BYTES = 512 * 1024
_MAX_CRAWL_DELAY_S = 30.0


class Fetcher(Protocol):
    """What the builder needs from an HTTP client (a port: tests and other backends can stand in)."""

    async def fetch(self, url: str, *, max_bytes: int | None = None) -> Resource: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class FetchPolicy:
    user_agent: str = "zehanx-crawler/0.1"
    respect_robots: bool = True
    per_host_rps: float = 2.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    fetch_timeout_s: float = 180.0
    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    max_bytes: int = 256 * 1024 * 1024
    allow_private_networks: bool = False


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (RFC 9110 10.2.3: delay-seconds or an HTTP-date) in seconds from now, or
    None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _HostLimiter:
    """At most one request per ``interval`` per host; callers queue in order."""

    def __init__(self, interval: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._interval = interval
        self._next: dict[str, float] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._sleep = sleep

    async def wait(self, host: str, interval: float | None = None) -> None:
        gap = max(self._interval, interval or 0.0)
        async with self._locks[host]:
            now = time.monotonic()
            ready = self._next.get(host, 0.0)
            if ready > now:
                await self._sleep(ready - now)
                now = time.monotonic()
            self._next[host] = now + gap


class HttpFetcher:
    """The local crawler's fetcher (httpx over the egress guard's transport)."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        guard: EgressGuard | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._policy = policy
        self._sleep = sleep
        #: Checks every connection; the Firecrawl backend checks its URLs with the same guard.
        self.guard = guard or EgressGuard(allow_private_networks=policy.allow_private_networks)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        self._client = httpx.AsyncClient(
            transport=self.guard.transport(limits=limits),
            follow_redirects=False,
            headers={"User-Agent": policy.user_agent, "Accept-Encoding": "gzip, deflate"},
            timeout=httpx.Timeout(
                connect=policy.connect_timeout_s,
                read=policy.read_timeout_s,
                write=policy.read_timeout_s,
                pool=policy.connect_timeout_s,
            ),
            trust_env=False,
        )
        self._limiter = _HostLimiter(1.0 / policy.per_host_rps, sleep)
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._robots_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: Requests actually sent (robots.txt included), for tests and benchmarks.
        self.requests_sent = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, *, max_bytes: int | None = None) -> Resource:
        cap = min(max_bytes or self._policy.max_bytes, self._policy.max_bytes)
        try:
            async with asyncio.timeout(self._policy.fetch_timeout_s):
                resource = await self._fetch(url, cap)
        except TimeoutError:
            FETCH_REFUSALS.labels("SOURCE_TIMEOUT").inc()
            raise DeadlineExceeded(
                f"{url}: not fetched within {self._policy.fetch_timeout_s:.0f} s (the whole-download budget)",
                reason="SOURCE_TIMEOUT",
                metadata={"url": url},
            ) from None
        except DomainError as exc:
            FETCH_REFUSALS.labels(exc.reason).inc()
            raise
        FETCHED_BYTES.inc(len(resource.data))
        return resource

    async def _fetch(self, url: str, cap: int) -> Resource:
        current = url
        for _hop in range(_MAX_REDIRECTS + 1):
            parts = self._check_url(current)  # the address is checked by the transport, per connection
            delay = await self._robots_allow(parts, current)
            response = await self._send(current, parts.hostname or "", delay, cap)
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                await response.aclose()
                if not location:
                    raise FailedPrecondition(
                        f"{current}: redirect without a Location", reason="SOURCE_HTTP_ERROR"
                    )
                current = urljoin(current, location)
                continue
            try:
                return await self._read(url, current, response, cap)
            finally:
                await response.aclose()
        raise FailedPrecondition(f"{url}: more than {_MAX_REDIRECTS} redirects", reason="TOO_MANY_REDIRECTS")

    # -- checks ---------------------------------------------------------------------------------

    @staticmethod
    def _check_url(url: str) -> SplitResult:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"{url!r} is not an http(s) URL", reason="INVALID_URL")
        return parts

    async def _robots_allow(self, parts: SplitResult, url: str) -> float | None:
        """Raise if robots.txt forbids ``url``; return the host's Crawl-delay, if any."""
        if not self._policy.respect_robots:
            return None
        origin = f"{parts.scheme}://{parts.netloc}"
        async with self._robots_locks[origin]:
            if origin not in self._robots:
                self._robots[origin] = await self._load_robots(origin, parts.hostname or "")
        parser = self._robots[origin]
        if parser is None:
            return None
        if not parser.can_fetch(self._policy.user_agent, url):
            raise PermissionDenied(
                f"{origin}/robots.txt disallows {url} for user agent {self._policy.user_agent!r}",
                reason="ROBOTS_DISALLOWED",
                metadata={"url": url},
            )
        delay = parser.crawl_delay(self._policy.user_agent)
        return min(float(delay), _MAX_CRAWL_DELAY_S) if delay else None

    async def _load_robots(self, origin: str, host: str) -> urllib.robotparser.RobotFileParser | None:
        robots_url = f"{origin}/robots.txt"
        try:
            response = await self._send(robots_url, host, None, _ROBOTS_MAX_BYTES, robots=True)
        except Unavailable as exc:
            if exc.reason != "SOURCE_SERVER_ERROR":
                raise
            raise Unavailable(
                f"{exc.message}; by RFC 9309 the whole host counts as disallowed until its robots.txt can be read",
                reason="ROBOTS_UNREACHABLE",
                metadata={"url": robots_url},
            ) from None
        try:
            if response.status_code != 200:
                return None  # 3xx/4xx: no rules, everything allowed
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _ROBOTS_MAX_BYTES:
                    break
        finally:
            await response.aclose()
        parser = urllib.robotparser.RobotFileParser(robots_url)
        parser.parse(bytes(body[:_ROBOTS_MAX_BYTES]).decode("utf-8", "replace").splitlines())
        return parser

    # -- transport ------------------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        cap = self._policy.backoff_max_s
        seconds = retry_after_seconds(retry_after)
        if seconds is not None:
            return min(seconds, cap)
        base = min(cap, self._policy.backoff_s * (2**attempt))
        return base * (0.5 + random.random() / 2)

    async def _send(
        self, url: str, host: str, crawl_delay: float | None, cap: int, *, robots: bool = False
    ) -> httpx.Response:
        attempts = self._policy.retries + 1
        last: str = ""
        last_kind = "unreachable"
        for attempt in range(attempts):
            await self._limiter.wait(host, crawl_delay)
            try:
                request = self._client.build_request("GET", url)
                self.requests_sent += 1
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                last, last_kind = f"timed out ({type(exc).__name__})", "timeout"
            except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
                last, last_kind = f"{type(exc).__name__}: {exc}", "unreachable"
            except httpx.HTTPError as exc:
                raise FailedPrecondition(f"{url}: {exc}", reason="SOURCE_HTTP_ERROR") from None
            else:
                if response.status_code not in _RETRY_STATUS:
                    return response
                last, last_kind = f"HTTP {response.status_code}", f"status-{response.status_code}"
                retry_after = response.headers.get("retry-after")
                await response.aclose()
                if attempt + 1 < attempts:
                    await self._sleep(self._backoff(attempt, retry_after))
                continue
            if attempt + 1 < attempts:
                await self._sleep(self._backoff(attempt, None))
        what = "robots.txt of " if robots else ""
        message = f"{what}{url}: {last} after {attempts} attempt{'s' if attempts > 1 else ''}"
        if last_kind == "timeout":
            raise DeadlineExceeded(message, reason="SOURCE_TIMEOUT", metadata={"url": url})
        if last_kind == "status-429":
            raise ResourceExhausted(
                message + " (rate limited)", reason="SOURCE_RATE_LIMITED", metadata={"url": url}
            )
        if last_kind.startswith("status-"):
            raise Unavailable(message, reason="SOURCE_SERVER_ERROR", metadata={"url": url})
        raise Unavailable(message, reason="SOURCE_UNREACHABLE", metadata={"url": url})

    async def _read(self, source: str, url: str, response: httpx.Response, cap: int) -> Resource:
        status = response.status_code
        if status >= 400:
            error: DomainError
            if status in (404, 410):
                error = NotFound(f"{url} answered {status} (not found)", reason="SOURCE_NOT_FOUND")
            elif status in (401, 403, 407):
                error = PermissionDenied(
                    f"{url} answered {status} (access denied)", reason="SOURCE_FORBIDDEN"
                )
            else:
                error = FailedPrecondition(f"{url} answered HTTP {status}", reason="SOURCE_HTTP_ERROR")
            error.metadata["url"] = url
            raise error
        if status != 200:
            raise FailedPrecondition(f"{url} answered HTTP {status}, not 200", reason="SOURCE_HTTP_ERROR")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise ResourceExhausted(
                f"{url} is {human_bytes(int(declared))}; the per-source cap is {human_bytes(cap)} "
                "(ZX_CRAWLER_MAX_SOURCE_BYTES, or the request's max_bytes)",
                reason="SOURCE_TOO_LARGE",
                metadata={"url": url, "bytes": declared, "limit_bytes": str(cap)},
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise ResourceExhausted(
                    f"{url} sent more than {human_bytes(cap)} (no or wrong Content-Length); stopped at the "
                    "per-source cap",
                    reason="SOURCE_TOO_LARGE",
                    metadata={"url": url, "limit_bytes": str(cap)},
                )
        data = bytes(body)
        content_type = response.headers.get("content-type", "")
        mime, _, params = content_type.partition(";")
        charset = None
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip().strip("\"'")
        path = urlsplit(url).path
        name = unquote(path.rsplit("/", 1)[-1]) or (urlsplit(url).hostname or "index")
        return Resource(
            uri=url,
            name=name,
            data=data,
            content_type=mime.strip().lower() or None,
            charset=charset,
            fetched_at=datetime.now(UTC),
            sha256=hashlib.sha256(data).hexdigest(),
        )
