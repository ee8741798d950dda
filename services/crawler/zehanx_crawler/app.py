"""Wiring: settings -> fetcher, catalogue, store, web backend, builder, servicer."""

from __future__ import annotations

from dataclasses import dataclass

from zehanx_crawler.builder import DatasetBuilder
from zehanx_crawler.catalogue import Catalogue
from zehanx_crawler.egress import EgressGuard
from zehanx_crawler.fetcher import FetchPolicy, HttpFetcher
from zehanx_crawler.servicer import CrawlerServicer
from zehanx_crawler.settings import CrawlerSettings
from zehanx_crawler.store import DatasetStore
from zehanx_crawler.uploads import UploadInbox
from zehanx_crawler.web import WebBackend


@dataclass
class CrawlerApp:
    builder: DatasetBuilder
    servicer: CrawlerServicer
    fetcher: HttpFetcher
    store: DatasetStore
    web: WebBackend | None

    @property
    def backend_description(self) -> str:
        return f"local crawler + {self.web.name}" if self.web is not None else "local crawler (no web search)"

    async def close(self) -> None:
        await self.fetcher.aclose()
        await self.builder.close()


def fetch_policy(settings: CrawlerSettings) -> FetchPolicy:
    return FetchPolicy(
        user_agent=settings.user_agent,
        respect_robots=settings.respect_robots,
        per_host_rps=settings.per_host_rps,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        fetch_timeout_s=settings.fetch_timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        backoff_max_s=settings.backoff_max_s,
        max_bytes=settings.max_source_bytes,
        allow_private_networks=settings.allow_private_networks,
    )


def web_backend(settings: CrawlerSettings, guard: EgressGuard) -> WebBackend | None:
    """Firecrawl when configured (``backend=firecrawl``, or ``auto`` with an API key), else none."""
    if not settings.use_firecrawl:
        return None
    key = settings.firecrawl_api_key.get_secret_value() if settings.firecrawl_api_key else None
    return firecrawl_backend(settings, key, guard)


def firecrawl_backend(settings: CrawlerSettings, api_key: str | None, guard: EgressGuard) -> WebBackend:
    """Firecrawl on ``api_key`` (the configured key, or a job owner's own for one build); the URLs it is
    handed are checked by ``guard``, the local fetcher's egress policy."""
    from zehanx_crawler.clients.firecrawl import FirecrawlBackend

    return FirecrawlBackend(
        api_key,
        guard=guard,
        api_url=settings.firecrawl_api_url,
        timeout_s=settings.firecrawl_timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        backoff_max_s=settings.backoff_max_s,
    )


def build(settings: CrawlerSettings, *, web: WebBackend | None = None) -> CrawlerApp:
    fetcher = HttpFetcher(fetch_policy(settings))
    web = web if web is not None else web_backend(settings, fetcher.guard)
    store = DatasetStore(settings.datasets_dir)
    uploads = UploadInbox(settings.resolved_uploads_dir)
    catalogue = Catalogue()
    builder = DatasetBuilder(
        settings,
        fetcher=fetcher,
        catalogue=catalogue,
        store=store,
        uploads=uploads,
        web=web,
        web_for_key=lambda key: firecrawl_backend(settings, key, fetcher.guard),
    )
    servicer = CrawlerServicer(builder, catalogue, store, uploads, max_upload_bytes=settings.max_source_bytes)
    return CrawlerApp(builder=builder, servicer=servicer, fetcher=fetcher, store=store, web=web)
