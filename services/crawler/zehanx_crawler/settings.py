"""Settings of the crawler service (environment prefix ``ZX_CRAWLER_``), built once at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from zehanx_runtime.settings import ServiceSettings

MiB = 1024 * 1024


def _default_home() -> Path:
    return Path(os.environ.get("ZX_HOME") or "~/.zehanx").expanduser()


class CrawlerSettings(ServiceSettings):
    """Everything the crawler reads from its environment. Domain code gets values from here, never env."""

    model_config = SettingsConfigDict(env_prefix="ZX_CRAWLER_", extra="ignore")

    port: int = Field(47102, ge=0, le=65535, description="Port of the crawler service.")
    data_dir: Path | None = Field(
        None,
        description="Dataset store folder; unset means $ZX_HOME/datasets (ZX_HOME defaults to ~/.zehanx).",
    )
    uploads_dir: Path | None = Field(
        None,
        description="Where files the gateway sends with PutSourceFile (users' uploads) are kept; unset: "
        "<data folder>/uploads.",
    )
    default_seed: int = Field(42, ge=0, description="Split seed used when a request does not give one.")
    build_timeout_s: float = Field(
        600.0, gt=0, le=86_400, description="Wall-clock budget of one BuildDataset."
    )

    # Sources on this machine.
    local_roots: list[Path] = Field(
        default_factory=list,
        description="Folders that local_path sources may read (checked as written, then after resolving "
        "symlinks; /proc, /dev and /sys never). Empty: local paths are refused, so a caller of an internal "
        "service cannot read arbitrary files of the host.",
    )

    # HTTP fetching (the local crawler).
    user_agent: str = Field(
        "zehanx-crawler/0.1", description="User-Agent sent with every request and matched against robots.txt."
    )
    respect_robots: bool = Field(
        True, description="Obey robots.txt (a missing robots.txt allows everything)."
    )
    per_host_rps: float = Field(2.0, gt=0, le=1000, description="Requests per second per host, at most.")
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="TCP/TLS connect timeout per request.")
    read_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Longest wait for the next bytes of a response."
    )
    fetch_timeout_s: float = Field(180.0, gt=0, le=3600, description="Whole-download budget of one resource.")
    retries: int = Field(3, ge=0, le=10, description="Retries after a connect error, timeout, 429 or 5xx.")
    backoff_s: float = Field(
        0.5, ge=0, le=60, description="First retry delay; doubles per retry, with jitter."
    )
    backoff_max_s: float = Field(
        10.0, ge=0, le=600, description="Longest retry delay (Retry-After is capped too)."
    )
    max_source_bytes: int = Field(256 * MiB, ge=1024, description="Largest single download or file read.")
    max_total_bytes: int = Field(1024 * MiB, ge=1024, description="Most bytes one build may fetch and read.")
    allow_private_networks: bool = Field(
        False,
        description="Let URL sources (and the URLs handed to Firecrawl) reach addresses that are not global "
        "unicast: loopback, private, link-local, carrier-grade NAT, cloud metadata. Off by default so a request "
        "cannot make the crawler probe the internal network (checked on every connection); local development "
        "may turn it on.",
    )
    max_pages: int = Field(
        20,
        ge=1,
        le=1000,
        description="Pages and files fetched per source when following links from a seed page.",
    )
    max_link_depth: int = Field(1, ge=0, le=3, description="Link hops from a seed page to data files.")

    # Archives and decompression.
    max_uncompressed_bytes: int = Field(
        512 * MiB, ge=1024, description="Most bytes one archive may expand to."
    )
    max_archive_members: int = Field(
        1000,
        ge=1,
        description="Most entries one archive may list (files, folders and links all count; a zip's central "
        "directory is counted before it is read).",
    )
    # 100x: real tables compress a few times (the shared datasets under gzip -6: 2.3x to 7.4x). At 250x a 1 MB
    # gzip bomb held 250 MB in the parsing process before it was called one (bench_crawler --worst-case: 278 MB
    # peak at 250x, 129 MB at 100x).
    max_compression_ratio: float = Field(
        100.0, gt=1, description="Expansion ratio beyond which a member of more than 8 MiB is called a bomb."
    )
    max_archive_depth: int = Field(2, ge=1, le=5, description="Archives inside archives, at most this deep.")
    max_files: int = Field(200, ge=1, description="Most files read from one local folder.")

    # Tables.
    max_rows: int = Field(2_000_000, ge=1, description="Rows kept at most (a larger table is refused).")
    max_columns: int = Field(10_000, ge=1, description="Columns accepted at most.")
    max_html_cells: int = Field(
        10_000_000,
        ge=1000,
        description="Most cells the tables of one HTML page may expand to (colspan/rowspan, short rows "
        "padded), and at most max_rows x max_columns; a page past it is refused as a span bomb.",
    )

    # Parsing processes: bytes from outside are parsed and cleaned in processes the crawler can kill.
    parse_processes: int = Field(
        4,
        ge=1,
        le=64,
        description="Parsing processes at most (started with exec when needed); a build waits for a free "
        "one. A process whose build times out or is cancelled is killed and replaced.",
    )
    parse_memory_bytes: int = Field(
        4096 * MiB,
        ge=256 * MiB,
        description="Address-space cap (RLIMIT_AS) of each parsing process; a parse past it fails with "
        "RESOURCE_EXHAUSTED instead of taking the host's memory.",
    )

    # Firecrawl (cloud backend).
    backend: Literal["auto", "local", "firecrawl"] = Field(
        "auto", description="auto: Firecrawl when an API key is set, else the local crawler."
    )
    firecrawl_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ZX_CRAWLER_FIRECRAWL_API_KEY", "FIRECRAWL_API_KEY"),
        description="Firecrawl API key (FIRECRAWL_API_KEY is read too).",
    )
    firecrawl_api_url: str = Field("https://api.firecrawl.dev", description="Firecrawl API base URL.")
    firecrawl_timeout_s: float = Field(
        60.0,
        gt=0,
        le=600,
        description="Deadline of one Firecrawl call (a search, a scrape, a crawl poll), its retries included; "
        "Firecrawl is asked to finish a page a margin before it. A whole crawl gets 5 times this.",
    )
    firecrawl_search_limit: int = Field(5, ge=1, le=50, description="Search results considered per prompt.")
    firecrawl_crawl_limit: int = Field(10, ge=1, le=1000, description="Pages per Firecrawl crawl.")

    @property
    def datasets_dir(self) -> Path:
        """Where datasets are stored."""
        return (self.data_dir or _default_home() / "datasets").expanduser()

    @property
    def resolved_uploads_dir(self) -> Path:
        """Where users' uploads, as the gateway sent them, are kept."""
        return (self.uploads_dir or self.datasets_dir / "uploads").expanduser()

    @property
    def use_firecrawl(self) -> bool:
        if self.backend == "local":
            return False
        if self.backend == "firecrawl":
            return True
        return self.firecrawl_api_key is not None and bool(self.firecrawl_api_key.get_secret_value())
