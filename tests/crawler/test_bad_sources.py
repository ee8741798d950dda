"""Bad input and bad sources: each gets a clear status and message, never a hang, a crash or a wrong dataset."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from crawler_support import Crawler, HttpSite, build_request, crawler_settings, start_crawler, stop_crawler
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx_runtime.status import error_info_of, field_violations_of

pytestmark = pytest.mark.timeout(180)


async def _error(crawler: Crawler, request: pb.BuildDatasetRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in crawler.stream(request):
            pass
    return info.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(error)
    return info.reason if info is not None else ""


# -- bad requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.BuildDatasetRequest(prompt=""), "prompt"),
        (pb.BuildDatasetRequest(prompt="   "), "prompt"),
        (
            pb.BuildDatasetRequest(prompt="spam", sources=[{"url": "ftp://example.org/data.csv"}]),
            "sources[0].url",
        ),
        (build_request("spam", "https://example.org/a.csv", "relative/path.csv"), "sources[1].catalog_name"),
        (build_request("spam", "Not A Name!"), "sources[0].catalog_name"),
        (build_request("spam", "sklearn.wine", split_fractions=(0.5, 0.2, 0.2)), "options.split_fractions"),
        (build_request("spam", "sklearn.wine", max_rows=-1), "options.max_rows"),
        (build_request("spam", "sklearn.wine", target_column_hint="  "), "options.target_column_hint"),
        (build_request("spam", "sklearn.wine", "sklearn.wine"), "sources[1]"),
        (pb.BuildDatasetRequest(prompt="spam", job_id="not-a-uuid"), "job_id"),
    ],
)
async def test_bad_request_is_invalid_argument_with_field_violations(
    crawler: Crawler, request_: pb.BuildDatasetRequest, field: str
) -> None:
    error = await _error(crawler, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    fields = [f for f, _ in field_violations_of(error)]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields


async def test_unknown_catalogue_name_lists_what_there_is(crawler: Crawler) -> None:
    error = await _error(crawler, build_request("anything", "sklearn.titanic"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "sklearn.wine" in error.details() and _reason(error) == "CATALOGUE_ENTRY_NOT_FOUND"


async def test_target_column_hint_that_does_not_exist_is_failed_precondition(crawler: Crawler) -> None:
    error = await _error(crawler, build_request("wine", "sklearn.wine", target_column_hint="price"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'price' is not in the data" in error.details() and "alcohol" in error.details()


# -- local paths ------------------------------------------------------------------------------------


async def test_local_path_outside_the_allowed_roots_is_permission_denied(crawler: Crawler) -> None:
    error = await _error(crawler, build_request("anything", "/etc/passwd"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ZX_CRAWLER_LOCAL_ROOTS" in error.details()


async def test_missing_local_path_is_not_found(crawler: Crawler, shared_data: Path) -> None:
    error = await _error(crawler, build_request("anything", str(shared_data / "no-such-file.csv")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_symlink_out_of_the_roots_is_refused(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "passwd.csv").symlink_to("/etc/passwd")
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, local_roots=[root]))
    try:
        error = await _error(crawler, build_request("anything", str(root / "passwd.csv")))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await stop_crawler(crawler)


async def test_ragged_csv_rows_get_a_clear_error_or_a_reported_repair(
    tmp_path: Path, shared_data: Path
) -> None:
    root = tmp_path / "files"
    root.mkdir()
    lines = ["x,y,label"] + [f"{i},{i * 3 % 7},{'ab'[i % 2]}" for i in range(60)]
    short = list(lines)
    short[20] = "5"  # a row shorter than the header: its missing cells are missing values
    (root / "short.csv").write_text("\n".join(short) + "\n")
    long = list(lines)
    long[10] += ",extra,cells"  # a row longer than the header: no rule says which cell is extra
    (root / "long.csv").write_text("\n".join(long) + "\n")
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, local_roots=[root]))
    try:
        messages = [m async for m in crawler.stream(build_request("classify label", str(root / "short.csv")))]
        dataset = messages[-1].dataset
        assert dataset.profile.row_count + dataset.profile.dropped_row_count == 60
        assert dataset.profile.dropped_row_count == 1  # the short row has no label
        assert any("fewer" in w or "short" in w for w in dataset.warnings), dataset.warnings

        error = await _error(crawler, build_request("classify label", str(root / "long.csv")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "rows 11" in error.details() and "ragged" in error.details()
    finally:
        await stop_crawler(crawler)


async def test_wrongly_encoded_text_is_decoded_and_said_so(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    rows = [f"Café crème number {i} was {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(40)]
    (root / "reviews.tsv").write_bytes(("\n".join(rows) + "\n").encode("cp1252"))
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, local_roots=[root]))
    try:
        messages = [m async for m in crawler.stream(build_request("sentiment", str(root / "reviews.tsv")))]
        dataset = messages[-1].dataset
        assert dataset.profile.row_count == 40
        samples = [v for c in dataset.profile.columns for v in c.sample_values]
        assert any("Café crème" in v for v in samples), samples
        assert any("not valid UTF-8" in w for w in dataset.warnings)
    finally:
        await stop_crawler(crawler)


# -- URLs -------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_host_is_unavailable_with_a_clear_message(crawler: Crawler) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/data.csv"
    error = await _error(crawler, build_request("anything", url))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert url.rsplit("/", 1)[0] in error.details() and "attempts" in error.details()


async def test_unresolvable_host_is_unavailable(tmp_path: Path, shared_data: Path) -> None:
    crawler = await start_crawler(
        crawler_settings(tmp_path, shared_data, allow_private_networks=False, retries=0)
    )
    try:
        error = await _error(crawler, build_request("anything", "http://no-such-host.invalid/data.csv"))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "no-such-host.invalid" in error.details()
    finally:
        await stop_crawler(crawler)


async def test_private_addresses_are_refused_by_default(
    tmp_path: Path, shared_data: Path, http_site: HttpSite
) -> None:
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, allow_private_networks=False))
    try:
        error = await _error(
            crawler, build_request("anything", http_site.url("/data/palmer_penguins/penguins.csv"))
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "ZX_CRAWLER_ALLOW_PRIVATE_NETWORKS" in error.details()
    finally:
        await stop_crawler(crawler)


async def test_404_is_not_found(crawler: Crawler, http_site: HttpSite) -> None:
    error = await _error(crawler, build_request("anything", http_site.url("/data/nothing-here.csv")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "404" in error.details()


async def test_server_error_is_retried_then_unavailable(crawler: Crawler, http_site: HttpSite) -> None:
    before = http_site.handler.hits.get("/broken", 0)
    error = await _error(crawler, build_request("anything", http_site.url("/broken")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "HTTP 500 after 3 attempts" in error.details()
    assert http_site.handler.hits["/broken"] - before == 3


async def test_a_transient_503_is_retried_and_the_build_succeeds(
    crawler: Crawler, http_site: HttpSite
) -> None:
    messages = [m async for m in crawler.stream(build_request("classify label", http_site.url("/flaky.csv")))]
    assert messages[-1].dataset.profile.row_count == 40


async def test_robots_txt_is_obeyed(crawler: Crawler, http_site: HttpSite) -> None:
    error = await _error(crawler, build_request("anything", http_site.url("/private/data.csv")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "robots.txt" in error.details()
    assert http_site.handler.hits.get("/private/data.csv", 0) == 0


async def test_multi_gb_file_is_refused_before_download(crawler: Crawler, http_site: HttpSite) -> None:
    error = await _error(crawler, build_request("anything", http_site.url("/huge.csv")))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5.0 GiB" in error.details() and "ZX_CRAWLER_MAX_SOURCE_BYTES" in error.details()


async def test_max_bytes_option_caps_the_download(crawler: Crawler, http_site: HttpSite) -> None:
    url = http_site.url("/data/sms_spam_collection/SMSSpamCollection")
    error = await _error(crawler, build_request("spam", url, max_bytes=10_000))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("path", ["/archives/bomb.zip", "/archives/bomb.csv.gz"])
async def test_archive_bomb_is_refused(crawler: Crawler, http_site: HttpSite, path: str) -> None:
    error = await _error(crawler, build_request("anything", http_site.url(path)))
    assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND), error.details()
    assert "bomb" in error.details() or "expand" in error.details(), error.details()
