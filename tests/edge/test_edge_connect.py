"""Every public RPC of the gateway through its Connect edge, with plain HTTP/1.1 (httpx), against a real
gateway on a real PostgreSQL; the answers must be those the gRPC port gives for the same calls."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid

import grpc
import pytest
from edge_support import SERVICE, ConnectError, Edge, envelope, jwt_for, stream_error
from google.protobuf import json_format, struct_pb2
from support.gateway import publish_model
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import job_pb2

PROMPT = "Create a sentiment analysis model"


async def create(edge: Edge, token: str, prompt: str = PROMPT, **extra: object) -> dict:
    job = await edge.call("CreateJob", {"job": {"prompt": prompt}, **extra}, token)
    assert not isinstance(job, ConnectError), job
    return job


# -- jobs ----------------------------------------------------------------------------------------


async def test_jobs_over_connect_json_match_the_grpc_answers(edge: Edge) -> None:
    token = await edge.api_key("alice")
    job = await edge.call(
        "CreateJob",
        {"job": {"prompt": PROMPT, "sources": [{"url": "https://example.org/reviews.csv"}]}},
        token,
    )
    assert job["state"] == "JOB_STATE_QUEUED"
    assert uuid.UUID(job["id"])
    assert job["lastSequence"] == "1"  # int64 is a JSON string, fields are lowerCamelCase
    assert job["sources"][0]["url"] == "https://example.org/reviews.csv"

    # The very job the gRPC port returns: one domain behind both doors.
    over_grpc = await edge.stub.GetJob(
        pb.GetJobRequest(job_id=job["id"]), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert await edge.call("GetJob", {"jobId": job["id"]}, token) == json_format.MessageToDict(over_grpc)

    listed = await edge.call("ListJobs", {}, token)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    queued = await edge.call("ListJobs", {"states": ["JOB_STATE_QUEUED"]}, token)
    assert [j["id"] for j in queued["jobs"]] == [job["id"]]

    events = await edge.call("ListJobEvents", {"jobId": job["id"]}, token)
    assert [e["sequence"] for e in events["events"]] == ["1"]
    assert events["events"][0]["stateChange"]["toState"] == "JOB_STATE_QUEUED"

    cancelled = await edge.call("CancelJob", {"jobId": job["id"], "reason": "changed my mind"}, token)
    assert cancelled["state"] == "JOB_STATE_CANCELLED"
    after = await edge.call("ListJobs", {"states": ["JOB_STATE_QUEUED"]}, token)
    assert after.get("jobs", []) == []


async def test_create_job_is_idempotent_by_request_id_over_connect(edge: Edge) -> None:
    token = await edge.api_key("alice")
    request_id = str(uuid.uuid4())
    first = await create(edge, token, requestId=request_id)
    again = await create(edge, token, requestId=request_id)
    assert again["id"] == first["id"]
    reused = await edge.call("CreateJob", {"job": {"prompt": "other"}, "requestId": request_id}, token)
    assert isinstance(reused, ConnectError)
    assert (reused.http_status, reused.code, reused.reason()) == (409, "already_exists", "REQUEST_ID_REUSED")


async def test_binary_proto_unary_calls_work_too(edge: Edge) -> None:
    token = await edge.api_key("alice")
    request = pb.CreateJobRequest(job={"prompt": PROMPT})
    response = await edge.http.post(
        f"{SERVICE}/CreateJob",
        content=request.SerializeToString(),
        headers={"content-type": "application/proto", "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/proto"
    job = job_pb2.Job.FromString(response.content)
    assert job.prompt == PROMPT and job.id


async def test_side_effect_free_rpcs_answer_connect_get_requests(edge: Edge) -> None:
    token = await edge.api_key("alice")
    job = await create(edge, token)
    response = await edge.http.get(
        f"{SERVICE}/GetJob",
        params={"encoding": "json", "message": json.dumps({"jobId": job["id"]})},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.json()["id"] == job["id"]


# -- errors ----------------------------------------------------------------------------------------


async def test_invalid_requests_name_every_bad_field(edge: Edge) -> None:
    token = await edge.api_key("alice")
    missing = await edge.call("CreateJob", {}, token)
    assert isinstance(missing, ConnectError)
    assert (missing.http_status, missing.code) == (400, "invalid_argument")
    assert missing.violations() == ["job"]
    assert missing.reason() == "INVALID_REQUEST"

    bad = await edge.call("ListJobs", {"pageSize": 5000, "states": ["JOB_STATE_UNSPECIFIED"]}, token)
    assert isinstance(bad, ConnectError) and bad.code == "invalid_argument"
    assert sorted(bad.violations()) == ["page_size", "states[0]"]

    for method, body, field in [
        ("GetJob", {"jobId": "not-a-uuid"}, "job_id"),
        ("CancelJob", {"jobId": ""}, "job_id"),
        ("ListJobEvents", {"jobId": str(uuid.uuid4()), "afterSequence": "-1"}, "after_sequence"),
        ("GetModel", {"modelId": "x"}, "model_id"),
        ("DeleteModel", {"modelId": "x"}, "model_id"),
        ("ListModels", {"jobId": "x"}, "job_id"),
        ("Predict", {"modelId": str(uuid.uuid4())}, "instances"),
    ]:
        answer = await edge.call(method, body, token)
        assert isinstance(answer, ConnectError), method
        assert (answer.code, answer.violations()) == ("invalid_argument", [field]), method


async def test_undecodable_bodies_are_invalid_argument_not_unknown(edge: Edge) -> None:
    token = await edge.api_key("alice")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    for body in [b"{not json", b'{"job": {"prompt": 7}}', b'{"job": {"prompt": "x"}, "sources": []}']:
        response = await edge.http.post(f"{SERVICE}/CreateJob", content=body, headers=headers)
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid_argument"
    response = await edge.http.post(
        f"{SERVICE}/CreateJob",
        content=b"\xff\xff\xff",
        headers={**headers, "content-type": "application/proto"},
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_argument")


async def test_calls_without_valid_credentials_are_unauthenticated(edge: Edge) -> None:
    await edge.api_key("alice")
    job_id = str(uuid.uuid4())
    for token, reason in [
        (None, "CREDENTIALS_MISSING"),
        ("zx_0123456789abcdef_" + "A" * 43, "API_KEY_INVALID"),
        ("zx_short", "API_KEY_MALFORMED"),
        ("garbage", "CREDENTIALS_MALFORMED"),
        (jwt_for(uuid.uuid4(), expires_in=-60), "TOKEN_EXPIRED"),
    ]:
        answer = await edge.call("GetJob", {"jobId": job_id}, token)
        assert isinstance(answer, ConnectError), reason
        assert (answer.http_status, answer.code, answer.reason()) == (401, "unauthenticated", reason)
    # Authentication comes before validation: an anonymous caller learns nothing about the request.
    anonymous = await edge.call("CreateJob", {}, None)
    assert isinstance(anonymous, ConnectError) and anonymous.code == "unauthenticated"
    # And streams are guarded the same way.
    messages, end = await edge.stream("WatchJob", {"jobId": job_id}, None)
    error = stream_error(end)
    assert messages == [] and error is not None and error.code == "unauthenticated"


async def test_a_supabase_style_jwt_is_a_user_over_connect(edge: Edge) -> None:
    user = uuid.uuid4()
    token = jwt_for(user)
    job = await create(edge, token)
    assert (await edge.call("GetJob", {"jobId": job["id"]}, token))["id"] == job["id"]
    other = jwt_for(uuid.uuid4())
    hidden = await edge.call("GetJob", {"jobId": job["id"]}, other)
    assert isinstance(hidden, ConnectError) and hidden.code == "not_found"


async def test_unknown_and_other_users_ids_are_not_found(edge: Edge) -> None:
    alice = await edge.api_key("alice")
    bob = await edge.api_key("bob")
    job = await create(edge, alice)
    model = await publish_model(edge.gateway, "alice", b"weights")
    for method, body in [
        ("GetJob", {"jobId": str(uuid.uuid4())}),
        ("GetJob", {"jobId": job["id"]}),
        ("CancelJob", {"jobId": job["id"]}),
        ("ListJobEvents", {"jobId": job["id"]}),
        ("GetModel", {"modelId": model.id}),
        ("DeleteModel", {"modelId": model.id}),
        ("Predict", {"modelId": model.id, "instances": ["great"]}),
    ]:
        answer = await edge.call(method, body, bob)
        assert isinstance(answer, ConnectError), (method, answer)
        assert (answer.http_status, answer.code) == (404, "not_found"), method
    assert (await edge.call("ListJobs", {}, bob)).get("jobs", []) == []
    assert (await edge.call("ListModels", {}, bob)).get("models", []) == []
    for method, body in [("WatchJob", {"jobId": job["id"]}), ("DownloadModel", {"modelId": model.id})]:
        messages, end = await edge.stream(method, body, bob)
        error = stream_error(end)
        assert messages == [] and error is not None and error.code == "not_found", method
    # Bob's attempts changed nothing of Alice's.
    assert (await edge.call("GetJob", {"jobId": job["id"]}, alice))["state"] == "JOB_STATE_QUEUED"
    assert (await edge.call("GetModel", {"modelId": model.id}, alice))["id"] == model.id


async def test_unknown_paths_and_plain_grpc_get_clear_http_answers(edge: Edge) -> None:
    missing = await edge.http.post(f"{SERVICE}/NoSuchMethod", json={})
    assert missing.status_code == 404
    elsewhere = await edge.http.get("/nothing/here.js")  # extensionless paths are the web app's routes
    assert elsewhere.status_code == 404
    grpc_call = await edge.http.post(
        f"{SERVICE}/GetJob", content=b"", headers={"content-type": "application/grpc"}
    )
    assert grpc_call.status_code == 415
    assert "ZX_GATEWAY_PORT" in grpc_call.json()["message"]


# -- streams ---------------------------------------------------------------------------------------


async def test_watch_job_streams_a_snapshot_then_live_events_to_the_terminal_one(edge: Edge) -> None:
    token = await edge.api_key("alice")
    job = await create(edge, token)
    seen: list[dict] = []
    end: dict = {}
    snapshot_seen = asyncio.Event()

    async def watch() -> None:
        nonlocal end
        async for kind, value in edge.frames("WatchJob", {"jobId": job["id"]}, token):
            if kind == "message":
                seen.append(value["event"])
                snapshot_seen.set()
            else:
                end = value

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(snapshot_seen.wait(), 60)
    # The stream is open and live: cancelling now must reach it as an event, then end it.
    assert (await edge.call("CancelJob", {"jobId": job["id"]}, token))["state"] == "JOB_STATE_CANCELLED"
    await asyncio.wait_for(watcher, 60)
    assert end == {}, end  # a clean end of stream
    assert "snapshot" in seen[0]
    assert seen[0]["snapshot"]["id"] == job["id"]
    sequences = [int(e["sequence"]) for e in seen[1:]]
    assert sequences == list(range(1, len(sequences) + 1))
    assert seen[-1]["stateChange"]["toState"] == "JOB_STATE_CANCELLED"

    # Resuming from a sequence sends only what came after it; the gRPC port agrees event for event.
    resumed, end = await edge.stream("WatchJob", {"jobId": job["id"], "afterSequence": "1"}, token)
    assert end == {}
    assert [int(m["event"]["sequence"]) for m in resumed[1:]] == sequences[1:]
    over_grpc = [
        m
        async for m in edge.stub.WatchJob(
            pb.WatchJobRequest(job_id=job["id"], after_sequence=1),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    ]
    assert [m.event.sequence for m in over_grpc[1:]] == sequences[1:]


async def test_watch_job_over_binary_connect_streaming(edge: Edge) -> None:
    token = await edge.api_key("alice")
    job = await create(edge, token)
    await edge.call("CancelJob", {"jobId": job["id"]}, token)
    body = envelope(pb.WatchJobRequest(job_id=job["id"]).SerializeToString())
    response = await edge.http.post(
        f"{SERVICE}/WatchJob",
        content=body,
        headers={"content-type": "application/connect+proto", "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    data, frames = response.content, []
    while data:
        flags, size = int(data[0]), int.from_bytes(data[1:5], "big")
        frames.append((flags, data[5 : 5 + size]))
        data = data[5 + size :]
    assert frames[-1] == (2, b"{}")
    events = [pb.WatchJobResponse.FromString(payload).event for _, payload in frames[:-1]]
    assert events[0].WhichOneof("event") == "snapshot"
    assert events[-1].state_change.to_state == job_pb2.JOB_STATE_CANCELLED


async def test_a_watcher_that_disconnects_is_unsubscribed_at_once(edge: Edge) -> None:
    token = await edge.api_key("alice")
    job = await create(edge, token)
    job_id = uuid.UUID(job["id"])
    hub = edge.gateway.hub

    def subscribers() -> int:
        return hub.subscriber_count(job_id)

    frames = edge.frames("WatchJob", {"jobId": job["id"]}, token)
    kind, first = await anext(frames)
    assert kind == "message" and "snapshot" in first["event"]
    for _ in range(600):
        if subscribers() == 1:
            break
        await asyncio.sleep(0.05)
    assert subscribers() == 1
    await frames.aclose()  # the client goes away while the job is quiet (QUEUED, no events coming)
    for _ in range(600):
        if subscribers() == 0:
            break
        await asyncio.sleep(0.05)
    assert subscribers() == 0, "the stream of a client that went away still holds its subscription"


# -- models ----------------------------------------------------------------------------------------


async def test_models_list_get_download_and_delete_over_connect(edge: Edge) -> None:
    token = await edge.api_key("alice")
    archive = bytes(range(256)) * 40  # 10 KiB: three chunks of 4 KiB
    model = await publish_model(edge.gateway, "alice", archive)

    listed = await edge.call("ListModels", {}, token)
    assert [m["id"] for m in listed["models"]] == [model.id]
    text = await edge.call("ListModels", {"taskFamily": "TASK_FAMILY_TEXT_CLASSIFICATION"}, token)
    assert [m["id"] for m in text["models"]] == [model.id]
    got = await edge.call("GetModel", {"modelId": model.id}, token)
    assert got["heldOutMetrics"]["values"]["accuracy"] == pytest.approx(0.91)

    messages, end = await edge.stream("DownloadModel", {"modelId": model.id, "chunkSizeBytes": 4096}, token)
    assert end == {}
    header = messages[0]["header"]
    assert header["sha256"] == hashlib.sha256(archive).hexdigest()
    assert int(header["totalSizeBytes"]) == len(archive)
    chunks = [m["chunk"] for m in messages[1:]]
    assert [int(c.get("offset", "0")) for c in chunks] == [0, 4096, 8192]
    downloaded = b"".join(base64.b64decode(c["data"]) for c in chunks)
    assert hashlib.sha256(downloaded).hexdigest() == header["sha256"]

    resumed, _ = await edge.stream("DownloadModel", {"modelId": model.id, "offset": "8192"}, token)
    assert base64.b64decode(resumed[1]["chunk"]["data"]) == archive[8192:]
    beyond, end = await edge.stream("DownloadModel", {"modelId": model.id, "offset": "99999"}, token)
    error = stream_error(end)
    assert beyond == [] and error is not None and error.code == "out_of_range"

    assert await edge.call("DeleteModel", {"modelId": model.id}, token) == {}
    gone = await edge.call("GetModel", {"modelId": model.id}, token)
    assert isinstance(gone, ConnectError) and gone.code == "not_found"


async def test_predict_reaches_the_same_trainer_path_as_grpc(edge: Edge) -> None:
    token = await edge.api_key("alice")
    unrunnable = await publish_model(edge.gateway, "alice", b"old weights")
    refused = await edge.call("Predict", {"modelId": unrunnable.id, "instances": ["fine"]}, token)
    assert isinstance(refused, ConnectError)
    assert (refused.http_status, refused.code) == (400, "failed_precondition")

    model = await publish_model(edge.gateway, "alice", b"weights", trainer_artifact_id="artifact-1")
    answer = await edge.call("Predict", {"modelId": model.id, "instances": ["a great movie"]}, token)
    assert isinstance(answer, ConnectError)
    with pytest.raises(grpc.aio.AioRpcError) as over_grpc:
        await edge.stub.Predict(
            pb.PredictRequest(model_id=model.id, instances=[struct_pb2.Value(string_value="a great movie")]),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    # Same code, same reason, whichever door the call came through.
    assert over_grpc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (answer.http_status, answer.code, answer.reason()) == (503, "unavailable", "TRAINER_UNAVAILABLE")
    assert answer.message == over_grpc.value.details()
