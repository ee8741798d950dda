"""The gateway's inputs and fairness between users (security review M5 and M7, gateway parts).

M5: free-form values (hyperparameters, Predict instances, the settings' default options) are bounded
in size and depth before anything converts them, with INVALID_ARGUMENT naming the field.
M7: one user cannot take more than their share: CreateJob's rate, a job's memory request, the upload
quota under concurrency (checked and charged in one transaction), uploads and Predicts in progress,
and a resumed DownloadModel that must not re-hash the archive.

Everything runs against a real gateway on port 0 over real gRPC and the suite's real PostgreSQL; the
trainer behind Predict is a gRPC TrainerService on port 0 whose answers the test holds back.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from gateway_support import (
    Served,
    bearer,
    gateway_settings,
    publish_model,
    reason_of,
    rpc_error,
    serve_gateway,
    stop_gateway,
)
from google.protobuf import duration_pb2, struct_pb2
from support.stand_in_trainer import serve_trainer
from zehanx.common.v1 import prediction_pb2, resources_pb2
from zehanx.gateway.v1 import account_pb2, job_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.trainer.v1 import trainer_service_pb2 as tpb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as trpc
from zehanx_gateway import artifacts, convert, uploads
from zehanx_runtime.status import error_info_of, field_violations_of

MiB = 1024 * 1024
GiB = 1024 * MiB
ARTIFACT_ID = "b" * 64


def _fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [f for f, _ in field_violations_of(error)]


def _nested(depth: int) -> struct_pb2.Value:
    """A value ``depth`` lists deep around the number 1 (depth 0: the number)."""
    value = struct_pb2.Value(number_value=1)
    for _ in range(depth):
        outer = struct_pb2.Value()
        outer.list_value.values.append(value)
        value = outer
    return value


def _big_list(total_bytes: int) -> struct_pb2.Value:
    """A list of 100-character strings taking about ``total_bytes`` encoded."""
    value = struct_pb2.Value()
    value.list_value.values.extend(
        struct_pb2.Value(string_value="x" * 100) for _ in range(total_bytes // 104 + 1)
    )
    return value


def _job(**hyperparameters: struct_pb2.Value) -> pb.CreateJobRequest:
    request = pb.CreateJobRequest(job=job_pb2.Job(prompt="Create a sentiment analysis model"))
    for key, value in hyperparameters.items():
        request.job.options.hyperparameters[key].CopyFrom(value)
    return request


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the proto messages the gateway converted to JSON (MessageToDict) since the test began."""
    seen: list[str] = []
    real = convert.json_format.MessageToDict

    def counting(message: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(type(message).__name__)
        return real(message, *args, **kwargs)

    monkeypatch.setattr(convert.json_format, "MessageToDict", counting)
    return seen


async def _served(database_url: str, tmp_path: Path, **overrides: object) -> Served:
    return await serve_gateway(gateway_settings(database_url, tmp_path, **overrides))


# -- M5: free-form values -------------------------------------------------------------------------------


async def test_m5_a_10_mib_hyperparameter_is_refused_naming_the_field_before_any_conversion(
    served: Served, conversions: list[str]
) -> None:
    auth = bearer(await served.api_key("alice"))
    request = _job(big=_big_list(10 * MiB))
    assert request.ByteSize() > 10 * MiB
    refused = await rpc_error(served.stub.CreateJob(request, metadata=auth))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(refused) == ["job.options.hyperparameters"]
    assert reason_of(refused) == "VALUE_TOO_LARGE"
    assert conversions == []  # refused before MessageToDict ever saw it
    listed = await served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)
    assert list(listed.jobs) == []
    # Just under the limit is fine, and is converted as before.
    fits = _job(notes=struct_pb2.Value(string_value="y" * (convert.HYPERPARAMETERS_MAX_BYTES - 16)))
    job = await served.stub.CreateJob(fits, metadata=auth)
    assert len(job.options.hyperparameters["notes"].string_value) == convert.HYPERPARAMETERS_MAX_BYTES - 16


async def test_m5_deeply_nested_hyperparameters_are_refused_naming_the_entry(
    served: Served, conversions: list[str]
) -> None:
    auth = bearer(await served.api_key("alice"))
    limit = convert.HYPERPARAMETERS_MAX_DEPTH
    refused = await rpc_error(
        served.stub.CreateJob(
            _job(epochs=struct_pb2.Value(number_value=3), deep=_nested(limit + 1)), metadata=auth
        )
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(refused) == ['job.options.hyperparameters["deep"]']
    assert reason_of(refused) == "VALUE_TOO_DEEP"
    assert conversions == []
    job = await served.stub.CreateJob(_job(deep=_nested(limit)), metadata=auth)
    assert convert.value_depth(job.options.hyperparameters["deep"], 100) == limit


async def test_m5_user_settings_default_hyperparameters_are_bounded_the_same_way(
    served: Served, conversions: list[str]
) -> None:
    auth = bearer(await served.api_key("alice"))
    big = account_pb2.UserSettings()
    big.default_job_options.hyperparameters["big"].CopyFrom(_big_list(10 * MiB))
    refused = await rpc_error(
        served.stub.UpdateUserSettings(pb.UpdateUserSettingsRequest(settings=big), metadata=auth)
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(refused) == ["settings.default_job_options.hyperparameters"]
    deep = account_pb2.UserSettings()
    deep.default_job_options.hyperparameters["layers"].CopyFrom(
        _nested(convert.HYPERPARAMETERS_MAX_DEPTH + 1)
    )
    refused = await rpc_error(
        served.stub.UpdateUserSettings(pb.UpdateUserSettingsRequest(settings=deep), metadata=auth)
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(refused) == ['settings.default_job_options.hyperparameters["layers"]']
    assert conversions == []
    stored = await served.stub.GetUserSettings(pb.GetUserSettingsRequest(), metadata=auth)
    assert not stored.HasField("update_time")  # nothing was stored


# -- a trainer whose Predict answers only when the test lets it ------------------------------------------


@dataclass
class GatedTrainer(trpc.TrainerServiceServicer):
    """Answers at once, except instances that start with the string "wait": those wait for ``gate``."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[tpb.PredictRequest] = field(default_factory=list)
    waiting: int = 0

    async def Predict(self, request: tpb.PredictRequest, context: Any) -> tpb.PredictResponse:
        self.received.append(request)
        if request.instances and request.instances[0].string_value == "wait":
            self.waiting += 1
            await self.gate.wait()
        return tpb.PredictResponse(
            predictions=[
                prediction_pb2.Prediction(output=struct_pb2.Value(string_value="positive"))
                for _ in request.instances
            ],
            predict_duration=duration_pb2.Duration(nanos=1000),
        )


@pytest.fixture
async def trainer() -> AsyncIterator[tuple[GatedTrainer, str]]:
    servicer = GatedTrainer()
    async with serve_trainer(servicer) as address:
        try:
            yield servicer, address
        finally:
            servicer.gate.set()


def text(value: str) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=value)


async def test_m5_predict_instances_are_bounded_in_size_and_depth_before_reaching_the_trainer(
    served_with_trainer: Served, trainer: tuple[GatedTrainer, str], conversions: list[str]
) -> None:
    served, fake = served_with_trainer, trainer[0]
    auth = bearer(await served.api_key("alice"))
    model = await publish_model(served, "alice", b"weights", trainer_artifact_id=ARTIFACT_ID)
    limit = served.gateway.settings.predict_max_bytes
    conversions.clear()  # (publishing converted the model record)

    too_big = pb.PredictRequest(model_id=model.id, instances=[text("a"), _big_list(limit)])
    refused = await rpc_error(served.stub.Predict(too_big, metadata=auth))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(refused) == ["instances"]
    assert reason_of(refused) == "VALUE_TOO_LARGE"

    too_deep = pb.PredictRequest(
        model_id=model.id, instances=[text("a"), text("b"), _nested(convert.INSTANCE_MAX_DEPTH + 1)]
    )
    refused = await rpc_error(served.stub.Predict(too_deep, metadata=auth))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(refused) == ["instances[2]"]
    assert reason_of(refused) == "VALUE_TOO_DEEP"

    # Large enough to be walked in a worker thread: still refused, naming the deep one.
    large_and_deep = pb.PredictRequest(
        model_id=model.id,
        instances=[
            _big_list(2 * convert.INSTANCES_CHECKED_INLINE_BYTES),
            _nested(convert.INSTANCE_MAX_DEPTH + 1),
        ],
    )
    refused = await rpc_error(served.stub.Predict(large_and_deep, metadata=auth))
    assert _fields(refused) == ["instances[1]"]
    assert fake.received == []  # none of them reached the trainer
    assert conversions == []  # nor was any converted

    fine = [text("a great movie"), _nested(convert.INSTANCE_MAX_DEPTH)]
    answer = await served.stub.Predict(pb.PredictRequest(model_id=model.id, instances=fine), metadata=auth)
    assert len(answer.predictions) == 2
    assert list(fake.received[0].instances) == fine  # forwarded as sent


# -- M7: CreateJob's rate and memory cap ----------------------------------------------------------------


async def _user_jobs(served: Served, user: str) -> int:
    user_id = await served.user_id(user)
    async with served.gateway.pool.connection() as conn:
        cur = await conn.execute("select count(*) as n from zehanx.jobs where user_id = %s", (user_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def _create_and_cancel(served: Served, auth: tuple[tuple[str, str], ...], times: int) -> None:
    """``times`` jobs of ``auth``'s user, each cancelled right after it was created."""
    for _ in range(times):
        job = await served.stub.CreateJob(_job(), metadata=auth)
        await served.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=auth)


async def test_m7_create_and_cancel_in_a_loop_stops_at_the_per_user_rate(
    database_url: str, tmp_path: Path
) -> None:
    served = await _served(
        database_url, tmp_path, max_jobs_per_user_per_minute=3, max_active_jobs_per_user=100
    )
    try:
        alice = bearer(await served.api_key("alice"))
        bob = bearer(await served.api_key("bob"))
        await _create_and_cancel(served, alice, 3)
        refused = await rpc_error(served.stub.CreateJob(_job(), metadata=alice))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(refused) == "JOB_CREATE_RATE_EXCEEDED"
        assert "minute" in (refused.details() or "")
        assert await _user_jobs(served, "alice") == 3
        # Concurrent creates cannot pass the limit together (one lock per user), and bob has his own.
        results = await asyncio.gather(
            *(served.stub.CreateJob(_job(), metadata=bob) for _ in range(8)), return_exceptions=True
        )
        made = [r for r in results if isinstance(r, job_pb2.Job)]
        assert len(made) == 3
        assert {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)} == {
            grpc.StatusCode.RESOURCE_EXHAUSTED
        }
        assert await _user_jobs(served, "bob") == 3
    finally:
        await stop_gateway(served)


async def test_m7_the_daily_job_limit_counts_cancelled_jobs(database_url: str, tmp_path: Path) -> None:
    served = await _served(
        database_url, tmp_path, max_jobs_per_user_per_day=4, max_jobs_per_user_per_minute=100
    )
    try:
        alice = bearer(await served.api_key("alice"))
        await _create_and_cancel(served, alice, 4)
        refused = await rpc_error(served.stub.CreateJob(_job(), metadata=alice))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info_of(refused).metadata["window"] == "day"
        # Jobs older than a day no longer count.
        user_id = await served.user_id("alice")
        async with served.gateway.pool.connection() as conn, conn.transaction():
            # (the registry's trigger keeps create_time fixed; the test moves the clock, not the code)
            await conn.execute("set local session_replication_role = replica")
            await conn.execute(
                "update zehanx.jobs set create_time = create_time - interval '25 hours' where user_id = %s",
                (user_id,),
            )
        await served.stub.CreateJob(_job(), metadata=alice)
    finally:
        await stop_gateway(served)


async def test_m7_a_job_asking_for_more_memory_than_the_cap_is_invalid_argument(
    database_url: str, tmp_path: Path
) -> None:
    served = await _served(database_url, tmp_path, max_job_memory_bytes=2 * GiB)
    try:
        alice = bearer(await served.api_key("alice"))
        greedy = _job()
        greedy.job.options.resources.CopyFrom(resources_pb2.Resources(max_memory_bytes=16 * GiB))
        refused = await rpc_error(served.stub.CreateJob(greedy, metadata=alice))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _fields(refused) == ["job.options.resources.max_memory_bytes"]
        assert "ZX_GATEWAY_MAX_JOB_MEMORY_BYTES" in (refused.details() or "")
        modest = _job()
        modest.job.options.resources.CopyFrom(resources_pb2.Resources(max_memory_bytes=2 * GiB))
        job = await served.stub.CreateJob(modest, metadata=alice)
        assert job.options.resources.max_memory_bytes == 2 * GiB
    finally:
        await stop_gateway(served)


# -- M7: uploads ---------------------------------------------------------------------------------------


async def _upload_rows(served: Served, user: str) -> list[tuple[int, bool]]:
    user_id = await served.user_id(user)
    async with served.gateway.pool.connection() as conn:
        cur = await conn.execute(
            "select size_bytes, pending_since is not null as pending from zehanx.uploads where user_id = %s",
            (user_id,),
        )
        return [(int(r["size_bytes"]), bool(r["pending"])) for r in await cur.fetchall()]


def _bytes_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


async def test_m7_parallel_uploads_cannot_exceed_the_quota_together(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = uploads._write

    def slow_write(path: Path, content: bytes) -> None:
        time.sleep(0.2)  # every upload is in flight at once: the old read-then-write check let all pass
        real_write(path, content)

    monkeypatch.setattr(uploads, "_write", slow_write)
    quota, size, parallel = 100_000, 30_000, 8
    served = await _served(
        database_url, tmp_path, upload_quota_bytes=quota, max_concurrent_uploads_per_user=parallel
    )
    try:
        alice = bearer(await served.api_key("alice"))
        results = await asyncio.gather(
            *(
                served.stub.UploadFile(
                    pb.UploadFileRequest(filename=f"{n}.csv", content=b"x" * size), metadata=alice
                )
                for n in range(parallel)
            ),
            return_exceptions=True,
        )
        stored = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(stored) == quota // size == 3
        assert {reason_of(r) for r in refused} == {"UPLOAD_QUOTA_EXCEEDED"}
        rows = await _upload_rows(served, "alice")
        assert sum(s for s, _ in rows) <= quota and not any(pending for _, pending in rows)
        assert _bytes_on_disk(tmp_path / "uploads" / str(await served.user_id("alice"))) == 3 * size <= quota
    finally:
        await stop_gateway(served)


async def test_m7_uploads_in_progress_per_user_are_limited_and_others_are_not_held_up(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await _served(database_url, tmp_path, max_concurrent_uploads_per_user=2)
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    alice_folder = str(tmp_path / "uploads" / str(await served.user_id("alice")))
    release = threading.Event()
    real_write = uploads._write

    def held_write(path: Path, content: bytes) -> None:
        if str(path).startswith(alice_folder):
            release.wait(30)
        real_write(path, content)

    monkeypatch.setattr(uploads, "_write", held_write)
    try:
        first = [
            asyncio.ensure_future(
                served.stub.UploadFile(
                    pb.UploadFileRequest(filename=f"{n}.csv", content=b"a,b\n"), metadata=alice
                )
            )
            for n in range(2)
        ]
        for _ in range(500):
            if len(await _upload_rows(served, "alice")) == 2:
                break
            await asyncio.sleep(0.01)
        refused = await rpc_error(
            served.stub.UploadFile(
                pb.UploadFileRequest(filename="third.csv", content=b"a,b\n"), metadata=alice
            )
        )
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(refused) == "TOO_MANY_UPLOADS"
        await served.stub.UploadFile(pb.UploadFileRequest(filename="bob.csv", content=b"a,b\n"), metadata=bob)
        release.set()
        done = await asyncio.gather(*first)
        assert sorted(u.filename for u in done) == ["0.csv", "1.csv"]
        assert [p for _, p in await _upload_rows(served, "alice")] == [False, False]
    finally:
        release.set()
        await stop_gateway(served)


async def test_m7_a_failed_upload_gives_its_reserved_bytes_back(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Path, content: bytes) -> None:
        raise OSError(28, "No space left on device")

    served = await _served(database_url, tmp_path, upload_quota_bytes=1000)
    try:
        alice = bearer(await served.api_key("alice"))
        monkeypatch.setattr(uploads, "_write", full_disk)
        failed = await rpc_error(
            served.stub.UploadFile(
                pb.UploadFileRequest(filename="a.csv", content=b"x" * 1000), metadata=alice
            )
        )
        assert failed.code() == grpc.StatusCode.UNAVAILABLE
        assert await _upload_rows(served, "alice") == []
        monkeypatch.undo()
        stored = await served.stub.UploadFile(
            pb.UploadFileRequest(filename="a.csv", content=b"x" * 1000), metadata=alice
        )
        assert stored.size_bytes == 1000
    finally:
        await stop_gateway(served)


async def test_m7_a_cancelled_upload_leaves_neither_its_row_nor_its_file(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, release = threading.Event(), threading.Event()
    real_write = uploads._write

    def held_write(path: Path, content: bytes) -> None:
        writing.set()
        release.wait(30)
        real_write(path, content)  # the thread finishes its write after the call is gone

    monkeypatch.setattr(uploads, "_write", held_write)
    served = await _served(database_url, tmp_path)
    try:
        alice = bearer(await served.api_key("alice"))
        call = served.stub.UploadFile(
            pb.UploadFileRequest(filename="a.csv", content=b"x" * 500), metadata=alice
        )
        for _ in range(500):
            if writing.is_set():
                break
            await asyncio.sleep(0.01)
        assert await _upload_rows(served, "alice") == [(500, True)]  # charged while being written
        call.cancel()
        release.set()
        for _ in range(500):
            if not await _upload_rows(served, "alice"):
                break
            await asyncio.sleep(0.01)
        assert await _upload_rows(served, "alice") == []
        assert _bytes_on_disk(tmp_path / "uploads") == 0
    finally:
        release.set()
        await stop_gateway(served)


# -- M7: Predicts in progress ---------------------------------------------------------------------------


async def test_m7_a_third_concurrent_predict_of_one_user_is_refused_while_another_users_runs(
    served_with_trainer: Served, trainer: tuple[GatedTrainer, str]
) -> None:
    served, fake = served_with_trainer, trainer[0]
    assert served.gateway.settings.max_concurrent_predicts_per_user == 2
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    mine = await publish_model(served, "alice", b"alice weights", trainer_artifact_id=ARTIFACT_ID)
    his = await publish_model(served, "bob", b"bob weights", trainer_artifact_id=ARTIFACT_ID)
    held = [
        asyncio.ensure_future(
            served.stub.Predict(pb.PredictRequest(model_id=mine.id, instances=[text("wait")]), metadata=alice)
        )
        for _ in range(2)
    ]
    for _ in range(500):
        if fake.waiting == 2:
            break
        await asyncio.sleep(0.01)
    assert fake.waiting == 2
    refused = await rpc_error(
        served.stub.Predict(pb.PredictRequest(model_id=mine.id, instances=[text("now")]), metadata=alice)
    )
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(refused) == "TOO_MANY_PREDICTS"
    assert len(fake.received) == 2  # the third never reached the trainer
    answer = await served.stub.Predict(
        pb.PredictRequest(model_id=his.id, instances=[text("now")]), metadata=bob
    )
    assert answer.predictions[0].output.string_value == "positive"
    fake.gate.set()
    assert all(len(r.predictions) == 1 for r in await asyncio.gather(*held))
    # The places are free again once those finished.
    await served.stub.Predict(pb.PredictRequest(model_id=mine.id, instances=[text("again")]), metadata=alice)


# -- M7: resumed downloads -------------------------------------------------------------------------------


async def _download(served: Served, auth: Any, model_id: str, offset: int = 0) -> tuple[int, bytes]:
    parts = [
        p
        async for p in served.stub.DownloadModel(
            pb.DownloadModelRequest(model_id=model_id, offset=offset), metadata=auth
        )
    ]
    return parts[0].header.total_size_bytes, b"".join(p.chunk.data for p in parts[1:])


async def test_m7_download_at_the_end_or_resumed_does_not_hash_the_archive_again(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[int] = []
    real_hash = artifacts._hash_file

    def counting(handle: Any) -> str:
        hashed.append(1)
        return real_hash(handle)

    monkeypatch.setattr(artifacts, "_hash_file", counting)
    auth = bearer(await served.api_key("alice"))
    data = os.urandom(3 * MiB)
    model = await publish_model(served, "alice", data)
    size, whole = await _download(served, auth, model.id)
    assert (size, whole) == (len(data), data) and len(hashed) == 1

    size, nothing = await _download(served, auth, model.id, offset=len(data))
    assert (size, nothing) == (len(data), b"")
    size, tail = await _download(served, auth, model.id, offset=MiB)
    assert tail == data[MiB:]
    assert len(hashed) == 1  # neither the end nor the resumed download hashed 3 MiB again

    # Another file under the archive's name (another inode) is checked again, and refused if bad.
    path = served.gateway.artifacts.path_of(model.archive_sha256)  # type: ignore[attr-defined]
    swapped = path.with_name("swap")
    swapped.write_bytes(os.urandom(len(data)))
    os.replace(swapped, path)
    corrupt = await rpc_error(_download(served, auth, model.id, offset=MiB))
    assert corrupt.code() == grpc.StatusCode.DATA_LOSS
    assert len(hashed) == 2
