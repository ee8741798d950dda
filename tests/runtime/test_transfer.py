"""zehanx_runtime.transfer: the one way a stored file crosses a service boundary, checked on arrival.

Module-level tests on the real generated messages (``ReadArtifactResponse``); the gRPC streams that use
it are tested in tests/crawler (ReadDatasetFile), tests/trainer (ReadArtifact) and tests/e2e.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from zehanx.common.v1 import file_transfer_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx_runtime import transfer
from zehanx_runtime.errors import DomainError

DATA = bytes(range(256)) * 9000  # 2.3 MB: three chunks
SHA = hashlib.sha256(DATA).hexdigest()


def header(size: int = len(DATA), sha: str = SHA) -> pb.ReadArtifactResponse:
    return pb.ReadArtifactResponse(
        header=file_transfer_pb2.FileHeader(name="model.zip", size_bytes=size, sha256=sha)
    )


def chunks(data: bytes = DATA) -> list[pb.ReadArtifactResponse]:
    step = transfer.CHUNK_BYTES
    return [pb.ReadArtifactResponse(chunk=data[i : i + step]) for i in range(0, len(data), step)]


async def stream(messages: Iterable[pb.ReadArtifactResponse]) -> AsyncIterator[pb.ReadArtifactResponse]:
    for message in messages:
        yield message


async def test_the_owners_stream_arrives_whole_and_verified(tmp_path: Path) -> None:
    source = tmp_path / "model.zip"
    source.write_bytes(DATA)
    info = transfer.file_info(source, media_type="application/zip")
    sent = [
        m
        async for m in transfer.stream_file(
            source, info, pb.ReadArtifactResponse, file_transfer_pb2.FileHeader
        )
    ]
    assert sent[0].header.sha256 == SHA and sent[0].header.size_bytes == len(DATA)
    assert len(sent) == 1 + 3 and all(len(m.chunk) <= transfer.CHUNK_BYTES for m in sent[1:])

    received = await transfer.receive_file(
        stream(sent), what="model", max_bytes=10**8, spool_dir=tmp_path / "in"
    )
    assert received.path.read_bytes() == DATA and received.info.media_type == "application/zip"
    received.close()
    got, data = await transfer.receive_bytes(stream(sent), what="model", max_bytes=10**8, expected_sha256=SHA)
    assert data == DATA and got.sha256 == SHA


@pytest.mark.parametrize(
    ("messages", "reason", "words"),
    [
        (chunks(), "TRANSFER_BROKEN", "did not start with a header"),
        ([], "TRANSFER_BROKEN", "ended before its header"),
        ([header(), *chunks()[:-1]], "TRANSFER_BROKEN", "ended after"),
        ([header(), *chunks(), *chunks()[:1]], "TRANSFER_BROKEN", "more than the announced"),
        ([header(), *chunks(DATA[:-1] + b"x")], "TRANSFER_BROKEN", "do not match the announced sha256"),
        ([header(), header()], "TRANSFER_BROKEN", "unexpected header"),
        ([header(sha="nope")], "TRANSFER_BROKEN", "no valid size and sha256"),
        ([header(size=10**9), *chunks()], "TRANSFER_TOO_LARGE", "more than this service accepts"),
        ([header(sha="0" * 64), *chunks()], "TRANSFER_UNEXPECTED_SHA256", "expected"),
    ],
    ids=[
        "no-header",
        "empty",
        "short",
        "long",
        "tampered",
        "two-headers",
        "bad-header",
        "too-large",
        "not-expected",
    ],
)
async def test_a_stream_that_is_not_what_it_announced_is_refused_and_leaves_nothing(
    tmp_path: Path, messages: list[pb.ReadArtifactResponse], reason: str, words: str
) -> None:
    spool = tmp_path / "spool"
    expected = SHA if reason == "TRANSFER_UNEXPECTED_SHA256" else None
    with pytest.raises(DomainError) as refused:
        await transfer.receive_file(
            stream(messages), what="the archive", max_bytes=10**8, spool_dir=spool, expected_sha256=expected
        )
    assert refused.value.reason == reason and words in refused.value.message
    assert refused.value.message.startswith("the archive: ")
    assert list(spool.iterdir()) == [], "nothing half-received is left behind"


async def test_the_owner_refuses_to_stream_a_file_that_changed_size(tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    source.write_bytes(b"{}\n")
    stale = transfer.FileInfo(name="train.jsonl", size_bytes=10, sha256="0" * 64, media_type="")
    with pytest.raises(DomainError, match="is 3 bytes, not 10"):
        async for _ in transfer.stream_file(
            source, stale, pb.ReadArtifactResponse, file_transfer_pb2.FileHeader
        ):
            pass
