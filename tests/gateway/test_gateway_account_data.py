"""The dashboard's account and data RPCs over real gRPC against a real PostgreSQL: datasets read from
the jobs' ``dataset_built`` events, uploads as job sources, API keys over the API, provider keys
sealed at rest, and user settings. Each user sees and touches only their own."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest
from gateway_support import (
    Served,
    bearer,
    gateway_settings,
    reason_of,
    rpc_error,
    serve_gateway,
    stop_gateway,
)
from google.protobuf import json_format, struct_pb2
from zehanx.common.v1 import dataset_pb2, task_family_pb2
from zehanx.gateway.v1 import account_pb2, job_event_pb2, job_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx_gateway import convert
from zehanx_gateway.clients.pipeline import GrpcCodegen, GrpcCrawler, GrpcTrainer
from zehanx_gateway.domain import PendingEvent, Provider
from zehanx_gateway.orchestrator.ports import caller_keys
from zehanx_runtime import errors, provider_keys
from zehanx_runtime.status import field_violations_of

SECRETS_KEY = "test-secrets-key-0123456789abcdef-0123456789"
REPO = Path(__file__).resolve().parents[2]
PENGUINS = REPO.parent / "shared" / "data" / "palmer_penguins" / "penguins.csv"


@pytest.fixture
async def keyed(database_url: str, tmp_path: Path) -> Served:
    """A gateway with a secrets key (provider keys can be stored)."""
    running = await serve_gateway(gateway_settings(database_url, tmp_path, secrets_key=SECRETS_KEY))
    try:
        yield running
    finally:
        await stop_gateway(running)


def dataset_built(rows: int, name: str) -> job_event_pb2.DatasetBuilt:
    preview = []
    for n in range(min(rows, 20)):
        row = struct_pb2.Struct()
        row.update({"text": f"review {n} of {name}", "label": "pos" if n % 2 else "neg"})
        preview.append(row)
    return job_event_pb2.DatasetBuilt(
        dataset_id=f"ds-{name}",
        name=name,
        task_family=task_family_pb2.TASK_FAMILY_TEXT_CLASSIFICATION,
        target_column="label",
        train_row_count=rows,
        validation_row_count=rows // 8,
        test_row_count=rows // 8,
        preview_rows=preview,
    )


async def publish_dataset(served: Served, job_id: str, built: job_event_pb2.DatasetBuilt) -> None:
    event = job_event_pb2.JobEvent(dataset_built=built)
    pending = convert.pending_event(uuid.UUID(job_id), event)
    # As the orchestrator writes it: with the whole dataset again for resuming (never shown).
    payload = {**pending.payload, "zx_resume": {"dataset": {"id": "secret-resume-data"}}}
    await served.gateway.jobs.publish([PendingEvent(pending.job_id, pending.kind, payload)])


# -- datasets ----------------------------------------------------------------------------------------


async def test_datasets_are_the_jobs_dataset_built_events_newest_first_and_only_the_owners(
    served: Served,
) -> None:
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    jobs = []
    for n in range(4):
        request = pb.CreateJobRequest(job=job_pb2.Job(prompt=f"sentiment {n}"))
        jobs.append((await served.stub.CreateJob(request, metadata=alice)).id)
    for n in range(3):
        await publish_dataset(served, jobs[n], dataset_built(100 + n, f"reviews-{n}"))

    seen: list[str] = []
    token = ""
    while True:
        page = await served.stub.ListDatasets(
            pb.ListDatasetsRequest(page_size=2, page_token=token), metadata=alice
        )
        assert len(page.datasets) <= 2
        seen += [d.job_id for d in page.datasets]
        token = page.next_page_token
        if not token:
            break
    assert seen == [jobs[2], jobs[1], jobs[0]]  # newest first; the job without a dataset is not listed

    record = await served.stub.GetDataset(pb.GetDatasetRequest(job_id=jobs[1]), metadata=alice)
    assert record.job_prompt == "sentiment 1"
    assert record.dataset.name == "reviews-1"
    assert record.dataset.train_row_count == 101
    assert len(record.dataset.preview_rows) == 20
    assert json_format.MessageToDict(record.dataset.preview_rows[3]) == {
        "text": "review 3 of reviews-1",
        "label": "pos",
    }
    assert record.create_time.seconds > 0
    assert b"secret-resume-data" not in record.SerializeToString()

    none_yet = await rpc_error(served.stub.GetDataset(pb.GetDatasetRequest(job_id=jobs[3]), metadata=alice))
    assert none_yet.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(none_yet) == "DATASET_NOT_FOUND"

    # Bob sees none of it: his list is empty and Alice's job is simply not found.
    assert not (await served.stub.ListDatasets(pb.ListDatasetsRequest(), metadata=bob)).datasets
    theirs = await rpc_error(served.stub.GetDataset(pb.GetDatasetRequest(job_id=jobs[1]), metadata=bob))
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(theirs) == "JOB_NOT_FOUND"
    # A page token of another list is refused with the field named.
    jobs_page = await served.stub.ListJobs(pb.ListJobsRequest(page_size=1), metadata=alice)
    bad = await rpc_error(
        served.stub.ListDatasets(pb.ListDatasetsRequest(page_token=jobs_page.next_page_token), metadata=alice)
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(bad)] == ["page_token"]


# -- uploads -----------------------------------------------------------------------------------------


async def test_an_upload_is_stored_and_only_its_owner_may_name_it_as_a_job_source(
    served: Served, tmp_path: Path
) -> None:
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    content = await asyncio.to_thread(PENGUINS.read_bytes)
    uploaded = await served.stub.UploadFile(
        pb.UploadFileRequest(filename="penguins.csv", content=content), metadata=alice
    )
    assert uploaded.size_bytes == len(content)
    assert uploaded.sha256 == hashlib.sha256(content).hexdigest()
    assert uploaded.filename == "penguins.csv"
    alice_id = await served.user_id("alice")
    stored = tmp_path / "uploads" / str(alice_id) / uploaded.upload_id / "penguins.csv"
    assert await asyncio.to_thread(stored.read_bytes) == content
    assert await served.gateway.uploads.resolve(alice_id, uploaded.upload_id) == stored

    source = dataset_pb2.DataSource(upload_id=uploaded.upload_id)
    job = await served.stub.CreateJob(
        pb.CreateJobRequest(job=job_pb2.Job(prompt="penguin species", sources=[source])), metadata=alice
    )
    assert job.sources[0].upload_id == uploaded.upload_id

    # Bob cannot use Alice's upload, nor an id that is nobody's; the field is named.
    for who, upload_id in ((bob, uploaded.upload_id), (alice, str(uuid.uuid4()))):
        request = pb.CreateJobRequest(
            job=job_pb2.Job(prompt="penguin species", sources=[dataset_pb2.DataSource(upload_id=upload_id)])
        )
        refused = await rpc_error(served.stub.CreateJob(request, metadata=who))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations_of(refused)] == ["job.sources[0].upload_id"]
        assert reason_of(refused) == "UPLOAD_NOT_FOUND"
    with pytest.raises(errors.NotFound):
        await served.gateway.uploads.resolve(await served.user_id("bob"), uploaded.upload_id)

    # Nor can anyone read an upload by its path (a folder above it included).
    for path in (
        stored,
        stored.parent.parent,
        tmp_path / "uploads" / "." / str(alice_id) / ".." / str(alice_id),
        tmp_path,  # a folder holding the upload folder would read everyone's uploads
    ):
        request = pb.CreateJobRequest(
            job=job_pb2.Job(prompt="penguin species", sources=[dataset_pb2.DataSource(local_path=str(path))])
        )
        refused = await rpc_error(served.stub.CreateJob(request, metadata=bob))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(refused) == "LOCAL_PATH_IN_UPLOADS"

    # A name with folders is refused before anything is written.
    bad = await rpc_error(
        served.stub.UploadFile(pb.UploadFileRequest(filename="../x.csv", content=b"a,b\n"), metadata=bob)
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(bad)] == ["filename"]
    assert not (tmp_path / "uploads" / str(await served.user_id("bob"))).exists()


# -- API keys ----------------------------------------------------------------------------------------


async def test_api_keys_over_the_api_secret_once_revoke_at_once_and_only_ones_own(served: Served) -> None:
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    created = await served.stub.CreateApiKey(pb.CreateApiKeyRequest(label="laptop"), metadata=alice)
    assert created.secret.startswith(f"zx_{created.api_key.key_id}_")
    assert created.api_key.label == "laptop"
    assert not created.api_key.HasField("revoke_time")
    new = bearer(created.secret)
    assert not (await served.stub.ListJobs(pb.ListJobsRequest(), metadata=new)).jobs

    listed = await served.stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=new)
    assert [k.label for k in listed.api_keys] == ["laptop", "test"]  # newest first
    assert created.secret not in str(listed)
    row = await served.gateway.registry.find_api_key(created.api_key.key_id)
    # Only a hash is kept. (The secret is base64url, which may itself hold "_": cut the prefix, not at "_".)
    secret = created.secret.removeprefix(f"zx_{created.api_key.key_id}_")
    assert row is not None and row.secret_sha256 == hashlib.sha256(secret.encode()).digest()
    assert secret.encode() not in row.secret_sha256

    theirs = await rpc_error(
        served.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=created.api_key.key_id), metadata=bob)
    )
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
    assert (await served.stub.ListJobs(pb.ListJobsRequest(), metadata=new)) is not None  # still works

    revoked = await served.stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(key_id=created.api_key.key_id), metadata=alice
    )
    assert revoked.HasField("revoke_time")
    gone = await rpc_error(served.stub.ListJobs(pb.ListJobsRequest(), metadata=new))
    assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(gone) == "API_KEY_REVOKED"
    again = await served.stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(key_id=created.api_key.key_id), metadata=alice
    )
    assert again.revoke_time == revoked.revoke_time  # revoking a revoked key leaves it as it was

    malformed = await rpc_error(
        served.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id="NOT-A-KEY"), metadata=alice)
    )
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(malformed)] == ["key_id"]


# -- provider keys -----------------------------------------------------------------------------------


async def test_provider_keys_are_sealed_shown_as_hints_and_never_logged(
    keyed: Served, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from zehanx_runtime.logging import configure_logging

    configure_logging("debug", json=True)  # every line the gateway writes, into capsys
    try:
        alice = bearer(await keyed.api_key("alice"))
        bob = bearer(await keyed.api_key("bob"))
        secret = "gsk_live_" + "A1b2C3d4" * 6 + "wxyz"
        stored = await keyed.stub.SetProviderKey(
            pb.SetProviderKeyRequest(provider=account_pb2.PROVIDER_GROQ, secret=secret), metadata=alice
        )
        assert stored.provider == account_pb2.PROVIDER_GROQ
        assert stored.hint == "gsk_…wxyz"
        await keyed.stub.SetProviderKey(
            pb.SetProviderKeyRequest(provider=account_pb2.PROVIDER_E2B, secret="e2b_short1"), metadata=alice
        )
        listed = await keyed.stub.ListProviderKeys(pb.ListProviderKeysRequest(), metadata=alice)
        assert {(k.provider, k.hint) for k in listed.provider_keys} == {
            (account_pb2.PROVIDER_GROQ, "gsk_…wxyz"),
            (account_pb2.PROVIDER_E2B, "e2…t1"),  # a short key shows at most half of itself
        }
        assert not (
            await keyed.stub.ListProviderKeys(pb.ListProviderKeysRequest(), metadata=bob)
        ).provider_keys
        bad = await rpc_error(
            keyed.stub.SetProviderKey(
                pb.SetProviderKeyRequest(
                    provider=account_pb2.PROVIDER_FIRECRAWL, secret="has a space " + secret
                ),
                metadata=alice,
            )
        )
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations_of(bad)] == ["secret"]

        alice_id = await keyed.user_id("alice")
        bob_id = await keyed.user_id("bob")
        opened = await keyed.gateway.provider_keys.keys_for(alice_id)
        assert opened == {Provider.GROQ: secret, Provider.E2B: "e2b_short1"}

        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cur = await conn.execute(
                "select sealed, nonce from zehanx.provider_keys where user_id = %s", (alice_id,)
            )
            rows = await cur.fetchall()
            assert len(rows) == 2
            assert all(
                secret.encode() not in bytes(sealed) and b"e2b_short1" not in bytes(sealed)
                for sealed, _ in rows
            )
            # A sealed key copied to another user does not open there (its user is in the sealed data).
            await conn.execute(
                "insert into zehanx.provider_keys (user_id, provider, nonce, sealed, hint) "
                "select %s, provider, nonce, sealed, hint from zehanx.provider_keys where user_id = %s",
                (bob_id, alice_id),
            )
        with pytest.raises(errors.FailedPrecondition) as unreadable:
            await keyed.gateway.provider_keys.keys_for(bob_id)
        assert unreadable.value.reason == "PROVIDER_KEY_UNREADABLE"

        await keyed.stub.DeleteProviderKey(
            pb.DeleteProviderKeyRequest(provider=account_pb2.PROVIDER_GROQ), metadata=alice
        )
        await keyed.stub.DeleteProviderKey(
            pb.DeleteProviderKeyRequest(provider=account_pb2.PROVIDER_GROQ), metadata=alice
        )  # deleting what is not there succeeds
        assert await keyed.gateway.provider_keys.keys_for(alice_id) == {Provider.E2B: "e2b_short1"}
        unspecified = await rpc_error(
            keyed.stub.DeleteProviderKey(pb.DeleteProviderKeyRequest(), metadata=alice)
        )
        assert [f for f, _ in field_violations_of(unspecified)] == ["provider"]
    finally:
        configure_logging("warning", json=True)
    logged = capsys.readouterr()
    assert "SetProviderKey" in logged.err  # the calls were logged ...
    assert secret not in logged.err + logged.out  # ... the keys never
    assert "e2b_short1" not in logged.err + logged.out
    assert secret[4:-4] not in logged.err + logged.out


async def test_without_a_secrets_key_set_provider_key_names_the_setting(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZX_HOME", str(tmp_path / "home"))  # no $ZX_HOME/secrets-key there
    served = await serve_gateway(gateway_settings(database_url, tmp_path))
    try:
        alice = bearer(await served.api_key("alice"))
        refused = await rpc_error(
            served.stub.SetProviderKey(
                pb.SetProviderKeyRequest(provider=account_pb2.PROVIDER_GROQ, secret="gsk_0123456789abcdef"),
                metadata=alice,
            )
        )
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "ZX_GATEWAY_SECRETS_KEY" in (refused.details() or "")
        assert reason_of(refused) == "SECRETS_KEY_UNSET"
        assert not (
            await served.stub.ListProviderKeys(pb.ListProviderKeysRequest(), metadata=alice)
        ).provider_keys
    finally:
        await stop_gateway(served)
    # The file zx up writes is read when the setting is unset.
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "secrets-key").write_text("from-the-file-0123456789abcdef\n")
    assert gateway_settings(database_url, tmp_path).secrets_key_value() == "from-the-file-0123456789abcdef"


async def test_each_provider_key_goes_only_to_the_service_that_uses_it() -> None:
    token = "service-token"
    crawler = GrpcCrawler("127.0.0.1:1", token)
    codegen = GrpcCodegen("127.0.0.1:1", token)
    trainer = GrpcTrainer("127.0.0.1:1", token)
    keys = {
        provider_keys.GROQ_KEY: "gsk_user",
        provider_keys.FIRECRAWL_KEY: "fc-user",
        provider_keys.E2B_KEY: "e2b_user",
    }

    def sent(client: object) -> dict[str, str]:
        return dict(client._metadata(str(uuid.uuid4())))  # type: ignore[attr-defined]

    async def in_a_job() -> list[dict[str, str]]:
        caller_keys.set(keys)  # what the pipeline does in a job's task
        return [sent(crawler), sent(codegen), sent(trainer)]

    to_crawler, to_codegen, to_trainer = await asyncio.create_task(in_a_job())
    assert to_crawler[provider_keys.FIRECRAWL_KEY] == "fc-user"
    assert to_codegen[provider_keys.GROQ_KEY] == "gsk_user"
    assert to_trainer[provider_keys.E2B_KEY] == "e2b_user"
    assert set(to_crawler.values()) & {"gsk_user", "e2b_user"} == set()
    assert set(to_codegen.values()) & {"fc-user", "e2b_user"} == set()
    assert set(to_trainer.values()) & {"gsk_user", "fc-user"} == set()
    # Outside that job's task (another job, a user without keys) no key is sent.
    assert not set(keys) & set(sent(codegen)) and not set(keys) & set(sent(trainer))
    for client in (crawler, codegen, trainer):
        await client.close()


# -- user settings -----------------------------------------------------------------------------------


async def test_user_settings_default_replace_and_stay_per_user(served: Served) -> None:
    alice = bearer(await served.api_key("alice"))
    bob = bearer(await served.api_key("bob"))
    empty = await served.stub.GetUserSettings(pb.GetUserSettingsRequest(), metadata=alice)
    assert not empty.HasField("default_job_options") and not empty.HasField("update_time")

    wanted = account_pb2.UserSettings(default_job_options=job_pb2.JobOptions(max_repair_attempts=1))
    wanted.default_job_options.hyperparameters["epochs"].number_value = 3
    wanted.update_time.seconds = 5  # output only: ignored
    updated = await served.stub.UpdateUserSettings(
        pb.UpdateUserSettingsRequest(settings=wanted), metadata=alice
    )
    assert updated.default_job_options.max_repair_attempts == 1
    assert updated.default_job_options.hyperparameters["epochs"].number_value == 3
    assert updated.update_time.seconds > 5
    assert await served.stub.GetUserSettings(pb.GetUserSettingsRequest(), metadata=alice) == updated
    assert not (await served.stub.GetUserSettings(pb.GetUserSettingsRequest(), metadata=bob)).HasField(
        "update_time"
    )

    bad = account_pb2.UserSettings(default_job_options=job_pb2.JobOptions(max_repair_attempts=9))
    refused = await rpc_error(
        served.stub.UpdateUserSettings(pb.UpdateUserSettingsRequest(settings=bad), metadata=alice)
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations_of(refused)] == [
        "settings.default_job_options.max_repair_attempts"
    ]
    missing = await rpc_error(served.stub.UpdateUserSettings(pb.UpdateUserSettingsRequest(), metadata=alice))
    assert [f for f, _ in field_violations_of(missing)] == ["settings"]


async def test_uploads_beyond_the_users_quota_are_refused(database_url: str, tmp_path: Path) -> None:
    served = await serve_gateway(gateway_settings(database_url, tmp_path, upload_quota_bytes=100))
    try:
        alice = bearer(await served.api_key("alice"))
        bob = bearer(await served.api_key("bob"))
        await served.stub.UploadFile(
            pb.UploadFileRequest(filename="a.csv", content=b"x" * 60), metadata=alice
        )
        refused = await rpc_error(
            served.stub.UploadFile(pb.UploadFileRequest(filename="b.csv", content=b"y" * 41), metadata=alice)
        )
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(refused) == "UPLOAD_QUOTA_EXCEEDED"
        await served.stub.UploadFile(
            pb.UploadFileRequest(filename="b.csv", content=b"y" * 40), metadata=alice
        )
        await served.stub.UploadFile(pb.UploadFileRequest(filename="c.csv", content=b"z" * 100), metadata=bob)
        alice_id = await served.user_id("alice")
        assert sorted(p.name for p in (tmp_path / "uploads" / str(alice_id)).rglob("*.csv")) == [
            "a.csv",
            "b.csv",
        ]
    finally:
        await stop_gateway(served)
