"""The cloud web backend port: search the web for data, scrape a page, crawl a site.

The local crawler needs none of this (it fetches URLs itself); Firecrawl implements it
(:mod:`zehanx_crawler.clients.firecrawl`). Pages come back as HTML and go through the same parsers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit


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


def raw_file_url(url: str) -> str:
    """The URL of a file's bytes for a GitHub file page: ``github.com/OWNER/REPO/blob/REF/PATH`` (the HTML
    page that shows the file) and ``github.com/OWNER/REPO/raw/REF/PATH`` (a redirect) both become
    ``https://raw.githubusercontent.com/OWNER/REPO/REF/PATH``; a query (``?raw=true``, ``?plain=1``) and
    a fragment (``#L10``) are dropped. A ref with slashes stays as written, raw.githubusercontent.com
    reads it the same way. Any other URL is returned unchanged (only github.com itself is rewritten)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() != "github.com":
        return url
    if parts.port not in (None, 80, 443) or parts.username or parts.password:
        return url
    segments = parts.path.split("/")  # ['', owner, repo, 'blob'|'raw', ref, path...]
    if len(segments) < 6 or segments[3] not in ("blob", "raw") or not all(segments[1:6]):
        return url
    owner, repo, _, *rest = segments[1:]
    return urlunsplit(("https", "raw.githubusercontent.com", "/".join(["", owner, repo, *rest]), "", ""))
