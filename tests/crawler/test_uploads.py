"""PutSourceFile: a user's upload reaches the crawler as a stream from the gateway (never through the
gateway's folder), is checked on arrival, and a build reads it by upload_id and names it as the user knows it."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import grpc
import pytest
from crawler_support import TOKEN, Crawler, crawler_settings, start_crawler, stop_crawler
from zehanx.common.v1 import file_transfer_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as pb

pytestmark = pytest.mark.timeout(120)
CSV = b"x,label\n" + b"".join(f"{i},{'pos' if i % 2 else 'neg'}\n".encode() for i in range(200))


def messages(
    upload_id: str, name: str, data: bytes, *, sha: str | None = None, size: int | None = None
) -> list:
    header = file_transfer_pb2.FileHeader(
        name=name,
        size_bytes=len(data) if size is None else size,
        sha256=sha or hashlib.sha256(data).hexdigest(),
    )
    return [pb.PutSourceFileRequest(upload_id=upload_id, header=header), pb.PutSourceFileRequest(chunk=data)]


async def put(crawler: Crawler, requests: list) -> pb.PutSourceFileResponse:
    async def stream():
        for request in requests:
            yield request

    return await crawler.stub.PutSourceFile(stream(), metadata=[("x-zx-service-token", TOKEN)], timeout=30)


async def test_an_upload_sent_by_stream_is_built_by_its_id_and_named_as_the_user_knows_it(
    crawler: Crawler, shared_data: Path
) -> None:
    data = (shared_data / "palmer_penguins" / "penguins.csv").read_bytes()
    upload_id = str(uuid.uuid4())
    answer = await put(crawler, messages(upload_id, "penguins.csv", data))
    assert answer.sha256 == hashlib.sha256(data).hexdigest() and answer.size_bytes == len(data)
    request = pb.BuildDatasetRequest(prompt="predict the species of a penguin")
    request.sources.add(upload_id=upload_id)
    built = [m async for m in crawler.stream(request)][-1].dataset
    assert [p.source for p in built.provenance] == [f"upload {upload_id} (penguins.csv)"]
    assert [p.sha256 for p in built.provenance] == [answer.sha256]
    assert built.target_column == "species"
    assert str(crawler.settings.datasets_dir) not in str(built.provenance)


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda u: messages("not-a-uuid", "a.csv", CSV), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda u: messages(u, "../a.csv", CSV), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda u: messages(u, ".hidden", CSV), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda u: messages(u, "a.csv", CSV, sha="0" * 64), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda u: messages(u, "a.csv", CSV, size=len(CSV) + 1), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda u: messages(u, "a.csv", CSV)[1:], grpc.StatusCode.INVALID_ARGUMENT),
        (lambda u: messages(u, "big.csv", b"x" * (len(CSV) + 2000)), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=["bad-id", "path-name", "dot-name", "tampered", "short", "no-header", "too-large"],
)
async def test_a_bad_upload_stream_is_refused_and_nothing_is_kept(
    tmp_path: Path, shared_data: Path, build, code
) -> None:
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, max_source_bytes=1024 + len(CSV)))
    try:
        upload_id = str(uuid.uuid4())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await put(crawler, build(upload_id))
        assert refused.value.code() == code
        inbox = crawler.settings.resolved_uploads_dir
        assert not (inbox / upload_id).exists()
        assert not any((inbox / ".staging").iterdir()) if (inbox / ".staging").exists() else True
    finally:
        await stop_crawler(crawler)


async def test_a_build_naming_an_upload_never_sent_says_so(crawler: Crawler) -> None:
    request = pb.BuildDatasetRequest(prompt="classify the label from x")
    missing = str(uuid.uuid4())
    request.sources.add(upload_id=missing)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        [m async for m in crawler.stream(request)]
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"upload {missing} was not sent to this crawler" in (refused.value.details() or "")
