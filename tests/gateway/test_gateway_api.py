"""The public API over real gRPC against a real PostgreSQL: jobs, events, models, isolation, limits."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

import grpc
import pytest
from gateway_support import Served, bearer, gateway_settings, publish_model, serve_gateway, stop_gateway
from google.protobuf import struct_pb2
from prometheus_client import REGISTRY
from zehanx.common.v1 import dataset_pb2, task_family_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import job_event_pb2, job_pb2
from zehanx_gateway import convert
from zehanx_gateway.domain import JobError, JobStage, JobState
from zehanx_runtime.status import error_info_of, field_violations_of


def create_request(
    prompt: str = "Create a sentiment analysis model", request_id: str = ""
) -> pb.CreateJobRequest:
    return pb.CreateJobRequest(job=job_pb2.Job(prompt=prompt), request_id=request_id)


async def test_create_get_list_and_events_of_a_job(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    source = dataset_pb2.DataSource(url="https://example.org/reviews.csv")
    request = pb.CreateJobRequest(job=job_pb2.Job(prompt="Classify reviews", sources=[source]))
    job = await served.stub.CreateJob(request, metadata=auth)
    assert job.state == job_pb2.JOB_STATE_QUEUED
    assert uuid.UUID(job.id)
    assert job.last_sequence == 1
    assert job.sources[0].url == "https://example.org/reviews.csv"

    got = await served.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=auth)
    assert got == job

    listed = await served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)
    assert [j.id for j in listed.jobs] == [job.id]

    events = await served.stub.ListJobEvents(pb.ListJobEventsRequest(job_id=job.id), metadata=auth)
    assert [e.sequence for e in events.events] == [1]
    first = events.events[0]
    assert first.WhichOneof("event") == "state_change"
    assert first.state_change.to_state == job_pb2.JOB_STATE_QUEUED


async def test_list_jobs_paginates_newest_first_and_filters_by_state(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    served.gateway.jobs._max_active = None  # this test makes more jobs than the default limit
    ids = []
    for n in range(7):
        ids.append((await served.stub.CreateJob(create_request(f"model {n}"), metadata=auth)).id)
    await served.stub.CancelJob(pb.CancelJobRequest(job_id=ids[0]), metadata=auth)

    seen: list[str] = []
    token = ""
    while True:
        page = await served.stub.ListJobs(pb.ListJobsRequest(page_size=3, page_token=token), metadata=auth)
        assert len(page.jobs) <= 3
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))

    cancelled = await served.stub.ListJobs(
        pb.ListJobsRequest(states=[job_pb2.JOB_STATE_CANCELLED]), metadata=auth
    )
    assert [j.id for j in cancelled.jobs] == [ids[0]]

    # A token is bound to its filter: reusing it with another filter is refused with the field named.
    first = await served.stub.ListJobs(pb.ListJobsRequest(page_size=2), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await served.stub.ListJobs(
            pb.ListJobsRequest(
                page_size=2, page_token=first.next_page_token, states=[job_pb2.JOB_STATE_QUEUED]
            ),
            metadata=auth,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(bad.value)] == ["page_token"]


async def test_create_is_idempotent_by_request_id_and_refuses_a_reused_id(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    request_id = str(uuid.uuid4())
    first = await served.stub.CreateJob(create_request(request_id=request_id), metadata=auth)
    again = await served.stub.CreateJob(create_request(request_id=request_id), metadata=auth)
    assert again.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await served.stub.CreateJob(create_request("something else", request_id=request_id), metadata=auth)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info_of(reused.value)
    assert info is not None and info.reason == "REQUEST_ID_REUSED"


async def test_32_concurrent_creates_with_one_request_id_make_one_job(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    request = create_request(request_id=str(uuid.uuid4()))
    jobs = await asyncio.gather(*(served.stub.CreateJob(request, metadata=auth) for _ in range(32)))
    assert len({j.id for j in jobs}) == 1
    listed = await served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)
    assert len(listed.jobs) == 1


async def test_unfinished_jobs_per_user_are_limited(served: Served) -> None:
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    limit = served.gateway.settings.max_active_jobs_per_user
    made = [await served.stub.CreateJob(create_request(f"job {n}"), metadata=alice) for n in range(limit)]

    def counted(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    refused_before = counted("zx_gateway_rate_limit_refusals_total", limit="active_jobs")
    with pytest.raises(grpc.aio.AioRpcError) as over:
        await served.stub.CreateJob(create_request("one too many"), metadata=alice)
    assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info_of(over.value).reason == "TOO_MANY_ACTIVE_JOBS"
    # The refusal is counted for operators (Prometheus), by limit, with no user in the labels.
    assert counted("zx_gateway_rate_limit_refusals_total", limit="active_jobs") == refused_before + 1
    # Another user is not affected; a finished job frees a place.
    await served.stub.CreateJob(create_request("bob's"), metadata=bob)
    await served.stub.CancelJob(pb.CancelJobRequest(job_id=made[0].id), metadata=alice)
    await served.stub.CreateJob(create_request("now it fits"), metadata=alice)


async def test_cancel_follows_the_state_machine(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    jobs = served.gateway.jobs

    queued = await served.stub.CreateJob(create_request("a"), metadata=auth)
    cancelled = await served.stub.CancelJob(
        pb.CancelJobRequest(job_id=queued.id, reason="changed my mind"), metadata=auth
    )
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert "changed my mind" in cancelled.error.message
    assert cancelled.HasField("end_time")
    again = await served.stub.CancelJob(pb.CancelJobRequest(job_id=queued.id), metadata=auth)
    assert again.state == job_pb2.JOB_STATE_CANCELLED and again.last_sequence == cancelled.last_sequence

    running = await served.stub.CreateJob(create_request("b"), metadata=auth)
    await jobs.transition(uuid.UUID(running.id), JobState.RUNNING, stage=JobStage.TRAINING, reason="test")
    cancelling = await served.stub.CancelJob(pb.CancelJobRequest(job_id=running.id), metadata=auth)
    assert cancelling.state == job_pb2.JOB_STATE_CANCELLING
    assert cancelling.stage == job_pb2.JOB_STAGE_TRAINING

    failed = await served.stub.CreateJob(create_request("c"), metadata=auth)
    await jobs.transition(uuid.UUID(failed.id), JobState.RUNNING)
    await jobs.transition(
        uuid.UUID(failed.id), JobState.FAILED, error=JobError("INTERNAL", "boom", "PROGRAM_FAILED")
    )
    with pytest.raises(grpc.aio.AioRpcError) as finished:
        await served.stub.CancelJob(pb.CancelJobRequest(job_id=failed.id), metadata=auth)
    assert finished.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    got = await served.stub.GetJob(pb.GetJobRequest(job_id=failed.id), metadata=auth)
    assert got.state == job_pb2.JOB_STATE_FAILED
    assert got.error.message == "boom"


async def test_list_job_events_pages_through_the_history(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    job = await served.stub.CreateJob(create_request(), metadata=auth)
    job_id = uuid.UUID(job.id)
    await served.gateway.jobs.transition(job_id, JobState.RUNNING, stage=JobStage.CRAWLING)
    produced = [
        job_event_pb2.JobEvent(stage_progress=job_event_pb2.StageProgress(message=f"step {n}", rows_done=n))
        for n in range(25)
    ]
    await served.gateway.jobs.publish([convert.pending_event(job_id, e) for e in produced])

    sequences: list[int] = []
    messages: list[str] = []
    token = ""
    while True:
        page = await served.stub.ListJobEvents(
            pb.ListJobEventsRequest(job_id=job.id, after_sequence=1, page_size=10, page_token=token),
            metadata=auth,
        )
        sequences += [e.sequence for e in page.events]
        messages += [e.stage_progress.message for e in page.events if e.HasField("stage_progress")]
        token = page.next_page_token
        if not token:
            break
    assert sequences == list(range(2, 28))  # 2 = the RUNNING transition, then 25 progress events
    assert messages == [f"step {n}" for n in range(25)]


async def test_models_list_get_download_and_delete(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    data = os.urandom(3 * 1024 * 1024 + 17)
    model = await publish_model(served, "alice", data)

    listed = await served.stub.ListModels(pb.ListModelsRequest(), metadata=auth)
    assert [m.id for m in listed.models] == [model.id]
    text_only = await served.stub.ListModels(
        pb.ListModelsRequest(task_family=task_family_pb2.TASK_FAMILY_TABULAR_REGRESSION), metadata=auth
    )
    assert list(text_only.models) == []

    got = await served.stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=auth)
    assert got.held_out_metrics.values["accuracy"] == pytest.approx(0.91)
    assert list(got.class_labels) == ["negative", "positive"]

    parts = [
        p async for p in served.stub.DownloadModel(pb.DownloadModelRequest(model_id=model.id), metadata=auth)
    ]
    header = parts[0].header
    assert header.sha256 == hashlib.sha256(data).hexdigest()
    assert header.total_size_bytes == len(data)
    assert header.filename.endswith(f"{model.id}.zip")
    chunks = [p.chunk for p in parts[1:]]
    assert all(len(c.data) <= 1024 * 1024 for c in chunks)
    assert b"".join(c.data for c in chunks) == data
    assert [c.offset for c in chunks] == [n * 1024 * 1024 for n in range(len(chunks))]

    resumed = [
        p
        async for p in served.stub.DownloadModel(
            pb.DownloadModelRequest(model_id=model.id, offset=len(data) - 100, chunk_size_bytes=4096),
            metadata=auth,
        )
    ]
    assert resumed[0].header.offset == len(data) - 100
    assert b"".join(p.chunk.data for p in resumed[1:]) == data[-100:]

    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        async for _ in served.stub.DownloadModel(
            pb.DownloadModelRequest(model_id=model.id, offset=len(data) + 1), metadata=auth
        ):
            pass
    assert beyond.value.code() == grpc.StatusCode.OUT_OF_RANGE

    path = served.gateway.artifacts.path_of(header.sha256)  # type: ignore[attr-defined]
    await served.stub.DeleteModel(pb.DeleteModelRequest(model_id=model.id), metadata=auth)
    assert not path.exists()
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await served.stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=auth)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_archive_shared_by_two_models_outlives_the_first_delete(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    data = b"the same archive bytes"
    first = await publish_model(served, "alice", data, title="one")
    second = await publish_model(served, "alice", data, title="two")
    path = served.gateway.artifacts.path_of(first.archive_sha256)  # type: ignore[attr-defined]
    await served.stub.DeleteModel(pb.DeleteModelRequest(model_id=first.id), metadata=auth)
    assert path.exists()
    parts = [
        p async for p in served.stub.DownloadModel(pb.DownloadModelRequest(model_id=second.id), metadata=auth)
    ]
    assert b"".join(p.chunk.data for p in parts[1:]) == data
    await served.stub.DeleteModel(pb.DeleteModelRequest(model_id=second.id), metadata=auth)
    assert not path.exists()


async def test_a_corrupted_archive_is_data_loss_not_served(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    data = b"x" * 10_000
    model = await publish_model(served, "alice", data)
    path = served.gateway.artifacts.path_of(model.archive_sha256)  # type: ignore[attr-defined]
    path.write_bytes(b"y" * 10_000)  # same size, other bytes
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as corrupt:
        async for part in served.stub.DownloadModel(
            pb.DownloadModelRequest(model_id=model.id), metadata=auth
        ):
            received.append(part)
    assert corrupt.value.code() == grpc.StatusCode.DATA_LOSS
    assert not any(p.HasField("chunk") for p in received)


async def test_another_user_gets_not_found_from_every_rpc_on_my_job_and_model(served: Served) -> None:
    alice = bearer(await served.api_key("alice"))
    mallory = bearer(await served.api_key("mallory"))
    job = await served.stub.CreateJob(create_request(), metadata=alice)
    model = await publish_model(served, "alice", b"alice's weights")
    stub = served.stub

    async def drain(stream: object) -> None:
        async for _ in stream:  # type: ignore[attr-defined]
            pass

    calls = {
        "GetJob": stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=mallory),
        "CancelJob": stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=mallory),
        "WatchJob": drain(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=mallory)),
        "ListJobEvents": stub.ListJobEvents(pb.ListJobEventsRequest(job_id=job.id), metadata=mallory),
        "GetModel": stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=mallory),
        "DownloadModel": drain(
            stub.DownloadModel(pb.DownloadModelRequest(model_id=model.id), metadata=mallory)
        ),
        "DeleteModel": stub.DeleteModel(pb.DeleteModelRequest(model_id=model.id), metadata=mallory),
        "Predict": stub.Predict(
            pb.PredictRequest(model_id=model.id, instances=[struct_pb2.Value(string_value="x")]),
            metadata=mallory,
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND, name
    # Nor do lists show them; and nothing changed for alice.
    assert list((await stub.ListJobs(pb.ListJobsRequest(), metadata=mallory)).jobs) == []
    assert list((await stub.ListModels(pb.ListModelsRequest(), metadata=mallory)).models) == []
    assert list((await stub.ListModels(pb.ListModelsRequest(job_id=job.id), metadata=mallory)).models) == []
    mine = await stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=alice)
    assert mine.state == job_pb2.JOB_STATE_QUEUED
    assert (await stub.GetModel(pb.GetModelRequest(model_id=model.id), metadata=alice)).id == model.id


async def test_a_bad_request_names_its_fields(served: Served) -> None:
    auth = bearer(await served.api_key("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await served.stub.CreateJob(
            pb.CreateJobRequest(job=job_pb2.Job(prompt=""), request_id="nope"), metadata=auth
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in field_violations_of(bad.value)}
    assert {"job.prompt", "request_id"} <= fields

    with pytest.raises(grpc.aio.AioRpcError) as nul:
        await served.stub.CreateJob(create_request("a prompt with a \x00 inside"), metadata=auth)
    assert nul.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(nul.value)] == ["job.prompt"]


async def test_a_second_replica_serves_the_same_registry(
    database_url: str, tmp_path: object, served: Served
) -> None:
    other = await serve_gateway(gateway_settings(database_url, tmp_path))  # type: ignore[arg-type]
    try:
        auth = bearer(await served.api_key("alice"))
        job = await served.stub.CreateJob(create_request(request_id=str(uuid.uuid4())), metadata=auth)
        seen = await other.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=auth)
        assert seen.id == job.id
    finally:
        await stop_gateway(other)
