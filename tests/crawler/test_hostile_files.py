"""Hostile files (security review H3, H4, S2): small inputs that used to take days of CPU or gigabytes of
memory are parsed in bounded work or refused, and a parse that never ends dies with its build.

The bounded-time checks run the parser in a child process with a hard timeout, so on code that still
backtracks they fail cleanly instead of hanging the suite; their bounds are generous (the old code took
hours or days on these inputs)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import grpc
import pytest
from crawler_support import Crawler, build_request, crawler_settings, start_crawler, stop_crawler
from zehanx_crawler import parse_worker
from zehanx_crawler.domain import Resource
from zehanx_crawler.parse_pool import ParsePool
from zehanx_crawler.parsers import archives, parse_resource
from zehanx_crawler.parsers.archives import ArchiveLimits
from zehanx_crawler.parsers.html_tables import GridLimits, _CellBudget, _grid, _own_rows, parse_html
from zehanx_crawler.sniff import Format, starts_as_html
from zehanx_crawler.values import strip_footnote
from zehanx_runtime.errors import Internal, ResourceExhausted
from zehanx_runtime.status import error_info_of

pytestmark = pytest.mark.timeout(180)

LIMITS = ArchiveLimits(max_bytes=32 * 1024 * 1024, max_members=1000, max_ratio=250.0, max_depth=2)

#: The review's H3 file: n empty comments, then a CSV that is not HTML (n=40: 288 bytes).
COMMENT_REDOS_CSV = "<!---->" * 40 + "x,y\n1,2\n"
#: The same start on a CSV with enough rows to build a dataset from.
COMMENT_REDOS_DATA = "<!---->" * 40 + "x,y\n" + "".join(f"{i * 0.37 % 10:.2f},{i % 2}\n" for i in range(60))
#: The review's H4 page: 200 rows of a 1000x1000 span and one more cell (11 KiB).
SPAN_BOMB = "<table>" + "<tr><td colspan=1000 rowspan=1000>x</td><td>y</td></tr>" * 200 + "</table>"


def _bounded(code: str, timeout: float = 60.0) -> Any:
    """Run ``code`` (which prints one JSON value last) in a child Python; fail after ``timeout`` s."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout:.0f} s (super-linear work on a small input)")
    return json.loads(done.stdout.strip().splitlines()[-1])


async def _error(crawler: Crawler, prompt: str, *sources: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await crawler.build(prompt, *sources)
    return info.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(error)
    return info.reason if info is not None else ""


@pytest.fixture
async def files(tmp_path: Path, shared_data: Path) -> Any:
    """A crawler that may read tmp_path/files, and that folder."""
    root = tmp_path / "files"
    root.mkdir()
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, local_roots=[root]))
    try:
        yield crawler, root
    finally:
        await stop_crawler(crawler)


# -- H3: regular expressions on untrusted text --------------------------------------------------------


def test_h3_html_comment_redos_is_linear() -> None:
    code = f"""
import json, time
from zehanx_crawler.sniff import text_format
text = {COMMENT_REDOS_CSV!r}
start = time.perf_counter()
fmt = text_format(text, "data.csv", "text/csv")
print(json.dumps([fmt.value, time.perf_counter() - start]))
"""
    fmt, seconds = _bounded(code)
    assert fmt == "delimited"
    assert seconds < 5.0  # n=40 took days with the backtracking pattern


async def test_h3_comment_redos_csv_builds_a_dataset(files: tuple[Crawler, Path]) -> None:
    crawler, root = files
    (root / "data.csv").write_text(COMMENT_REDOS_DATA, encoding="utf-8")
    messages = await crawler.build("predict y", str(root / "data.csv"))
    assert messages[-1].dataset.profile.row_count == 60


def test_h3_one_megabyte_header_cell_is_cleaned_quickly() -> None:
    code = """
import json, time
from zehanx_crawler.cleaning import MAX_NAME_CHARS, clean_names
start = time.perf_counter()
names = clean_names(["*" * 1_000_000 + "x", "[" + " " * 1_000_000 + "x", "ok*"])
print(json.dumps([[len(n) for n in names], names[2], MAX_NAME_CHARS, time.perf_counter() - start]))
"""
    lengths, third, cap, seconds = _bounded(code)
    assert seconds < 5.0  # a 1 MB cell took hours (quadratic footnote search)
    assert max(lengths) <= cap and third == "ok"


async def test_h3_long_header_is_cut_in_the_built_dataset(files: tuple[Crawler, Path]) -> None:
    crawler, root = files
    header = "*" * 1_000_000 + "x"
    (root / "wide.csv").write_text(
        f"{header},label\n" + "".join(f"{i * 0.37 % 10:.2f},{'ab'[i % 2]}\n" for i in range(60)),
        encoding="utf-8",
    )
    messages = await crawler.build("predict label", str(root / "wide.csv"))
    dataset = messages[-1].dataset
    names = [c["name"] for c in json.loads(dataset.ref.schema_json)["columns"]]
    assert "label" in names
    assert max(len(n) for n in names) <= 200
    assert any("cut to that length" in w for w in dataset.warnings)


def test_nested_tables_are_checked_once_each() -> None:
    """The layout check asked every enclosing table again, recursively: 2^depth (found with H3)."""
    code = """
import json, time
from zehanx_crawler.parsers.html_tables import parse_html
start = time.perf_counter()
page = parse_html("<html><body>" + "<table><tr><td>" * 40, "nested.html")
print(json.dumps([page.tables_found, time.perf_counter() - start]))
"""
    found, seconds = _bounded(code)
    assert found == 40
    assert seconds < 5.0  # 18 levels took 2 s, each more doubled it


def test_html_sniff_matches_the_pattern_with_comments_ending_at_their_first_close() -> None:
    reference = re.compile(
        r"^\s*(?>(?:<!--(?:(?!-->).)*-->\s*)*)(<!doctype\s+html|<html|<head|<body|<table)", re.I | re.S
    )
    parts = ["<!--", "-->", "<!---->", " ", "\n", "x", "<html", "<HEAD", "<table", "<!DOCTYPE html", "<"]
    rng = random.Random(7)
    for _ in range(20_000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 7)))
        assert starts_as_html(text) == bool(reference.match(text)), text


def test_strip_footnote_matches_the_old_pattern() -> None:
    old = re.compile(r"(\[\s*[\w\s]{1,12}\s*\]|[\u2020\u2021*]+)$")
    parts = ["[", "]", " ", "a", "1", "*", "\u2020", "\n", "_", "-", "abcdefghij", "\u00e9"]
    rng = random.Random(11)
    for _ in range(20_000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 9)))
        assert strip_footnote(text) == old.sub("", text).strip(), text


# -- H4: span amplification ---------------------------------------------------------------------------


class _Recording(_CellBudget):
    """A cell budget that remembers the most cells it ever let into the grid."""

    granted = 0

    def charge(self, n: int) -> None:
        super().charge(n)
        self.granted = self.used


def test_h4_span_bomb_table_is_refused_at_max_columns() -> None:
    page = parse_html(SPAN_BOMB, "bomb.html", GridLimits(max_columns=10_000, max_cells=10_000_000))
    assert page.tables == []
    assert page.tables_found == 1
    assert "at most 10000 are accepted (ZX_CRAWLER_MAX_COLUMNS)" in page.skipped[0]


def test_h4_span_bomb_grid_never_exceeds_the_cell_cap() -> None:
    import lxml.html

    table = lxml.html.document_fromstring(SPAN_BOMB).find(".//table")
    rows = [tr for tr, _ in _own_rows(table)]
    # Columns wide open: only the cell cap can stop it (the old grid reached 200,001 x 200 cells).
    budget = _Recording("bomb.html", 1_000_000)
    with pytest.raises(ResourceExhausted) as info:
        _grid(rows, 10**9, budget)
    assert info.value.reason == "HTML_TABLE_TOO_LARGE"
    assert 0 < budget.granted <= 1_000_000
    # rowspan stops at the last row and colspan at max_columns: a 3-row table of one 1000x1000 span.
    small = lxml.html.document_fromstring(
        "<table><tr><td colspan=1000 rowspan=1000>x</td></tr><tr></tr><tr></tr></table>"
    ).find(".//table")
    counted = _Recording("small.html", 10**6)
    grid = _grid([tr for tr, _ in _own_rows(small)], 50, counted)
    assert [len(line) for line in grid] == [50, 50, 50]
    assert counted.granted == 150


async def test_h4_span_bomb_page_gets_a_clear_error(files: tuple[Crawler, Path]) -> None:
    crawler, root = files
    (root / "bomb.html").write_text(SPAN_BOMB, encoding="utf-8")
    error = await _error(crawler, "anything", str(root / "bomb.html"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "ZX_CRAWLER_MAX_COLUMNS" in (error.details() or "")
    # The parsing process stayed small (the old parser took 2.2 GiB on this page).
    assert 0 < crawler.app.builder.parse_pool.last_peak_rss < 400 * 1024 * 1024


# -- S2: archive listings -------------------------------------------------------------------------------


def _many_entries_zip(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            z.writestr(f"d/{i}.csv", b"a,b\n1,2\n")
    return buf.getvalue()


@pytest.mark.parametrize("lie", [False, True], ids=["honest-count", "end-record-says-1"])
def test_s2_zip_with_more_entries_than_the_cap_is_refused_before_listing(
    monkeypatch: pytest.MonkeyPatch, lie: bool
) -> None:
    data = _many_entries_zip(60)
    if lie:  # the end record claims one entry; zipfile would still read all 60
        end = data.rfind(b"PK\x05\x06")
        data = data[: end + 8] + struct.pack("<2H", 1, 1) + data[end + 12 :]
    listed: list[str] = []

    class Spy(zipfile.ZipFile):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            listed.append("ZipFile")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(archives.zipfile, "ZipFile", Spy)
    resource = Resource(uri="file:///many.zip", name="many.zip", data=data)
    limits = ArchiveLimits(max_bytes=LIMITS.max_bytes, max_members=50, max_ratio=250.0, max_depth=2)
    with pytest.raises(ResourceExhausted) as info:
        archives.expand(resource, Format.ZIP, limits)
    assert info.value.reason == "ARCHIVE_TOO_MANY_MEMBERS"
    assert listed == []  # refused from the raw records: no ZipFile, no ZipInfo per entry
    # At the cap it is read as before.
    ok = _many_entries_zip(50)
    assert (
        len(archives.expand(Resource(uri="file:///ok.zip", name="ok.zip", data=ok), Format.ZIP, limits)) == 50
    )


def test_tar_folder_entries_count_against_the_member_cap() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(200):
            info = tarfile.TarInfo(f"d{i}/")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    resource = Resource(uri="file:///dirs.tar.gz", name="dirs.tar.gz", data=buf.getvalue())
    limits = ArchiveLimits(max_bytes=LIMITS.max_bytes, max_members=50, max_ratio=250.0, max_depth=2)
    with pytest.raises(ResourceExhausted) as info:
        parse_resource(resource, limits)
    assert info.value.reason == "ARCHIVE_TOO_MANY_MEMBERS"


async def test_s2_many_entry_zip_is_refused_by_the_service(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "many.zip").write_bytes(_many_entries_zip(60))
    crawler = await start_crawler(
        crawler_settings(tmp_path, shared_data, local_roots=[root], max_archive_members=50)
    )
    try:
        error = await _error(crawler, "anything", str(root / "many.zip"))
    finally:
        await stop_crawler(crawler)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _reason(error) == "ARCHIVE_TOO_MANY_MEMBERS"


# -- parsing processes: the build timeout stops a parse ---------------------------------------------------


def parse_forever(*args: Any) -> None:
    """A parser that never ends (imported by name in the parsing process)."""
    while True:
        pass


def allocate(n: int) -> int:
    return len(bytearray(n))


def hand_back_a_path() -> Path:
    return Path("/")


async def _wait_for_pids(crawler: Crawler) -> list[int]:
    for _ in range(600):
        pids = crawler.app.builder.parse_pool.pids()
        if pids:
            return pids
        await asyncio.sleep(0.05)
    pytest.fail("no parsing process started")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_build_timeout_kills_a_parse_that_never_ends(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_worker, "parse", parse_forever)
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, build_timeout_s=3.0))
    try:
        build = asyncio.create_task(
            crawler.build("penguin species", str(shared_data / "palmer_penguins" / "penguins.csv"))
        )
        pids = await _wait_for_pids(crawler)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await build
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _reason(info.value) == "BUILD_TIMEOUT"
        assert all(_gone(pid) for pid in pids)  # killed and reaped when the time budget ran out
        assert crawler.app.builder.parse_pool.pids() == []
        # The next build gets a fresh parsing process.
        monkeypatch.undo()
        messages = await crawler.build(
            "penguin species", str(shared_data / "palmer_penguins" / "penguins.csv")
        )
        assert messages[-1].dataset.profile.row_count > 300
        assert not set(crawler.app.builder.parse_pool.pids()) & set(pids)
        leftovers = [p.name for p in crawler.settings.datasets_dir.iterdir() if p.name.startswith(".parse-")]
        assert leftovers == []  # the builds' work folders are gone
    finally:
        await stop_crawler(crawler)


async def test_a_caller_going_away_kills_its_parse(
    crawler: Crawler, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_worker, "parse", parse_forever)
    call = crawler.stream(
        build_request("penguin species", str(shared_data / "palmer_penguins" / "penguins.csv"))
    )
    reader = asyncio.create_task(call.read())
    pids = await _wait_for_pids(crawler)
    call.cancel()
    reader.cancel()
    for _ in range(200):
        if all(_gone(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


async def test_a_parse_past_the_memory_cap_is_resource_exhausted() -> None:
    pool = ParsePool(processes=1, memory_bytes=512 * 1024 * 1024)
    try:
        with pytest.raises(ResourceExhausted) as info:
            await pool.run(allocate, 2 * 1024**3, what="bomb.bin")
        assert info.value.reason == "PARSE_OUT_OF_MEMORY"
        assert await pool.run(allocate, 1024, what="small.bin") == 1024  # a fresh process answers
    finally:
        await pool.close()


async def test_a_parsing_process_can_hand_back_only_allowed_classes() -> None:
    pool = ParsePool(processes=1, memory_bytes=512 * 1024 * 1024)
    try:
        with pytest.raises(Internal) as info:
            await pool.run(hand_back_a_path, what="odd.bin")
        assert "not allowed" in info.value.message
        assert pool.pids() == []  # that process is not reused
    finally:
        await pool.close()


def test_parse_results_keep_rows_out_of_the_server(tmp_path: Path) -> None:
    resource = Resource(uri="file:///t.csv", name="t.csv", data=b"a,b\n" + b"1,2\n" * 50)
    parsed = parse_worker.parse(resource, LIMITS, GridLimits(), str(tmp_path))
    table = parsed.tables[0]
    assert table.rows == [] and table.n_rows == 50 and Path(table.rows_file).is_file()
    assert table.resource is not None and table.resource.data == b"" and table.resource.n_bytes == 204
    cleaned = parse_worker.clean([table], 10_000)
    assert cleaned.n_rows == 50 and [c.name for c in cleaned.columns] == ["a", "b"]
