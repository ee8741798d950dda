"""Crashes of the real suite's processes in the middle of training (`zx up --detach`, then `kill -9`).

The job is a prompt with no source that the crawler's built-in catalogue answers (scikit-learn's
handwritten digits), so these tests also show a catalogue prompt training through the real suite
without any source given. While a job runs, a sampler thread counts the sandbox processes running the
job's train.py: a job must never run twice at once. `zx up` run again brings back the killed process.

- gateway killed: its worker's lease expires, the restarted gateway takes the job up again as attempt 2
  and resumes after the last completed stage (no second crawl, no second program), and it SUCCEEDS;
- trainer killed: the gateway's Train call fails UNAVAILABLE, the job (same attempt, same lease) waits
  for the trainer that `zx up` restarts and trains again there, and it SUCCEEDS.
In both, the job's events are numbered 1..N with no gap and no repeat, and end with SUCCEEDED.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import EXECUTOR_SLOTS, SUITE_UID_BASE, zx
from google.protobuf import json_format
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx.gateway.v1 import job_pb2

pytestmark = pytest.mark.slow
PROMPT = "Classify handwritten digits"


@dataclass
class Api:
    """The gateway's public API with the key `zx up` made."""

    env: dict[str, str]

    def _call(self, method: str, request: Any) -> Any:
        address = f"127.0.0.1:{self.env['ZX_GATEWAY_PORT']}"
        key = (Path(self.env["ZX_HOME"]) / "api-key").read_text().strip()
        with grpc.insecure_channel(address) as channel:
            stub = rpc.GatewayServiceStub(channel)
            return getattr(stub, method)(request, metadata=[("authorization", f"Bearer {key}")], timeout=30)

    def create(self, prompt: str, training_seconds: int) -> job_pb2.Job:
        job = job_pb2.Job(prompt=prompt)
        job.options.resources.max_training_duration.FromSeconds(training_seconds)
        return self._call("CreateJob", pb.CreateJobRequest(job=job))

    def job(self, job_id: str) -> job_pb2.Job | None:
        """The job, or None while the gateway is down."""
        try:
            return self._call("GetJob", pb.GetJobRequest(job_id=job_id))
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                return None
            raise

    def events(self, job_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self._call(
                "ListJobEvents", pb.ListJobEventsRequest(job_id=job_id, page_size=1000, page_token=token)
            )
            out += [json_format.MessageToDict(e, preserving_proto_field_name=True) for e in page.events]
            token = page.next_page_token
            if not token:
                return out

    def wait(self, job_id: str, predicate: Any, within: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                events = self.events(job_id)
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise
            else:
                if predicate(events):
                    return events
            time.sleep(0.2)
        tail = [(e["sequence"], _kind(e), _text(e)) for e in events[-15:]]
        raise AssertionError(f"timed out after {within:.0f}s; last events {tail}")


def _kind(event: dict[str, Any]) -> str:
    return next(k for k in event if k not in ("sequence", "job_id", "event_time", "stage"))


def _text(event: dict[str, Any]) -> str:
    body = event[_kind(event)]
    return str(body.get("text") or body.get("reason") or body.get("message") or "")[:160]


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if kind in e]


def _full_run_metrics(events: list[dict[str, Any]]) -> bool:
    return any(not e["training_metrics"].get("smoke") for e in _of(events, "training_metrics"))


def _terminal(events: list[dict[str, Any]]) -> bool:
    return any(
        e["state_change"].get("to_state")
        in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
        for e in _of(events, "state_change")
    )


def _pid_of(env: dict[str, str], service: str) -> int:
    status = json.loads(zx(env, "status", "--json", timeout=60).stdout)
    return next(int(s["pid"]) for s in status["services"] if s["name"] == service)


@dataclass
class TrainingSampler:
    """Counts, every 20 ms, the live sandbox processes of the suite's executor that run train.py."""

    most: int = 0
    samples: int = 0
    last_seen: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def count(self) -> int:
        uids = range(SUITE_UID_BASE, SUITE_UID_BASE + EXECUTOR_SLOTS + 1)
        found = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) not in uids or fields["State"].split()[0] == "Z":
                continue
            if argv and os.path.basename(argv[0]).startswith(b"python") and b"train.py" in argv[1:]:
                found += 1
        return found

    def run(self) -> None:
        while not self._stop.is_set():
            n = self.count()
            self.samples += 1
            self.most = max(self.most, n)
            if n:
                self.last_seen = time.monotonic()
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def sampler() -> Iterator[TrainingSampler]:
    found = TrainingSampler()
    thread = threading.Thread(target=found.run, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        found.stop()
        thread.join(5)


def _check_history(events: list[dict[str, Any]]) -> None:
    sequences = [int(e["sequence"]) for e in events]
    assert sequences == list(range(1, len(events) + 1)), "events numbered 1..N without a gap or a repeat"
    states = [e["state_change"].get("to_state") for e in _of(events, "state_change")]
    assert states[-1] == "JOB_STATE_SUCCEEDED" and states.count("JOB_STATE_SUCCEEDED") == 1
    assert _kind(events[-1]) == "state_change", "nothing is written after the job ended"
    assert len(_of(events, "model_published")) == 1
    assert len(_of(events, "evaluation_result")) == 1


def test_kill_9_of_the_gateway_mid_training_the_job_is_resumed_by_the_restarted_gateway(
    suite: dict[str, str], sampler: TrainingSampler
) -> None:
    api = Api(suite)
    created = api.create(PROMPT, training_seconds=30)
    api.wait(created.id, _full_run_metrics, within=240)
    gateway = _pid_of(suite, "gateway")
    killed_at = time.monotonic()
    os.kill(gateway, signal.SIGKILL)
    # The trainer sees the gateway's Train call drop and the executor kills the sandbox.
    while sampler.count() and time.monotonic() - killed_at < 30:
        time.sleep(0.02)
    print(f"gateway killed: the orphaned training stopped {time.monotonic() - killed_at:.2f}s later")
    assert sampler.count() == 0, "the dead gateway's training run outlived it"

    up = zx(suite, "up", "--detach", timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "gateway" in up.stdout and "starting it again" in up.stdout
    assert _pid_of(suite, "gateway") != gateway
    events = api.wait(created.id, _terminal, within=300)
    job = api.job(created.id)
    assert job is not None
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, (job.error, [(_kind(e), _text(e)) for e in events[-8:]])
    assert job.attempt == 2, "the restarted gateway took the job up again once"
    _check_history(events)
    # Resumed after the last completed stage: one dataset, one program, trained again.
    assert len(_of(events, "dataset_built")) == 1 and len(_of(events, "program_generated")) == 1
    logs = [_text(e) for e in _of(events, "log_line")]
    assert any("resuming attempt 2" in t for t in logs)
    reasons = [_text(e) for e in _of(events, "state_change")]
    assert any("lease" in r.lower() or "queued again" in r for r in reasons), reasons
    print(f"train.py processes at once, at most: {sampler.most} (of {sampler.samples} samples)")
    assert sampler.most == 1, "never two training runs of the job at once"


def test_kill_9_of_the_trainer_mid_training_the_job_goes_on_with_the_restarted_trainer(
    suite: dict[str, str], sampler: TrainingSampler
) -> None:
    api = Api(suite)
    created = api.create(PROMPT, training_seconds=30)
    api.wait(created.id, _full_run_metrics, within=240)
    trainer = _pid_of(suite, "trainer")
    killed_at = time.monotonic()
    os.kill(trainer, signal.SIGKILL)
    while sampler.count() and time.monotonic() - killed_at < 30:
        time.sleep(0.02)
    print(f"trainer killed: its training run stopped {time.monotonic() - killed_at:.2f}s later")
    assert sampler.count() == 0, "the dead trainer's training run outlived it"
    api.wait(created.id, lambda ev: any("unreachable" in _text(e) for e in _of(ev, "log_line")), within=60)

    up = zx(suite, "up", "--detach", timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "trainer" in up.stdout and "starting it again" in up.stdout
    events = api.wait(created.id, _terminal, within=300)
    job = api.job(created.id)
    assert job is not None
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, (job.error, [(_kind(e), _text(e)) for e in events[-8:]])
    assert job.attempt == 1, "the same worker kept the job (its lease never lapsed)"
    _check_history(events)
    assert len(_of(events, "dataset_built")) == 1 and len(_of(events, "program_generated")) == 1
    print(f"train.py processes at once, at most: {sampler.most} (of {sampler.samples} samples)")
    assert sampler.most == 1, "never two training runs of the job at once"
