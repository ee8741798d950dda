"""The Connect edge under hostile input (security review H2, and the edge part of M5): a caller without
credentials is refused on its headers before any byte of its body is read or decoded; every method's body
has a limit, checked on the declared length and while a chunked body streams in; gzip'd requests are
capped in size and in ratio; decoding happens in a thread, never on the gateway's event loop.

Against a real gateway on a real PostgreSQL, over real HTTP/1.1 (httpx, or h11 on a raw socket where the
test must send headers without the body)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import h11
import pytest
from connectrpc.compat import _codec as connect_codecs
from edge_support import SERVICE, ConnectError, Edge, envelope, serve, stop
from zehanx.gateway.v1 import dataset_record_pb2, job_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx_gateway.edge import SERVICE as GATEWAY_SERVICE
from zehanx_gateway.edge import EdgeSettings
from zehanx_gateway.edge.connect import BodyLimits
from zehanx_gateway.settings import GatewaySettings

MiB = 1024 * 1024
#: The review's request: a PredictRequest of 1,000,000 instances, 1.9 MiB of JSON, 2 KiB gzip'd; decoding
#: it took 5.8 s of the gateway's event loop before the caller's credentials were looked at.
BOMB_JSON = json.dumps({"modelId": str(uuid.uuid4()), "instances": [1] * 1_000_000}).encode()
BOMB = gzip.compress(BOMB_JSON, compresslevel=9)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread of every request message connectrpc's codecs decode (JSON or binary)."""
    seen: list[str] = []
    for codec in (connect_codecs.ProtoJSONCodec, connect_codecs.ProtoBinaryCodec):
        original = codec.decode

        def spy(self: Any, data: Any, message_class: Any, _original: Any = original) -> Any:
            seen.append(threading.current_thread().name)
            return _original(self, data, message_class)

        monkeypatch.setattr(codec, "decode", spy)
    return seen


@pytest.fixture
async def small_edge(database_url: str, tmp_path: Path) -> AsyncIterator[Edge]:
    """An edge whose small methods take 64 KiB at most (the default is 1 MiB)."""
    served = await serve(database_url, tmp_path, EdgeSettings(edge_port=0, edge_max_request_bytes=64 * 1024))
    try:
        yield served
    finally:
        await stop(served)


async def exchange(
    edge: Edge,
    method: str,
    headers: dict[str, str],
    parts: list[bytes],
    *,
    http_method: str = "POST",
    target: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a raw socket: the headers, then ``parts`` of the body and never its end;
    the response must come anyway (within 30 s), or the server was waiting for the rest of the body."""
    reader, writer = await asyncio.open_connection(edge.edge.host, edge.edge.port)
    conn = h11.Connection(h11.CLIENT)
    try:
        request = h11.Request(
            method=http_method,
            target=target or f"{SERVICE}/{method}",
            headers=[("host", "edge"), *headers.items()],
        )
        writer.write(conn.send(request))
        for part in parts:
            writer.write(conn.send(h11.Data(data=part)))
        await writer.drain()

        async def response() -> tuple[int, dict[str, str], bytes]:
            status, got, body = 0, {}, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    got = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return status, got, body

        return await asyncio.wait_for(response(), 30)
    finally:
        writer.close()


def connect_error(status: int, body: bytes) -> ConnectError:
    data = json.loads(body)
    return ConnectError(status, data["code"], data.get("message", ""), data.get("details", []))


# -- H2: nothing of an anonymous body is read, decompressed or decoded ------------------------------


async def test_h2_unauthenticated_gzip_bomb_is_refused_before_the_body_is_read(
    edge: Edge, decodes: list[str]
) -> None:
    assert len(BOMB) < 4096 and len(BOMB_JSON) > 1_900_000
    for credential in [{}, {"authorization": "Bearer zx_0123456789abcdef_" + "A" * 43}]:
        response = await edge.http.post(
            f"{SERVICE}/Predict",
            content=BOMB,
            headers={"content-type": "application/json", "content-encoding": "gzip", **credential},
        )
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthenticated"
    # The answer comes on the headers alone: here the body is announced and never sent.
    status, headers, body = await exchange(
        edge,
        "Predict",
        {"content-type": "application/json", "content-encoding": "gzip", "content-length": str(len(BOMB))},
        [BOMB[:100]],
    )
    assert (status, connect_error(status, body).code) == (401, "unauthenticated")
    assert headers.get("connection") == "close"  # the unread rest is not read either
    assert decodes == [], "an anonymous request was decoded"


async def test_h2_unauthenticated_get_with_a_gzipped_message_is_refused_undecoded(
    edge: Edge, decodes: list[str]
) -> None:
    states = json.dumps({"states": [1] * 500_000}).encode()
    message = base64.urlsafe_b64encode(gzip.compress(states, compresslevel=9)).decode()
    response = await edge.http.get(
        f"{SERVICE}/ListJobs",
        params={"encoding": "json", "compression": "gzip", "base64": "1", "message": message},
    )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthenticated"
    assert decodes == []


async def test_h2_unauthenticated_streams_are_refused_before_the_body_is_read(
    edge: Edge, decodes: list[str]
) -> None:
    body = envelope(json.dumps({"jobId": str(uuid.uuid4())}).encode())
    messages, end = await edge.stream("WatchJob", {"jobId": str(uuid.uuid4())}, None)
    assert messages == [] and end["error"]["code"] == "unauthenticated"
    status, headers, answer = await exchange(
        edge,
        "WatchJob",
        {"content-type": "application/connect+json", "content-length": str(len(body) + 10)},
        [body[:3]],
    )
    assert status == 200 and headers["content-type"] == "application/connect+json"
    assert json.loads(answer[5:])["error"]["code"] == "unauthenticated"  # the end-of-stream frame
    assert decodes == []


async def test_h2_an_overlong_credential_is_refused_unparsed(edge: Edge) -> None:
    for header in ({"authorization": "Bearer " + "A" * 9000}, {"x-api-key": "zx_" + "a" * 9000}):
        response = await edge.http.post(
            f"{SERVICE}/GetJob", json={"jobId": str(uuid.uuid4())}, headers=header
        )
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        assert "longer than any credential" in response.json()["message"]


# -- per-method body limits ------------------------------------------------------------------------


def test_h2_only_upload_file_has_a_large_body_limit() -> None:
    limits = BodyLimits.of_service(GATEWAY_SERVICE, default_bytes=MiB, max_compression_ratio=100)
    upload = f"{SERVICE}/UploadFile"
    assert list(limits.per_method) == [upload]
    # 32 MiB of file (the proto's rule) as base64 in JSON, plus the small limit for the rest.
    assert limits.of(upload) == MiB + 4 * ((32 * MiB + 2) // 3)
    assert limits.of(f"{SERVICE}/CreateJob") == limits.of(f"{SERVICE}/Predict") == MiB


async def test_h2_an_oversized_declared_body_is_resource_exhausted_unread(edge: Edge) -> None:
    token = await edge.api_key("alice")
    status, headers, body = await exchange(
        edge,
        "CreateJob",
        {
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
            "content-length": str(2 * MiB),
        },
        [b'{"job": {"prompt": "'],
    )
    error = connect_error(status, body)
    assert (status, error.code) == (429, "resource_exhausted")
    assert str(MiB) in error.message
    assert headers.get("connection") == "close"


async def test_h2_a_chunked_body_is_cut_off_at_the_limit(small_edge: Edge) -> None:
    token = await small_edge.api_key("alice")
    chunks = [b'{"job": {"prompt": "'] + [b"x" * 8192] * 10  # 80 KiB, beyond 64 KiB, never ended
    status, headers, body = await exchange(
        small_edge,
        "CreateJob",
        {
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
            "transfer-encoding": "chunked",
        },
        chunks,
    )
    assert (status, connect_error(status, body).code) == (429, "resource_exhausted")
    assert headers.get("connection") == "close"
    # Within the limit, chunked bodies work.
    small = json.dumps({"job": {"prompt": "x" * 1000}}).encode()

    async def in_two_chunks() -> AsyncIterator[bytes]:
        yield small[:100]
        yield small[100:]

    response = await small_edge.http.post(
        f"{SERVICE}/CreateJob",
        content=in_two_chunks(),  # no length: sent chunked
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text


async def test_h2_an_oversized_stream_request_is_resource_exhausted(small_edge: Edge) -> None:
    token = await small_edge.api_key("alice")
    frame = envelope(json.dumps({"jobId": str(uuid.uuid4()), "pad": "x" * 100_000}).encode())
    response = await small_edge.http.post(
        f"{SERVICE}/WatchJob",
        content=frame,
        headers={"content-type": "application/connect+json", "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert json.loads(response.content[5:])["error"]["code"] == "resource_exhausted"


# -- gzip'd requests: capped, decoded off the loop ------------------------------------------------


async def test_h2_an_authenticated_gzip_bomb_is_refused_at_the_cap(edge: Edge, decodes: list[str]) -> None:
    token = await edge.api_key("alice")
    headers = {
        "content-type": "application/json",
        "content-encoding": "gzip",
        "authorization": f"Bearer {token}",
    }
    response = await edge.http.post(f"{SERVICE}/Predict", content=BOMB, headers=headers)
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "resource_exhausted"
    # Within the 1 MiB limit but 1000 times its gzip'd size: the ratio cap refuses it.
    packed = gzip.compress(json.dumps({"job": {"prompt": "a" * 600_000}}).encode(), compresslevel=9)
    assert len(packed) * 100 < 600_000
    response = await edge.http.post(f"{SERVICE}/CreateJob", content=packed, headers=headers)
    assert response.status_code == 429, response.text
    assert "100 times" in response.json()["message"]
    # The same in a stream's compressed envelope.
    padded = json.dumps({"jobId": str(uuid.uuid4())}).encode() + b" " * 900_000
    response = await edge.http.post(
        f"{SERVICE}/WatchJob",
        content=envelope(gzip.compress(padded, compresslevel=9), flags=0x01),
        headers={
            "content-type": "application/connect+json",
            "connect-content-encoding": "gzip",
            "authorization": f"Bearer {token}",
        },
    )
    assert response.status_code == 200
    assert json.loads(response.content[5:])["error"]["code"] == "resource_exhausted"
    assert decodes == []
    # Not gzip at all: invalid_argument, not an internal error.
    response = await edge.http.post(f"{SERVICE}/CreateJob", content=b"not gzip", headers=headers)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_argument")


async def test_h2_requests_are_decoded_in_a_thread_not_on_the_event_loop(
    edge: Edge, decodes: list[str]
) -> None:
    token = await edge.api_key("alice")
    auth = {"authorization": f"Bearer {token}"}
    prompt = "Create a sentiment model from these reviews " * 40  # 1.7 KiB
    packed = gzip.compress(json.dumps({"job": {"prompt": prompt}}).encode())
    response = await edge.http.post(
        f"{SERVICE}/CreateJob",
        content=packed,
        headers={"content-type": "application/json", "content-encoding": "gzip", **auth},
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    plain = await edge.call("CreateJob", {"job": {"prompt": prompt}}, token)
    assert plain["prompt"] == prompt
    big_get = await edge.http.get(
        f"{SERVICE}/GetJob",
        params={"encoding": "json", "message": json.dumps({"jobId": job_id, "pad": " " * 1200})},
        headers=auth,
    )
    assert big_get.status_code == 400  # decoded (in a thread), then refused: no field "pad"
    await edge.stub.CancelJob(  # over gRPC: a watch of a finished job ends
        pb.CancelJobRequest(job_id=job_id), metadata=(("authorization", f"Bearer {token}"),)
    )
    frame = envelope(json.dumps({"jobId": job_id}).encode() + b" " * 1200)
    streamed = await edge.http.post(
        f"{SERVICE}/WatchJob",
        content=frame,
        headers={"content-type": "application/connect+json", **auth},
    )
    assert streamed.status_code == 200 and b"snapshot" in streamed.content
    loop_thread = threading.current_thread().name  # the test shares the gateway's loop
    assert len(decodes) == 4  # gzip'd POST, 1.7 KiB POST, GET, stream
    assert all(name != loop_thread and name.startswith("zx-edge-decode") for name in decodes), decodes
    # A small body, not compressed, is decoded on the loop: cheaper than the hand-over to a thread.
    got = await edge.call("GetJob", {"jobId": job_id}, token)
    assert got["id"] == job_id
    assert decodes[4:] == [loop_thread]


# -- UploadFile keeps its large limit --------------------------------------------------------------


async def test_upload_file_still_takes_files_beyond_the_small_limit(edge: Edge) -> None:
    token = await edge.api_key("alice")
    content = bytes(range(256)) * (12 * 1024)  # 3 MiB, three times the small limit
    request = pb.UploadFileRequest(filename="big.bin", content=content)
    response = await edge.http.post(
        f"{SERVICE}/UploadFile",
        content=request.SerializeToString(),
        headers={"content-type": "application/proto", "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.content[:300]
    assert dataset_record_pb2.UploadedFile.FromString(response.content).size_bytes == len(content)
    # JSON carries it as base64 (a third more).
    text = b"label,text\n" + b"1,fine\n" * 300_000  # 2.1 MiB
    answer = await edge.call(
        "UploadFile", {"filename": "rows.csv", "content": base64.b64encode(text).decode()}, token
    )
    assert not isinstance(answer, ConnectError), answer
    assert int(answer["sizeBytes"]) == len(text)


# -- M5: the gRPC port's message limit fits UploadFile, not 64 MiB ---------------------------------


async def test_m5_the_grpc_port_refuses_messages_beyond_what_upload_file_needs(edge: Edge) -> None:
    limit = GatewaySettings.model_fields["max_message_bytes"].default
    assert 32 * MiB < limit <= 34 * MiB
    token = await edge.api_key("alice")
    auth = (("authorization", f"Bearer {token}"),)
    job = job_pb2.Job(prompt="x" * (40 * MiB))  # within the old 64 MiB, beyond what uploads need
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await edge.stub.CreateJob(pb.CreateJobRequest(job=job), metadata=auth)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The largest file UploadFile takes still fits.
    uploaded = await edge.stub.UploadFile(
        pb.UploadFileRequest(filename="max.bin", content=b"\0" * (32 * MiB)), metadata=auth
    )
    assert uploaded.size_bytes == 32 * MiB
