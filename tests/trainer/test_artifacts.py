"""The artifact store: content-addressed, all or nothing, sha256 verified on every read; on a local
folder and on Supabase Storage (the real ``supabase`` SDK against recorded response shapes)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from zehanx_runtime.errors import FailedPrecondition, Internal, InvalidArgument, NotFound, Unavailable
from zehanx_trainer.artifacts import ArtifactStore, LocalBlobBackend, object_key, sha256_hex
from zehanx_trainer.clients.supabase import SupabaseBlobBackend

FILES = {
    "train.py": b"print('train')\n",
    "predict.py": b"print('predict')\n",
    "output/model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "MODEL_CARD.md": b"# card\n",
    "copy.py": b"print('train')\n",  # same bytes as train.py: one blob
}


async def test_publish_then_read_back_every_file_verified(tmp_path: Path) -> None:
    store = ArtifactStore(LocalBlobBackend(tmp_path))
    manifest = await store.publish(FILES, {"run_id": "r1"})
    assert manifest.artifact_id == sha256_hex(
        (tmp_path / "manifests" / f"{manifest.artifact_id}.json").read_bytes()
    )
    again = await store.manifest(manifest.artifact_id)
    assert again.metadata == {"run_id": "r1"}
    assert await store.read_all(again) == dict(sorted(FILES.items()))
    assert len([p for p in (tmp_path / "objects").rglob("*") if p.is_file()]) == 4  # copy.py deduplicated
    assert (
        store.uri(manifest.artifact_id) == (tmp_path / "manifests" / f"{manifest.artifact_id}.json").as_uri()
    )


async def test_a_corrupted_blob_is_detected_on_read(tmp_path: Path) -> None:
    store = ArtifactStore(LocalBlobBackend(tmp_path))
    manifest = await store.publish(FILES)
    blob = tmp_path / object_key(manifest.files["output/model.safetensors"].sha256)
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")  # same size, one byte flipped
    with pytest.raises(Internal) as info:
        await store.read(manifest, "output/model.safetensors")
    assert info.value.reason == "ARTIFACT_CORRUPT"
    assert await store.read(manifest, "train.py") == FILES["train.py"]  # the others still read


async def test_a_tampered_manifest_and_a_missing_artifact_are_told_apart(tmp_path: Path) -> None:
    store = ArtifactStore(LocalBlobBackend(tmp_path))
    manifest = await store.publish(FILES)
    with pytest.raises(NotFound):
        await store.manifest("f" * 64)
    with pytest.raises(InvalidArgument):
        await store.manifest("../../etc/passwd")
    path = tmp_path / "manifests" / f"{manifest.artifact_id}.json"
    os.chmod(path, 0o644)
    body = json.loads(path.read_text())
    body["metadata"]["run_id"] = "forged"
    path.write_text(json.dumps(body))
    with pytest.raises(Internal) as info:
        await store.manifest(manifest.artifact_id)
    assert info.value.reason == "ARTIFACT_CORRUPT"


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


class FailingBackend(LocalBlobBackend):
    """A local backend whose n-th put fails (a full disk, a dropped connection)."""

    def __init__(self, root: Path, fail_at: int) -> None:
        super().__init__(root)
        self.puts, self.fail_at = 0, fail_at

    def put(self, key: str, data: bytes) -> bool:
        self.puts += 1
        if self.puts == self.fail_at:
            raise OSError("disk full")
        return super().put(key, data)


async def test_a_failed_publish_leaves_nothing_behind_but_keeps_blobs_it_did_not_create(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(LocalBlobBackend(tmp_path))
    await store.publish({"train.py": FILES["train.py"]})  # a blob an earlier artifact owns
    before = _files(tmp_path)
    failing = ArtifactStore(FailingBackend(tmp_path, fail_at=4))
    with pytest.raises(OSError):
        await failing.publish(FILES)
    after = _files(tmp_path)
    assert after == before


# -- Supabase Storage ----------------------------------------------------------------------------------

SERVICE_KEY = "service-role-key-never-logged"


# What supabase/storage answers (src/internal/errors/codes.ts, storage-error.ts): every error under
# 500 goes out as HTTP 400 (``userStatusCode = httpStatusCode === 500 ? 500 : 400``) with the real
# status in the body's ``statusCode`` and the legacy ``error`` string, e.g. ERRORS.NoSuchBucket is
# ``{error: 'Bucket not found', httpStatusCode: 404, message: 'Bucket not found'}`` and
# ERRORS.AccessDenied is ``{error: 'Unauthorized', httpStatusCode: 403}``.
# Storage's answer to creating a bucket or an object that exists (ERRORS.BucketAlreadyExists and
# ERRORS.ResourceAlreadyExists: HTTP 400 with the 409 in the body).
DUPLICATE = {"statusCode": "409", "error": "Duplicate", "message": "The resource already exists"}
BUCKET_NOT_FOUND = {"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"}
RLS_DENIED = {
    "statusCode": "403",
    "error": "Unauthorized",
    "message": 'new row violates row-level security policy for table "buckets"',
}


class RecordedStorage:
    """Supabase Storage's object and bucket API as recorded: the status codes and JSON bodies it answers."""

    def __init__(self, key: str = SERVICE_KEY) -> None:
        self.key = key
        self.objects: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.fail_with: int | None = None
        self.buckets: set[str] = {"zehanx-artifacts"}
        self.bucket_creates: list[dict[str, object]] = []
        self.deny_bucket_create = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["apikey"] == self.key
        if self.key.startswith("sb_secret_"):
            # "The new API keys are not JWTs [...] put API keys in the apikey header"
            # (supabase.com/docs/guides/functions/auth-headers).
            assert "authorization" not in request.headers, request.headers["authorization"]
        else:
            assert request.headers["authorization"] == f"Bearer {self.key}"
        if self.fail_with:
            return httpx.Response(
                self.fail_with,
                json={
                    "statusCode": str(self.fail_with),
                    "error": "InternalError",
                    "message": "upstream timeout",
                },
            )
        if request.url.path == "/storage/v1/bucket/" or request.url.path == "/storage/v1/bucket":
            # createBucket.ts: 200 {"name": bucketName}; an existing id is ERRORS.BucketAlreadyExists
            # (409, error 'Duplicate'); a key that is not the service role meets the buckets table's RLS.
            assert request.method == "POST"
            body = json.loads(request.content)
            self.bucket_creates.append(body)
            if self.deny_bucket_create:
                return httpx.Response(400, json=RLS_DENIED)
            if body["id"] in self.buckets:
                return httpx.Response(400, json=DUPLICATE)
            self.buckets.add(body["id"])
            return httpx.Response(200, json={"name": body["name"]})
        prefix = "/storage/v1/object/"
        assert request.url.path.startswith(prefix), request.url
        rest = request.url.path[len(prefix) :]
        if rest.split("/", 1)[0] not in self.buckets:
            return httpx.Response(400, json=BUCKET_NOT_FOUND)
        if request.method == "POST":  # upload (multipart form)
            bucket, key = rest.split("/", 1)
            assert request.headers["x-upsert"] == "false"
            if key in self.objects:
                return httpx.Response(400, json=DUPLICATE)
            body = request.content
            boundary = request.headers["content-type"].split("boundary=")[1].encode()
            parts = [p for p in body.split(b"--" + boundary) if b'name="file"' in p or b"filename=" in p]
            data = parts[0].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
            self.objects[key] = data
            return httpx.Response(
                200, json={"Id": "5d3a1c0e-0000-4000-8000-000000000000", "Key": f"{bucket}/{key}"}
            )
        if request.method == "GET":  # download
            bucket, key = rest.split("/", 1)
            if key not in self.objects:
                return httpx.Response(
                    400, json={"statusCode": "404", "error": "not_found", "message": "Object not found"}
                )
            return httpx.Response(
                200, content=self.objects[key], headers={"content-type": "application/octet-stream"}
            )
        if request.method == "DELETE":  # remove
            names = json.loads(request.content)["prefixes"]
            removed = [{"name": n, "bucket_id": rest} for n in names if self.objects.pop(n, None) is not None]
            return httpx.Response(200, json=removed)
        raise AssertionError(f"unexpected {request.method} {request.url}")


@pytest.fixture
def recorded() -> RecordedStorage:
    return RecordedStorage()


@pytest.fixture
def supabase_store(recorded: RecordedStorage) -> ArtifactStore:
    backend = SupabaseBlobBackend.connect(
        "https://abcdefghijklmnop.supabase.co",
        SERVICE_KEY,
        "zehanx-artifacts",
        http_client=httpx.Client(transport=httpx.MockTransport(recorded.handler)),
    )
    return ArtifactStore(backend)


async def test_supabase_store_round_trips_an_artifact(
    supabase_store: ArtifactStore, recorded: RecordedStorage
) -> None:
    manifest = await supabase_store.publish(FILES, {"run_id": "r2"})
    assert f"manifests/{manifest.artifact_id}.json" in recorded.objects
    assert len([k for k in recorded.objects if k.startswith("objects/")]) == 4  # deduplicated
    again = await supabase_store.manifest(manifest.artifact_id)
    assert await supabase_store.read_all(again) == dict(sorted(FILES.items()))
    assert (
        supabase_store.uri(manifest.artifact_id)
        == f"supabase://zehanx-artifacts/manifests/{manifest.artifact_id}.json"
    )
    # Publishing the same bytes again meets 409 Duplicate for every blob, which is fine.
    await supabase_store.publish(FILES, {"run_id": "r3"})
    with pytest.raises(NotFound):
        await supabase_store.manifest("e" * 64)


async def test_a_model_in_supabase_storage_reaches_the_gateway_as_a_verified_archive(
    supabase_store: ArtifactStore, recorded: RecordedStorage, tmp_path: Path
) -> None:
    """The download archive is built by the store's owner from Storage (the gateway used to read the
    trainer's folder from disk and refused supabase:// with ARTIFACT_STORE_UNSUPPORTED), streamed as
    ReadArtifact messages and received by the gateway's own code, which checks it and takes the card."""
    import io
    import zipfile

    from zehanx.common.v1 import file_transfer_pb2
    from zehanx.trainer.v1 import trainer_service_pb2 as pb
    from zehanx_gateway.orchestrator.archive import receive_archive
    from zehanx_runtime import transfer
    from zehanx_trainer.archive import build_archive

    manifest = await supabase_store.publish(FILES, {"run_id": "r4"})
    path, info = await build_archive(supabase_store, manifest.artifact_id, spool_dir=tmp_path / "trainer")
    again, info_again = await build_archive(
        supabase_store, manifest.artifact_id, spool_dir=tmp_path / "trainer"
    )
    assert info_again.sha256 == info.sha256, "one artifact, one archive"
    stream = transfer.stream_file(path, info, pb.ReadArtifactResponse, file_transfer_pb2.FileHeader)
    received = await receive_archive(manifest.artifact_id, stream, spool_dir=tmp_path / "gateway")
    try:
        assert received.sha256 == info.sha256 and received.model_card == "# card\n"
        with zipfile.ZipFile(io.BytesIO(received.path.read_bytes())) as archive:
            assert {name: archive.read(name) for name in archive.namelist()} == FILES
    finally:
        received.close()
        path.unlink()
        again.unlink()


async def test_supabase_corruption_is_detected(
    supabase_store: ArtifactStore, recorded: RecordedStorage
) -> None:
    manifest = await supabase_store.publish(FILES)
    recorded.objects[object_key(manifest.files["predict.py"].sha256)] = b"print('evil')\n"
    with pytest.raises(Internal) as info:
        await supabase_store.read(manifest, "predict.py")
    assert info.value.reason == "ARTIFACT_CORRUPT"


async def test_a_model_over_storages_size_limit_is_configuration_not_an_outage(
    recorded: RecordedStorage,
) -> None:
    """supabase.com/docs/guides/storage/debugging/error-codes: EntityTooLarge, 413, "The object exceeded
    the maximum allowed size"; rendered in the legacy body (HTTP 400, the real status in statusCode)."""
    original = recorded.handler

    def limited(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and len(request.content) > 2000:  # the limit: only the weights exceed it
            return httpx.Response(
                400,
                json={
                    "statusCode": "413",
                    "error": "Payload too large",
                    "message": "The object exceeded the maximum allowed size",
                },
            )
        return original(request)

    store = ArtifactStore(
        SupabaseBlobBackend.connect(
            "https://abcdefghijklmnop.supabase.co",
            SERVICE_KEY,
            "zehanx-artifacts",
            http_client=httpx.Client(transport=httpx.MockTransport(limited)),
        )
    )
    big = {**FILES, "output/model.safetensors": b"\x08" + b"\x00" * 4000}
    with pytest.raises(FailedPrecondition) as info:
        await store.publish(big)
    assert info.value.reason == "SUPABASE_OBJECT_TOO_LARGE" and "50 MB on the Free plan" in str(info.value)
    assert not any(k.startswith("manifests/") for k in recorded.objects), "nothing published"


async def test_supabase_outage_is_unavailable_and_a_failed_publish_is_rolled_back(
    supabase_store: ArtifactStore, recorded: RecordedStorage
) -> None:
    recorded.fail_with = 503
    with pytest.raises(Unavailable) as info:
        await supabase_store.publish(FILES)
    assert "upstream timeout" in str(info.value) and SERVICE_KEY not in str(info.value)
    recorded.fail_with = None

    uploads = 0
    original = recorded.handler

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal uploads
        if request.method == "POST":
            uploads += 1
            if uploads == 3:
                raise httpx.ConnectError("connection reset", request=request)
        return original(request)

    recorded.handler = flaky  # type: ignore[method-assign]
    backend = SupabaseBlobBackend.connect(
        "https://abcdefghijklmnop.supabase.co",
        SERVICE_KEY,
        "zehanx-artifacts",
        http_client=httpx.Client(transport=httpx.MockTransport(flaky)),
    )
    with pytest.raises(Unavailable):
        await ArtifactStore(backend).publish(FILES)
    assert recorded.objects == {}  # the two blobs it did write were removed again


def _backend(
    recorded: RecordedStorage,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
    **options: bool,
) -> SupabaseBlobBackend:
    return SupabaseBlobBackend.connect(
        "https://abcdefghijklmnop.supabase.co",
        recorded.key,
        "zehanx-artifacts",
        http_client=httpx.Client(transport=httpx.MockTransport(handler or recorded.handler)),
        **options,
    )


async def test_a_missing_bucket_is_created_private_once_then_the_upload_succeeds() -> None:
    recorded = RecordedStorage()
    recorded.buckets.clear()
    store = ArtifactStore(_backend(recorded))
    manifest = await store.publish(FILES, {"run_id": "r4"})
    assert recorded.bucket_creates == [
        {"id": "zehanx-artifacts", "name": "zehanx-artifacts", "public": False}
    ]
    assert await store.read_all(await store.manifest(manifest.artifact_id)) == dict(sorted(FILES.items()))
    await store.publish(FILES, {"run_id": "r5"})
    assert len(recorded.bucket_creates) == 1


async def test_a_bucket_created_meanwhile_by_another_trainer_is_fine() -> None:
    recorded = RecordedStorage()
    recorded.buckets.clear()

    def racing(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/storage/v1/bucket"):
            recorded.buckets.add("zehanx-artifacts")  # the other replica won the race: 409 Duplicate
        return recorded.handler(request)

    backend = _backend(recorded, racing)
    assert backend.put("objects/ab/cd", b"x") is True
    assert recorded.objects == {"objects/ab/cd": b"x"}


async def test_a_missing_bucket_on_read_is_configuration_not_a_missing_artifact() -> None:
    recorded = RecordedStorage()
    recorded.buckets.clear()
    store = ArtifactStore(_backend(recorded))
    with pytest.raises(FailedPrecondition) as info:
        await store.manifest("e" * 64)
    assert info.value.reason == "SUPABASE_BUCKET_MISSING"
    assert "ZX_TRAINER_SUPABASE_BUCKET" in str(info.value)
    assert recorded.bucket_creates == []  # reads never create


async def test_a_missing_bucket_that_may_not_be_created_is_configuration() -> None:
    recorded = RecordedStorage()
    recorded.buckets.clear()
    with pytest.raises(FailedPrecondition) as info:
        await ArtifactStore(_backend(recorded, create_bucket=False)).publish(FILES)
    assert info.value.reason == "SUPABASE_BUCKET_MISSING" and recorded.bucket_creates == []


async def test_a_key_that_cannot_create_the_bucket_is_configuration_naming_the_key_variable() -> None:
    recorded = RecordedStorage()
    recorded.buckets.clear()
    recorded.deny_bucket_create = True
    with pytest.raises(FailedPrecondition) as info:
        await ArtifactStore(_backend(recorded)).publish(FILES)
    assert info.value.reason == "SUPABASE_KEY_REFUSED"
    assert "ZX_TRAINER_SUPABASE_SERVICE_KEY" in str(info.value) and SERVICE_KEY not in str(info.value)


async def test_a_refused_key_on_read_is_configuration_not_an_outage() -> None:
    recorded = RecordedStorage()

    def refusing(request: httpx.Request) -> httpx.Response:
        recorded.handler(request)  # the headers are checked all the same
        # ERRORS.InvalidJWT: httpStatusCode 400, code 'InvalidJWT' (codes.ts); the message is jose's.
        return httpx.Response(
            400, json={"statusCode": "400", "error": "InvalidJWT", "message": "Invalid Compact JWS"}
        )

    backend = _backend(recorded, refusing)
    with pytest.raises(FailedPrecondition) as info:
        backend.get("manifests/x.json")
    assert info.value.reason == "SUPABASE_KEY_REFUSED"


async def test_an_sb_secret_key_goes_in_apikey_only_never_as_a_bearer_token() -> None:
    recorded = RecordedStorage(key="sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz")
    store = ArtifactStore(_backend(recorded))
    manifest = await store.publish(FILES)
    assert await store.read_all(manifest) == dict(sorted(FILES.items()))
    assert recorded.requests and all("authorization" not in r.headers for r in recorded.requests)
    assert all(r.headers["user-agent"] == "zehanx-trainer" for r in recorded.requests)


def test_a_publishable_key_is_refused_at_start_naming_the_variable() -> None:
    with pytest.raises(FailedPrecondition) as info:
        _backend(RecordedStorage(key="sb_publishable_abc123"))
    assert "ZX_TRAINER_SUPABASE_SERVICE_KEY" in str(info.value)
