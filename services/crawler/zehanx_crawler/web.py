"""The cloud web backend port: search the web for data, scrape a page, crawl a site.

The local crawler needs none of this (it fetches URLs itself); Firecrawl implements it
(:mod:`zehanx_crawler.firecrawl_backend`). Pages come back as HTML and go through the same parsers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SearchHit:
    url: str
    title: str = ""
    description: str = ""


@dataclass
class ScrapedPage:
    url: str
    html: str
    links: list[str] = field(default_factory=list)
    status: int = 200
    content_type: str = "text/html"
    title: str = ""


class WebBackend(Protocol):
    name: str

    async def search(self, query: str, limit: int) -> list[SearchHit]: ...

    async def scrape(self, url: str) -> ScrapedPage: ...

    async def crawl(self, url: str, limit: int) -> list[ScrapedPage]: ...
