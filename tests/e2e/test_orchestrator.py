"""The gateway's job workers against the real registry, a real trainer and a real sandbox.

Each test drives a job from QUEUED to its end through the real orchestration code: leases in
PostgreSQL, events persisted and numbered by the registry, Train through the real trainer and executor
(real training in the sandbox), the archive packed from the trainer's real artifact. The crawler and
codegen are stand-ins that hand over real files and real programs (see conftest.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import e2e_support
import pytest
from e2e_support import (
    Harness,
    Sandbox,
    ScriptedCodegen,
    StaticCrawler,
    digits_dataset,
    digits_program,
    harness_for,
    plan_for,
    tiny_dataset,
)
from google.protobuf import duration_pb2
from programs import tiny_program
from zehanx.common.v1 import resources_pb2
from zehanx.crawler.v1 import dataset_pb2 as crawler_dataset_pb2
from zehanx_gateway.domain import STATE_CHANGE, AuthMethod, Job, JobEvent, JobState, Principal

pytestmark = pytest.mark.slow

PROMPT = "Tell positive from negative x"


def _contiguous(events: list[JobEvent]) -> None:
    """Numbered 1..n without a gap or a repeat."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def _stages(events: list[JobEvent]) -> list[str]:
    return [
        e.payload.get("to_stage")
        for e in events
        if e.kind == STATE_CHANGE
        and e.payload.get("to_stage")
        and e.payload.get("to_stage") != e.payload.get("from_stage")
    ]


def _of(events: list[JobEvent], kind: str) -> list[JobEvent]:
    return [e for e in events if e.kind == kind]


async def _close(harness: Harness) -> None:
    for workers in harness.workers:
        await workers.close()


async def _run_to_the_end(
    harness: Harness, prompt: str = PROMPT, *, within: float = 240.0, **options: object
) -> Job:
    """Creates a job (``options``: its JobOptions), waits up to ``within`` s for its end, stops the workers."""
    try:
        created = await harness.create(prompt, **options)
        return await harness.wait_terminal(created.id, within=within)
    finally:
        await _close(harness)


def _threshold_codegen(dataset: crawler_dataset_pb2.Dataset, first: str, *repairs: str) -> ScriptedCodegen:
    """Codegen that plans a threshold on ``x``, generates the tiny program ``first`` and repairs with the
    tiny programs ``repairs`` in turn (none: a repair returns the program it was given)."""
    return ScriptedCodegen(
        plan_for(dataset, ["x"], "threshold"), tiny_program(first), [tiny_program(r) for r in repairs]
    )


async def _sleeping_job(harness: Harness) -> Job:
    """A new job whose full run (the tiny "sleeper" program) is sleeping in the sandbox now."""
    created = await harness.create(PROMPT)
    await harness.wait(
        created.id,
        lambda job, events: any("sleeping" in e.payload.get("text", "") for e in _of(events, "log_line")),
    )
    return created


async def test_a_job_trains_evaluates_publishes_and_its_model_downloads_and_predicts(
    open_gateway, sandbox: Sandbox
) -> None:
    dataset = digits_dataset(sandbox.dataset_root)
    crawler = StaticCrawler(dataset)
    codegen = ScriptedCodegen(plan_for(dataset, ["image"], "small_cnn"), digits_program())
    harness = await harness_for(open_gateway, crawler, codegen)
    # A 45 s training budget (the program stops at 80% of it) keeps the test short on a busy host.
    job = await _run_to_the_end(
        harness,
        "Classify handwritten digits",
        resources=resources_pb2.Resources(max_training_duration=duration_pb2.Duration(seconds=45)),
    )
    events = await harness.events(job.id)
    assert job.state is JobState.SUCCEEDED, (job.error, [(e.kind, dict(e.payload)) for e in events[-5:]])
    _contiguous(events)
    assert _stages(events) == ["CRAWLING", "GENERATING", "TRAINING", "EVALUATING", "PUBLISHING"]
    assert job.attempt == 1 and job.repair_count == 0 and job.dataset_id == dataset.id

    metrics = _of(events, "training_metrics")
    assert metrics, "the trainer's metrics become events"
    full_run = [e for e in metrics if not e.payload.get("smoke")]
    assert full_run and max(int(e.payload.get("epoch", 0)) for e in full_run) >= 1
    assert any("loss" in e.payload for e in full_run)

    (evaluation,) = _of(events, "evaluation_result")
    held_out = evaluation.payload["held_out_metrics"]["values"]["accuracy"]
    baseline = evaluation.payload["baseline_metrics"]["values"]["accuracy"]
    assert held_out > baseline + 0.5, (held_out, baseline)  # digits: ~0.98 against ~0.10
    assert "zx_resume" in evaluation.payload  # the checkpoint a resumed attempt starts from

    (published,) = _of(events, "model_published")
    model = await harness.gateway.registry.get_model(job.model_id, user_id=job.user_id)
    assert published.payload["model_id"] == str(model.id)
    assert model.trainer_artifact_id and model.metric_name == "accuracy"
    assert "# " in model.model_card

    principal = Principal(job.user_id, AuthMethod.API_KEY, "test")
    download = await harness.gateway.models.download(principal, model.id)
    data = b"".join([chunk async for chunk in download.chunks])
    assert hashlib.sha256(data).hexdigest() == model.archive_sha256 and len(data) == model.archive_size
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"train.py", "predict.py", "MODEL_CARD.md", "metrics.json"} <= names
    assert any(n.endswith("model.safetensors") for n in names)

    test_file = Path(dataset.ref.test_uri.removeprefix("file://"))
    test_rows = [json.loads(line) for line in test_file.read_text().splitlines()[:5]]  # noqa: ASYNC240
    result = await harness.gateway.models.predict(
        principal, model.id, [{"image": r["image"]} for r in test_rows]
    )
    answers = [p.output for p in result.predictions]
    assert len(answers) == 5
    right = sum(
        str(a if not isinstance(a, dict) else a.get("prediction")) == str(r["digit"])
        for a, r in zip(answers, test_rows, strict=True)
    )
    assert right >= 4, (answers, [r["digit"] for r in test_rows])


async def test_a_failed_smoke_run_is_repaired_and_the_error_is_an_event(
    open_gateway, sandbox: Sandbox
) -> None:
    dataset = tiny_dataset(sandbox.dataset_root)
    codegen = _threshold_codegen(dataset, "crash", "honest")
    harness = await harness_for(open_gateway, StaticCrawler(dataset), codegen)
    job = await _run_to_the_end(harness)
    events = await harness.events(job.id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.repair_count == 1
    _contiguous(events)
    (request,) = codegen.repair_requests
    assert request.attempt == 1 and request.error.message  # codegen got the failure
    versions = [e.payload["program_attempt"] for e in _of(events, "program_generated")]
    assert versions == [1, 2]
    errors_logged = [e for e in _of(events, "log_line") if "smoke run failed" in e.payload.get("text", "")]
    assert errors_logged and "no_such_column" in errors_logged[0].payload["text"]
    assert any("repairing (attempt 1 of 3)" in e.payload.get("reason", "") for e in _of(events, STATE_CHANGE))
    assert _stages(events) == [
        "CRAWLING",
        "GENERATING",
        "TRAINING",
        "GENERATING",
        "TRAINING",
        "EVALUATING",
        "PUBLISHING",
    ]


async def test_a_program_that_stays_broken_fails_after_three_repairs(open_gateway, sandbox: Sandbox) -> None:
    dataset = tiny_dataset(sandbox.dataset_root)
    codegen = _threshold_codegen(dataset, "honest", "honest")
    # The test setting breaks the generated program and every repair: 4 programs, 3 repairs.
    harness = await harness_for(open_gateway, StaticCrawler(dataset), codegen, test_break_programs=4)
    job = await _run_to_the_end(harness)
    events = await harness.events(job.id)
    assert job.state is JobState.FAILED
    assert job.error is not None and job.error.reason == "REPAIRS_EXHAUSTED"
    assert "after 3 repair" in job.error.message and "broken on purpose" in job.error.message
    assert job.repair_count == 3
    assert [r.attempt for r in codegen.repair_requests] == [1, 2, 3]
    failures = [e for e in _of(events, "log_line") if "smoke run failed" in e.payload.get("text", "")]
    assert len(failures) == 4  # every failed smoke run is recorded
    _contiguous(events)
    assert events[-1].payload.get("to_state") == "FAILED"


async def test_a_sandbox_without_a_module_fails_the_job_as_its_environment_without_repairs(
    open_gateway, sandbox: Sandbox
) -> None:
    """A module the sandbox lacks (torch on a bare E2B template) is the operator's to fix: the job says
    so under its own reason, and no repair is asked of codegen (it would burn three on the data)."""
    dataset = tiny_dataset(sandbox.dataset_root)
    codegen = _threshold_codegen(dataset, "needs_missing_module", "honest")
    harness = await harness_for(open_gateway, StaticCrawler(dataset), codegen)
    job = await _run_to_the_end(harness)
    assert job.state is JobState.FAILED
    assert job.error is not None and job.error.reason == "SANDBOX_ENVIRONMENT", job.error
    assert "zx_module_the_sandbox_lacks" in job.error.message and "environment error" in job.error.message
    assert codegen.repair_requests == [] and job.repair_count == 0


async def test_cancel_during_training_ends_cancelled_and_the_sandbox_is_gone(
    open_gateway, sandbox: Sandbox
) -> None:
    dataset = tiny_dataset(sandbox.dataset_root)
    codegen = _threshold_codegen(dataset, "sleeper")
    harness = await harness_for(open_gateway, StaticCrawler(dataset), codegen)
    try:
        created = await _sleeping_job(harness)
        assert sandbox.sandbox_pids(), "the full run is sleeping inside the sandbox"
        principal = Principal(created.user_id, AuthMethod.API_KEY, "test")
        asked = time.monotonic()
        cancelling = await harness.gateway.jobs.cancel(principal, created.id, "test")
        assert cancelling.state is JobState.CANCELLING
        # Two figures: no sandbox process alive any more (killed), and none left at all (the executor
        # reaps the killed tree's orphans itself instead of leaving zombies to the host's init).
        dead_after = gone_after = None
        while time.monotonic() - asked < 30:
            now = time.monotonic() - asked
            if dead_after is None and not sandbox.sandbox_pids(live_only=True):
                dead_after = now
            if not sandbox.sandbox_pids():
                gone_after = now
                dead_after = dead_after if dead_after is not None else now
                break
            await asyncio.sleep(0.005)
        job = await harness.wait_terminal(created.id, within=60)
    finally:
        await _close(harness)
    fmt = lambda t: "never" if t is None else f"{t:.3f}s"  # noqa: E731
    print(
        f"CancelJob -> sandbox processes dead after {fmt(dead_after)}, gone (reaped) after {fmt(gone_after)}"
    )
    assert job.state is JobState.CANCELLED
    assert job.error is not None and job.error.code == "CANCELLED"
    assert gone_after is not None and gone_after < 5, f"the sandbox outlived the cancellation: {gone_after}"
    events = await harness.events(created.id)
    _contiguous(events)
    assert [e.payload.get("to_state") for e in _of(events, STATE_CHANGE)][-2:] == ["CANCELLING", "CANCELLED"]


async def test_a_dead_workers_job_is_resumed_after_its_lease_expires_from_its_last_stage(
    open_gateway, sandbox: Sandbox
) -> None:
    dataset = tiny_dataset(sandbox.dataset_root)
    crawler = StaticCrawler(dataset)
    codegen = _threshold_codegen(dataset, "honest")
    first = await harness_for(open_gateway, crawler, codegen, lease_seconds=3.0)
    created = await first.create(PROMPT)
    await first.wait(created.id, lambda job, _events: job.stage is not None and job.stage.value == "TRAINING")
    # The worker "dies": it stops without writing anything more (no requeue, no heartbeat), as a
    # killed process would; its Train call is cancelled with it.
    orchestrator = first.workers[0].orchestrator
    for _job, control in list(orchestrator._running.values()):
        control.stop("lease_lost")
    await first.workers[0].close()
    dead = await first.job(created.id)
    assert dead.state is JobState.RUNNING and dead.attempt == 1

    second = await harness_for(open_gateway, crawler, codegen, lease_seconds=3.0)
    try:
        job = await second.wait_terminal(created.id)
    finally:
        await _close(second)
    events = await second.events(created.id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.attempt == 2
    assert crawler.calls == 1 and codegen.generate_calls == 1, "resumed after the completed stages"
    _contiguous(events)
    reasons = [e.payload.get("reason", "") for e in _of(events, STATE_CHANGE)]
    assert any("queued again" in r for r in reasons)
    assert any("resuming attempt 2" in e.payload.get("text", "") for e in _of(events, "log_line"))
    assert len(_of(events, "model_published")) == 1


async def test_a_killed_trainer_is_reconnected_to_and_the_job_still_succeeds(
    open_gateway, sandbox: Sandbox
) -> None:
    dataset = tiny_dataset(sandbox.dataset_root)
    codegen = _threshold_codegen(dataset, "sleeper")
    harness = await harness_for(open_gateway, StaticCrawler(dataset), codegen)
    try:
        created = await _sleeping_job(harness)
        sandbox.trainer.stop()  # SIGKILL of the trainer's process group, mid-training
        await harness.wait(
            created.id,
            lambda job, events: any(
                "unreachable" in e.payload.get("text", "") for e in _of(events, "log_line")
            ),
            within=60,
        )
        await asyncio.to_thread(sandbox.start_trainer)
        # The sleeper sleeps again in its second run: once it does, the job was resumed on the new trainer.
        await harness.wait(
            created.id,
            lambda job, events: (
                sum("sleeping" in e.payload.get("text", "") for e in _of(events, "log_line")) >= 2
            ),
            within=120,
        )
        principal = Principal(created.user_id, AuthMethod.API_KEY, "test")
        await harness.gateway.jobs.cancel(principal, created.id, "done with the test")
        job = await harness.wait_terminal(created.id, within=60)
    finally:
        await _close(harness)
    events = await harness.events(created.id)
    _contiguous(events)
    assert job.state is JobState.CANCELLED
    assert job.attempt == 1, "the same attempt went on: the job never ran twice at once"


async def test_a_worker_that_lost_its_lease_can_write_no_more_events(open_gateway) -> None:
    """Events are fenced like state changes: a worker whose lease expired and whose job another worker
    took up gets ABORTED for each event it still sends; the new worker's events go on 1..N."""
    from datetime import timedelta

    from zehanx_gateway.domain import PendingEvent
    from zehanx_runtime import errors

    registry = open_gateway.registry
    harness = await harness_for(open_gateway, None, None, workers=0)
    try:
        created = await harness.create(PROMPT)
        first, _ = await registry.claim_next("dead-worker", timedelta(seconds=1))
        assert first.id == created.id and first.attempt == 1
        (ok,) = await registry.append_events(
            [PendingEvent(created.id, "log_line", {"text": "before"}, lease=("dead-worker", 1))]
        )
        assert not isinstance(ok, errors.DomainError)
        await asyncio.sleep(1.5)  # the lease expires
        recovered = await registry.recover_expired(max_attempts=3)
        assert [j.id for j, _ in recovered] == [created.id]
        second, _ = await registry.claim_next("new-worker", timedelta(seconds=30))
        assert second.id == created.id and second.attempt == 2
        stale, fresh, unfenced = await registry.append_events(
            [
                PendingEvent(created.id, "log_line", {"text": "stale"}, lease=("dead-worker", 1)),
                PendingEvent(created.id, "log_line", {"text": "fresh"}, lease=("new-worker", 2)),
                PendingEvent(created.id, "log_line", {"text": "api"}),
            ]
        )
        assert isinstance(stale, errors.Aborted) and stale.reason == "LEASE_LOST"
        assert not isinstance(fresh, errors.DomainError) and not isinstance(unfenced, errors.DomainError)
        # The same worker name with an old attempt number is fenced too.
        (replayed,) = await registry.append_events(
            [PendingEvent(created.id, "log_line", {"text": "replayed"}, lease=("new-worker", 1))]
        )
        assert isinstance(replayed, errors.Aborted)
    finally:
        await _close(harness)
    events = await harness.events(created.id)
    _contiguous(events)
    texts = [e.payload.get("text") for e in _of(events, "log_line")]
    # Within one batch, the order between different writers' events is not defined.
    assert texts[0] == "before" and sorted(texts[1:]) == ["api", "fresh"]


class NodeLostTrainer:
    """The real trainer, except that its first ``lose`` Train calls end right after the full run's first
    metrics the way a lost Ray node ends them at the trainer: UNAVAILABLE with reason NODE_LOST (the real
    call is cancelled as it would be, so the trainer stops that run's sandbox). Everything else, the
    second run and the model's archive, is the real trainer's."""

    def __init__(self, address: str, lose: int) -> None:
        from zehanx_gateway.clients.pipeline import GrpcTrainer

        self.real = GrpcTrainer(address, e2e_support.TOKEN)
        self.lose = lose
        self.calls = 0

    async def train(self, request, *, timeout_s: float):
        from contextlib import aclosing

        from zehanx_runtime import errors

        self.calls += 1
        lose = self.calls <= self.lose
        async with aclosing(self.real.train(request, timeout_s=timeout_s)) as stream:
            async for message in stream:
                yield message
                if lose and message.WhichOneof("event") == "metrics" and not message.metrics.smoke:
                    raise errors.Unavailable(
                        "NODE_LOST: the Ray node 10.0.0.9 (0123456789ab) running the run was lost; "
                        "the run did not finish",
                        reason="NODE_LOST",
                    )

    def read_artifact(self, artifact_id: str, *, timeout_s: float):
        return self.real.read_artifact(artifact_id, timeout_s=timeout_s)


async def _node_lost_harness(gateway, sandbox: Sandbox, lose: int, **settings: object):
    from zehanx_gateway.orchestrator.runner import start_workers

    dataset = tiny_dataset(sandbox.dataset_root)
    trainer = NodeLostTrainer(sandbox.trainer.address, lose)
    codegen = _threshold_codegen(dataset, "honest")
    workers = start_workers(
        gateway,
        e2e_support.worker_settings(**settings),
        crawler=StaticCrawler(dataset),
        codegen=codegen,
        trainer=trainer,
    )
    user_id = await gateway.registry.user_by_name("e2e", create=True)
    return Harness(gateway, [workers], Principal(user_id, AuthMethod.API_KEY, "test")), trainer


async def test_a_run_whose_node_is_lost_trains_again_from_its_start_with_one_marker_and_no_gap(
    open_gateway, sandbox: Sandbox
) -> None:
    harness, trainer = await _node_lost_harness(open_gateway, sandbox, lose=1)
    try:
        job = await _run_to_the_end(harness, within=120)
    finally:
        await trainer.real.close()
    events = await harness.events(job.id)
    assert job.state is JobState.SUCCEEDED, (job.error, [(e.kind, dict(e.payload)) for e in events[-5:]])
    assert trainer.calls == 2
    _contiguous(events)  # numbered 1..n: nothing lost, nothing written twice
    marks = [e for e in _of(events, "log_line") if e.payload.get("text", "").startswith("node lost:")]
    assert len(marks) == 1, [e.payload.get("text") for e in _of(events, "log_line")]
    assert "run 2 of at most 3" in marks[0].payload["text"] and "10.0.0.9" in marks[0].payload["text"]
    mark = marks[0].sequence
    full = [e for e in _of(events, "training_metrics") if not e.payload.get("smoke")]
    before = [e for e in full if e.sequence < mark]
    after = [e for e in full if e.sequence > mark]
    # The lost run's first metrics are kept (the caller saw them); the new run starts again at step 1.
    assert [int(e.payload["step"]) for e in before] == [1]
    assert int(after[0].payload["step"]) == 1 and len(after) > 1
    # Exactly one evaluation and one model: the lost run left nothing behind but its events.
    assert len(_of(events, "evaluation_result")) == 1 and len(_of(events, "model_published")) == 1
    assert job.attempt == 1, "the same job attempt trained again; no worker hand-over"


async def test_a_node_lost_again_and_again_fails_the_job_with_node_lost(
    open_gateway, sandbox: Sandbox
) -> None:
    harness, trainer = await _node_lost_harness(open_gateway, sandbox, lose=99, node_lost_retries=1)
    try:
        job = await _run_to_the_end(harness, within=120)
    finally:
        await trainer.real.close()
    events = await harness.events(job.id)
    assert job.state is JobState.FAILED and job.error is not None
    assert job.error.reason == "NODE_LOST" and "lost 2 time(s)" in job.error.message
    assert trainer.calls == 2  # one run, then node_lost_retries=1 more
    _contiguous(events)
    marks = [e for e in _of(events, "log_line") if e.payload.get("text", "").startswith("node lost:")]
    assert len(marks) == 1 and "run 2 of at most 2" in marks[0].payload["text"]
