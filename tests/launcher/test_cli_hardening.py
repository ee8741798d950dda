"""Security round 2, the client and the deployment defaults (review findings L3 and L4).

L3: ``zx download`` writes only inside the folder it was given, whatever file name the gateway sends, and
only after the sha256 matches; text from the gateway (dataset names, reasons, log lines, titles) is
printed as text, never as rich markup. The gateway here is a small fake gRPC server on a free port that
answers what a malicious or compromised gateway could; ``zx`` runs as a real process against it.

L4: ``zx up`` hands each service only its own cloud keys, and the embedded PostgreSQL's password file
is never written through a link planted in the cluster folder (which the runtime user owns).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import typer
from zehanx.common.v1 import log_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx.gateway.v1 import job_event_pb2, job_pb2, model_pb2
from zehanx_cli import procs
from zehanx_cli.errors import LaunchError
from zehanx_cli.jobs import archive_name
from zehanx_cli.postgres import EmbeddedPostgres
from zehanx_cli.settings import LauncherSettings
from zehanx_cli.suite import Suite

MODEL_ID = "0190f0f0-0000-7000-8000-000000000001"
JOB_ID = "0190f0f0-0000-7000-8000-000000000002"


def _archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("MODEL_CARD.md", (2024, 1, 1, 0, 0, 0)), "# A model\n")
    return buffer.getvalue()


class FakeGateway(rpc.GatewayServiceServicer):
    """Answers DownloadModel with ``filename`` (and ``sha256``), WatchJob with ``events``."""

    def __init__(self) -> None:
        self.filename = f"model-{MODEL_ID}.zip"
        self.data = _archive()
        self.sha256: str | None = None
        self.events: list[job_event_pb2.JobEvent] = []
        self.error_message = ""

    def DownloadModel(self, request: Any, context: Any) -> Iterator[pb.DownloadModelResponse]:
        yield pb.DownloadModelResponse(
            header=pb.DownloadHeader(
                model=model_pb2.Model(id=MODEL_ID),
                filename=self.filename,
                media_type="application/zip",
                total_size_bytes=len(self.data),
                sha256=self.sha256 or hashlib.sha256(self.data).hexdigest(),
            )
        )
        for start in range(0, len(self.data), 100):
            yield pb.DownloadModelResponse(
                chunk=pb.DownloadChunk(offset=start, data=self.data[start : start + 100])
            )

    def WatchJob(self, request: Any, context: Any) -> Iterator[pb.WatchJobResponse]:
        for event in self.events:
            yield pb.WatchJobResponse(event=event)

    def GetJob(self, request: Any, context: Any) -> job_pb2.Job:
        job = job_pb2.Job(id=JOB_ID, state=job_pb2.JOB_STATE_FAILED)
        job.error.message = self.error_message
        return job


@pytest.fixture
def fake() -> Iterator[tuple[FakeGateway, str]]:
    servicer = FakeGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_GatewayServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def zx(address: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update({"ZX_HOME": str(home), "ZX_GATEWAY_ADDRESS": address, "ZX_API_KEY": "zx_test_key"})
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(Path(sys.executable).with_name("zx")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- L3: zx download -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "keep"),
    [("../victim.zip", True), ("../victim.zip", False), ("ABSOLUTE", True), ("sub/../../victim.zip", True)],
)
def test_l3_download_writes_nothing_outside_its_folder_whatever_name_the_gateway_sends(
    fake: tuple[FakeGateway, str], tmp_path: Path, name: str, keep: bool
) -> None:
    servicer, address = fake
    victim = tmp_path / "victim.zip"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    servicer.filename = str(victim) if name == "ABSOLUTE" else name
    before = _files(tmp_path)

    done = zx(address, tmp_path / "home", "download", MODEL_ID, "-o", str(out), *(["--zip"] if keep else []))

    assert done.returncode == 1, done.stdout + done.stderr
    assert "unsafe file name" in done.stderr
    assert victim.read_text() == "precious\n", "a file outside the folder was overwritten or removed"
    assert _files(tmp_path) - before <= {"out", "home"}, "something was written outside the folder"
    assert not list(out.iterdir()), "nothing is written, not even a partial file"


@pytest.mark.parametrize(
    "name",
    ["../x.zip", "/abs/x.zip", "a/b.zip", "a\\b.zip", "..", ".", "", ".hidden.zip", "x\0.zip", "x" * 256],
)
def test_l3_only_a_plain_file_name_is_accepted_for_the_archive(name: str) -> None:
    with pytest.raises(typer.Exit):
        archive_name(name)
    assert archive_name("sentiment-0190f0f0.zip") == "sentiment-0190f0f0.zip"


def test_l3_download_of_a_plain_name_is_kept_or_unpacked_in_the_folder(
    fake: tuple[FakeGateway, str], tmp_path: Path
) -> None:
    _, address = fake
    kept = zx(address, tmp_path / "home", "download", MODEL_ID, "-o", str(tmp_path / "kept"), "--zip")
    assert kept.returncode == 0, kept.stderr
    assert _files(tmp_path / "kept") == {f"model-{MODEL_ID}.zip"}
    assert (tmp_path / "kept" / f"model-{MODEL_ID}.zip").read_bytes() == _archive()

    unpacked = zx(address, tmp_path / "home", "download", MODEL_ID, "-o", str(tmp_path / "unpacked"))
    assert unpacked.returncode == 0, unpacked.stderr
    assert _files(tmp_path / "unpacked") == {"MODEL_CARD.md"}


def test_l3_download_writes_the_archive_under_its_name_only_after_the_sha256_matches(
    fake: tuple[FakeGateway, str], tmp_path: Path
) -> None:
    servicer, address = fake
    servicer.sha256 = "0" * 64
    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"model-{MODEL_ID}.zip"
    existing.write_text("an earlier download\n")

    done = zx(address, tmp_path / "home", "download", MODEL_ID, "-o", str(out), "--zip")

    assert done.returncode == 1 and "does not match its sha256" in done.stderr
    assert existing.read_text() == "an earlier download\n"
    assert _files(out) == {existing.name}, "no partial file is left behind"


# -- L3: rich markup in what the gateway sends ---------------------------------------------------------


def _event(sequence: int, **field: Any) -> job_event_pb2.JobEvent:
    return job_event_pb2.JobEvent(sequence=sequence, job_id=JOB_ID, **field)


def test_l3_follow_prints_markup_from_the_gateway_as_text(
    fake: tuple[FakeGateway, str], tmp_path: Path
) -> None:
    servicer, address = fake
    link = "[link=https://evil.example]click here[/link]"
    servicer.events = [
        _event(
            1,
            state_change=job_event_pb2.JobStateChange(
                to_state=job_pb2.JOB_STATE_RUNNING,
                to_stage=job_pb2.JOB_STAGE_CRAWLING,
                reason="[/data]",
            ),
        ),
        _event(2, dataset_built=job_event_pb2.DatasetBuilt(name=f"[/data] {link}", target_column="[bold]y")),
        _event(3, log_line=log_pb2.LogLine(source=2, text="smoke run failed: [/x] [red]")),
        _event(
            4,
            state_change=job_event_pb2.JobStateChange(
                to_state=job_pb2.JOB_STATE_FAILED, reason="program error: [/traceback]"
            ),
        ),
    ]
    servicer.error_message = "[/boom] [link=https://evil.example]details[/link]"

    done = zx(address, tmp_path / "home", "job", JOB_ID, "--follow")

    assert "MarkupError" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr  # the job FAILED: exit 1, no crash
    for literal in (
        "[/data]",
        f"dataset [/data] {link}",
        "target '[bold]y'",
        "smoke run failed: [/x] [red]",
        "program error: [/traceback]",
        "[/boom] [link=https://evil.example]details[/link]",
    ):
        assert literal in done.stdout, (literal, done.stdout)


# -- L4: each service gets only its own cloud keys ---------------------------------------------------


CLOUD = {
    "GROQ_API_KEY": "gsk_test",
    "GROQ_BASE_URL": "https://groq.example",
    "FIRECRAWL_API_KEY": "fc-test",
    "E2B_API_KEY": "e2b_test",
    "E2B_DOMAIN": "e2b.example",
    "SUPABASE_JWT_SECRET": "jwt-secret-0123456789abcdef0123456789",
    "SUPABASE_URL": "https://ref.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "service-role",
    "SUPABASE_ANON_KEY": "anon",
    "ZX_API_KEY": "zx_the_cli_users_key",
    "ZX_DATABASE_URL": "postgresql://u:p@db.example/zehanx",
}
WANTED = {
    "codegen": {"GROQ_API_KEY", "GROQ_BASE_URL"},
    "crawler": {"FIRECRAWL_API_KEY"},
    "executor": {"E2B_API_KEY", "E2B_DOMAIN"},
    "trainer": {"SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"},
    "gateway": {"SUPABASE_JWT_SECRET", "ZX_DATABASE_URL"},
}


def test_l4_zx_up_gives_each_service_only_its_own_cloud_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CLOUD.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ZX_GATEWAY_SECRETS_KEY", "the-operators-own-key-0123456789")
    monkeypatch.setenv("HF_HOME", "/srv/hf")  # the rest of the environment still passes through
    suite = Suite(LauncherSettings(home=tmp_path), say=lambda _line: None)
    for service, wanted in WANTED.items():
        env = suite._child_env(service, "token", None)
        assert {k for k in CLOUD if k in env} == wanted, service
        assert all(env[k] == CLOUD[k] for k in wanted)
        assert env["HF_HOME"] == "/srv/hf" and env["PATH"] == os.environ["PATH"]
    crawler = suite._child_env("crawler", "token", None)
    assert not {"GROQ_API_KEY", "E2B_API_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY"} & set(
        crawler
    )


# -- L4: the embedded PostgreSQL's password file -------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="the cluster folder belongs to another user only under root")
def test_l4_initdb_never_writes_through_a_link_planted_at_the_password_file(tmp_path: Path) -> None:
    # Under root the cluster folder belongs to the runtime user (nobody): in <home>/postgres, or under
    # /var/tmp when nobody cannot reach <home> (as here: pytest's folders are 0700).
    server = EmbeddedPostgres(tmp_path / "home", port=procs.free_port(), durable=False)
    cluster = server._ensure_cluster_dir()
    assert os.stat(cluster).st_uid != 0
    victim = tmp_path / "root-only"
    victim.write_text("root's file\n")
    os.chmod(victim, 0o600)
    # What the runtime user (nobody) can do in its own folder before a re-init: a link at the name.
    planted = cluster / f".pwfile.{os.getpid()}"
    planted.symlink_to(victim)
    os.lchown(planted, os.stat(cluster).st_uid, os.stat(cluster).st_gid)
    try:
        with contextlib.suppress(LaunchError):  # (the old code then failed: nobody cannot read the target)
            server._initdb(server._bin_dir(), server._env(None))

        assert victim.read_text() == "root's file\n", "the password was written through the link"
        st = os.stat(victim)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o600), "the link's target was chowned"
        assert server.initialized(), "initdb ran with a password file of its own"
        assert not planted.exists() and not planted.is_symlink()
    finally:
        server.purge()


def test_l4_a_directory_planted_at_the_password_file_is_refused(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "home", port=procs.free_port(), durable=False)
    cluster = server._ensure_cluster_dir()
    (cluster / f".pwfile.{os.getpid()}").mkdir()
    try:
        with pytest.raises(LaunchError, match="cannot remove"):
            server._write_pwfile(cluster / f".pwfile.{os.getpid()}", os.getuid(), os.getgid())
    finally:
        server.purge()
