"""An uploaded file through a real job: the orchestrator turns the job's ``upload_id`` into the file's
path, the real crawler (gRPC, in process) builds the dataset from it, ListDatasets shows it with its
preview rows; then the real codegen service (gRPC, in process, Groq backend on recorded response
shapes) is called with the job owner's own Groq key, which reaches Groq's Authorization header in place
of the operator's, and appears in no log line, event or error."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import groq
import httpx
import pytest
from gateway_support import Served, bearer, gateway_settings, serve_gateway, stop_gateway
from google.protobuf import json_format
from zehanx.codegen.v1 import codegen_service_pb2_grpc as codegen_rpc
from zehanx.common.v1 import dataset_pb2
from zehanx.crawler.v1 import crawler_service_pb2_grpc as crawler_rpc
from zehanx.gateway.v1 import account_pb2, job_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx_codegen.app import build_servicer
from zehanx_codegen.servicer import SERVICE_NAME as CODEGEN
from zehanx_codegen.settings import CodegenSettings
from zehanx_crawler.app import build as build_crawler
from zehanx_crawler.servicer import SERVICE_NAME as CRAWLER
from zehanx_crawler.settings import CrawlerSettings
from zehanx_gateway.orchestrator.runner import start_workers
from zehanx_gateway.orchestrator.settings import OrchestratorSettings
from zehanx_runtime.logging import configure_logging
from zehanx_runtime.server import RunningServer, ServiceBinding, start_server

pytestmark = pytest.mark.timeout(240)

TOKEN = "upload-job-service-token"
SECRETS_KEY = "upload-job-secrets-key-0123456789abcdef"
OPERATOR_KEY = "gsk_operator_0123456789abcdefghij"
ALICE_KEY = "gsk_alice_" + "Zq9" * 12 + "k7x2"
PENGUINS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "palmer_penguins" / "penguins.csv"
UNAUTHORIZED = {
    "error": {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}
}


class GroqRecorder:
    """Groq's API as recorded: every key is refused (401), and every request's key is kept."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/chat/completions")
        self.keys.append(request.headers["authorization"])
        return httpx.Response(401, json=UNAUTHORIZED)


@dataclass
class Suite:
    served: Served
    servers: list[RunningServer]
    groq: GroqRecorder
    uploads: Path


@pytest.fixture
async def suite(database_url: str, tmp_path: Path) -> AsyncIterator[Suite]:
    uploads = tmp_path / "uploads"
    crawler_settings = CrawlerSettings(
        port=0,
        service_token=TOKEN,
        data_dir=tmp_path / "crawler" / "datasets",  # its own folder: the upload reaches it as a stream
        local_roots=[],
        backend="local",
        firecrawl_api_key=None,
    )
    crawler = build_crawler(crawler_settings)
    crawler_server = await start_server(
        crawler_settings,
        [ServiceBinding(crawler_rpc.add_CrawlerServiceServicer_to_server, crawler.servicer, CRAWLER)],
        service_name="crawler",
    )
    recorder = GroqRecorder()
    client = groq.Groq(
        api_key=OPERATOR_KEY, http_client=httpx.Client(transport=httpx.MockTransport(recorder)), max_retries=0
    )
    codegen_settings = CodegenSettings(
        port=0,
        service_token=TOKEN,
        backend="groq",
        groq_models=["openai/gpt-oss-120b"],
        allow_pretrained_encoder=False,
    )
    codegen_server = await start_server(
        codegen_settings,
        [
            ServiceBinding(
                codegen_rpc.add_CodegenServiceServicer_to_server,
                build_servicer(codegen_settings, groq_client=client),
                CODEGEN,
            )
        ],
        service_name="codegen",
    )
    served = await serve_gateway(
        gateway_settings(
            database_url,
            tmp_path,
            secrets_key=SECRETS_KEY,
            service_token=TOKEN,
            crawler_address=f"127.0.0.1:{crawler_server.port}",
            codegen_address=f"127.0.0.1:{codegen_server.port}",
        )
    )
    workers = start_workers(
        served.gateway,
        OrchestratorSettings(workers=2, claim_poll_seconds=0.2, service_retry_seconds=5.0),
        trainer=_NoTrainer(),
    )
    try:
        yield Suite(served, [crawler_server, codegen_server], recorder, uploads)
    finally:
        await workers.close()
        await stop_gateway(served)
        for server in (crawler_server, codegen_server):
            await server.stop(0.5)
        await crawler.close()


class _NoTrainer:
    """Training is never reached here: the recorded Groq refuses every key."""

    def train(self, request: object, *, timeout_s: float) -> AsyncIterator[object]:
        raise AssertionError("the trainer must not be called in this test")


async def _terminal(served: Served, job_id: str, auth: object) -> job_pb2.Job:
    for _ in range(900):
        job = await served.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=auth)
        if job.state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {job}")


async def test_an_uploaded_csv_becomes_the_jobs_dataset_and_the_owners_groq_key_reaches_groq(
    suite: Suite, capsys: pytest.CaptureFixture[str]
) -> None:
    served = suite.served
    configure_logging("debug", json=True)  # every line the gateway, crawler and codegen write
    try:
        alice = bearer(await served.api_key("alice"))
        bob = bearer(await served.api_key("bob"))
        await served.stub.SetProviderKey(
            pb.SetProviderKeyRequest(provider=account_pb2.PROVIDER_GROQ, secret=ALICE_KEY), metadata=alice
        )
        content = await asyncio.to_thread(PENGUINS.read_bytes)
        uploaded = await served.stub.UploadFile(
            pb.UploadFileRequest(filename="penguins.csv", content=content), metadata=alice
        )
        source = dataset_pb2.DataSource(upload_id=uploaded.upload_id)
        job = await served.stub.CreateJob(
            pb.CreateJobRequest(job=job_pb2.Job(prompt="predict the species of a penguin", sources=[source])),
            metadata=alice,
        )
        ended = await _terminal(served, job.id, alice)

        # Bob, who stored no key, is written for with the operator's key.
        bob_job = await served.stub.CreateJob(
            pb.CreateJobRequest(job=job_pb2.Job(prompt="predict the species of a penguin", sources=[])),
            metadata=bob,
        )
        bob_ended = await _terminal(served, bob_job.id, bob)
        events = await served.stub.ListJobEvents(pb.ListJobEventsRequest(job_id=job.id), metadata=alice)
    finally:
        configure_logging("warning", json=True)

    # The crawler read the uploaded file: its provenance is that file, and the preview is its rows.
    record = await served.stub.GetDataset(pb.GetDatasetRequest(job_id=job.id), metadata=alice)
    assert [p.sha256 for p in record.dataset.provenance] == [hashlib.sha256(content).hexdigest()]
    # Named as the user knows it, not by the path on the gateway's host.
    assert [p.source for p in record.dataset.provenance] == [f"upload {uploaded.upload_id} (penguins.csv)"]
    assert str(suite.uploads) not in str(record)
    assert record.dataset.target_column == "species"
    preview = [json_format.MessageToDict(r) for r in record.dataset.preview_rows]
    assert len(preview) == 20 and all(row["species"] in ("Adelie", "Chinstrap", "Gentoo") for row in preview)
    listed = await served.stub.ListDatasets(pb.ListDatasetsRequest(), metadata=alice)
    assert [d.job_id for d in listed.datasets] == [job.id]
    # The job keeps naming its upload; the path it was read from is the gateway's business.
    assert ended.sources[0].upload_id == uploaded.upload_id

    # Groq got Alice's key for Alice's job and the operator's for Bob's; each refusal names whose key.
    assert f"Bearer {ALICE_KEY}" in suite.groq.keys
    assert f"Bearer {OPERATOR_KEY}" in suite.groq.keys
    assert ended.state == job_pb2.JOB_STATE_FAILED
    assert "the job owner's own Groq key" in ended.error.message
    assert bob_ended.state == job_pb2.JOB_STATE_FAILED
    assert "ZX_CODEGEN_GROQ_API_KEY" in bob_ended.error.message

    # The key is nowhere the user or the operator can read: not in events, errors or any log line.
    logged = capsys.readouterr()
    assert "/GenerateProgram" in logged.err and "/BuildDataset" in logged.err
    for text in (logged.err, logged.out, json.dumps(json_format.MessageToDict(events)), str(ended)):
        assert ALICE_KEY not in text
        assert ALICE_KEY[4:-4] not in text
