"""The dashboard's account and data RPCs through the Connect edge with plain HTTP/1.1 JSON (what the
browser sends): datasets, uploads, API keys, provider keys and settings, each with its errors
(invalid argument naming the fields, unauthenticated, not found), against a real gateway on a real
PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from edge_support import ConnectError, Edge, jwt_for, serve, stop
from zehanx.gateway.v1 import job_event_pb2
from zehanx_gateway import convert
from zehanx_gateway.domain import PendingEvent

SECRETS_KEY = "edge-account-api-secrets-key-0123456789"


@pytest.fixture
async def edge(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Edge]:
    """The edge of a gateway that can seal provider keys (ZX_GATEWAY_SECRETS_KEY set)."""
    monkeypatch.setenv("ZX_GATEWAY_SECRETS_KEY", SECRETS_KEY)
    served = await serve(database_url, tmp_path)
    try:
        yield served
    finally:
        await stop(served)


def ok(answer: object) -> dict:
    assert not isinstance(answer, ConnectError), answer
    assert isinstance(answer, dict)
    return answer


def failed(answer: object, code: str) -> ConnectError:
    assert isinstance(answer, ConnectError), answer
    assert answer.code == code, (answer.code, answer.message)
    return answer


async def test_datasets_through_connect(edge: Edge) -> None:
    alice = await edge.api_key("alice")
    bob = await edge.api_key("bob")
    job = ok(await edge.call("CreateJob", {"job": {"prompt": "Classify reviews"}}, alice))
    built = job_event_pb2.DatasetBuilt(name="reviews", target_column="label", train_row_count=40)
    built.preview_rows.add().update({"text": "<img src=x onerror=alert(1)>", "label": "pos"})
    pending = convert.pending_event(uuid.UUID(job["id"]), job_event_pb2.JobEvent(dataset_built=built))
    await edge.gateway.jobs.publish([PendingEvent(pending.job_id, pending.kind, pending.payload)])

    listed = ok(await edge.call("ListDatasets", {"pageSize": 10}, alice))
    assert [d["jobId"] for d in listed["datasets"]] == [job["id"]]
    record = ok(await edge.call("GetDataset", {"jobId": job["id"]}, alice))
    assert record["jobPrompt"] == "Classify reviews"
    assert record["dataset"]["trainRowCount"] == "40"  # int64 is a string in JSON
    assert record["dataset"]["previewRows"] == [{"text": "<img src=x onerror=alert(1)>", "label": "pos"}]

    assert (
        failed(await edge.call("GetDataset", {"jobId": job["id"]}, bob), "not_found").reason()
        == "JOB_NOT_FOUND"
    )
    assert failed(
        await edge.call("GetDataset", {"jobId": "nope"}, alice), "invalid_argument"
    ).violations() == ["job_id"]
    assert failed(await edge.call("ListDatasets", {}), "unauthenticated")
    assert failed(
        await edge.call("ListDatasets", {"pageSize": -1}, alice), "invalid_argument"
    ).violations() == ["page_size"]


async def test_upload_through_connect_then_a_job_on_it(edge: Edge) -> None:
    alice = await edge.api_key("alice")
    bob = await edge.api_key("bob")
    content = b"text,label\ngreat phone,pos\nbroken on day one,neg\n"
    uploaded = ok(
        await edge.call(
            "UploadFile", {"filename": "reviews.csv", "content": base64.b64encode(content).decode()}, alice
        )
    )
    assert uploaded["sizeBytes"] == str(len(content))
    assert uploaded["sha256"] == hashlib.sha256(content).hexdigest()
    source = {"uploadId": uploaded["uploadId"]}
    job = ok(
        await edge.call("CreateJob", {"job": {"prompt": "review sentiment", "sources": [source]}}, alice)
    )
    assert job["sources"] == [source]

    theirs = failed(
        await edge.call("CreateJob", {"job": {"prompt": "review sentiment", "sources": [source]}}, bob),
        "invalid_argument",
    )
    assert theirs.violations() == ["job.sources[0].upload_id"]
    assert failed(
        await edge.call("UploadFile", {"filename": "a/b.csv", "content": "YQ=="}, alice), "invalid_argument"
    ).violations() == ["filename"]
    assert failed(
        await edge.call("UploadFile", {"filename": "a.csv", "content": ""}, alice), "invalid_argument"
    ).violations() == ["content"]
    assert failed(await edge.call("UploadFile", {"filename": "a.csv", "content": "YQ=="}), "unauthenticated")


async def test_api_keys_through_connect_revoked_key_stops_at_once(edge: Edge) -> None:
    alice = await edge.api_key("alice")
    bob_session = jwt_for(uuid.uuid4())  # a signed-in browser user manages their keys too
    created = ok(await edge.call("CreateApiKey", {"label": "CI"}, alice))
    secret = created["secret"]
    key_id = created["apiKey"]["keyId"]
    assert secret.startswith(f"zx_{key_id}_")
    assert ok(await edge.call("ListJobs", {}, secret)) == {}
    listed = ok(await edge.call("ListApiKeys", {}, alice))
    assert [k["label"] for k in listed["apiKeys"]] == ["CI", "test"]
    assert all("secret" not in k for k in listed["apiKeys"])

    assert failed(await edge.call("RevokeApiKey", {"keyId": key_id}, bob_session), "not_found")
    revoked = ok(await edge.call("RevokeApiKey", {"keyId": key_id}, alice))
    assert "revokeTime" in revoked
    assert failed(await edge.call("ListJobs", {}, secret), "unauthenticated").reason() == "API_KEY_REVOKED"
    assert failed(
        await edge.call("RevokeApiKey", {"keyId": "x"}, alice), "invalid_argument"
    ).violations() == ["key_id"]
    assert failed(
        await edge.call("CreateApiKey", {"label": "x" * 201}, alice), "invalid_argument"
    ).violations() == ["label"]
    assert failed(await edge.call("ListApiKeys", {}), "unauthenticated")
    assert failed(await edge.call("CreateApiKey", {"label": "x"}), "unauthenticated")
    mine = ok(await edge.call("CreateApiKey", {}, bob_session))
    assert (
        ok(await edge.call("ListApiKeys", {}, bob_session))["apiKeys"][0]["keyId"] == mine["apiKey"]["keyId"]
    )


async def test_provider_keys_through_connect_hints_only(edge: Edge) -> None:
    alice = await edge.api_key("alice")
    secret = "fc-" + "0a1b2c3d" * 4
    stored = ok(
        await edge.call("SetProviderKey", {"provider": "PROVIDER_FIRECRAWL", "secret": secret}, alice)
    )
    assert stored["provider"] == "PROVIDER_FIRECRAWL"
    assert stored["hint"] == "fc-0…2c3d"
    assert secret not in str(stored)
    listed = ok(await edge.call("ListProviderKeys", {}, alice))
    assert [(k["provider"], k["hint"]) for k in listed["providerKeys"]] == [
        ("PROVIDER_FIRECRAWL", "fc-0…2c3d")
    ]
    assert ok(await edge.call("DeleteProviderKey", {"provider": "PROVIDER_FIRECRAWL"}, alice)) == {}
    assert ok(await edge.call("ListProviderKeys", {}, alice)) == {}

    bad = failed(
        await edge.call("SetProviderKey", {"provider": "PROVIDER_UNSPECIFIED", "secret": "short"}, alice),
        "invalid_argument",
    )
    assert sorted(bad.violations()) == ["provider", "secret"]
    assert failed(await edge.call("DeleteProviderKey", {}, alice), "invalid_argument").violations() == [
        "provider"
    ]
    assert failed(
        await edge.call("SetProviderKey", {"provider": "PROVIDER_GROQ", "secret": secret}), "unauthenticated"
    )
    assert failed(await edge.call("ListProviderKeys", {}), "unauthenticated")
    assert failed(await edge.call("DeleteProviderKey", {"provider": "PROVIDER_E2B"}), "unauthenticated")


async def test_user_settings_through_connect(edge: Edge) -> None:
    alice = await edge.api_key("alice")
    assert ok(await edge.call("GetUserSettings", {}, alice)) == {}
    wanted = {"defaultJobOptions": {"maxRepairAttempts": 2, "hyperparameters": {"epochs": 4}}}
    updated = ok(await edge.call("UpdateUserSettings", {"settings": wanted}, alice))
    assert updated["defaultJobOptions"] == wanted["defaultJobOptions"]
    assert "updateTime" in updated
    assert ok(await edge.call("GetUserSettings", {}, alice)) == updated

    bad = failed(
        await edge.call(
            "UpdateUserSettings",
            {"settings": {"defaultJobOptions": {"hyperparameters": {"Bad-Key": 1}}}},
            alice,
        ),
        "invalid_argument",
    )
    assert bad.violations() and all(
        v.startswith("settings.default_job_options.hyperparameters") for v in bad.violations()
    )
    assert failed(await edge.call("UpdateUserSettings", {}, alice), "invalid_argument").violations() == [
        "settings"
    ]
    assert failed(await edge.call("GetUserSettings", {}, "zx_notakey"), "unauthenticated")
