"""Train through the gRPC API with a real executor: streaming, smoke run, held-out evaluation,
artifacts, untrusted metric lines, cancellation and bad requests."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch
from google.rpc import error_details_pb2, status_pb2
from programs import tiny_program
from safetensors.torch import load_file
from trainer_support import (
    EXECUTOR_SLOTS,
    EXECUTOR_UID_BASE,
    TOKEN,
    Dataset,
    Run,
    Suite,
    manifests,
    request_for,
)
from zehanx.common.v1 import log_pb2, structured_error_pb2, task_family_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as pb
from zehanx_trainer.artifacts import ArtifactStore, LocalBlobBackend

STAGES_IN_ORDER = [
    pb.TRAIN_STAGE_STAGING,
    pb.TRAIN_STAGE_SMOKE_RUN,
    pb.TRAIN_STAGE_TRAINING,
    pb.TRAIN_STAGE_EVALUATING,
    pb.TRAIN_STAGE_PUBLISHING,
]
PLATFORM = log_pb2.LOG_SOURCE_PLATFORM
TABULAR = task_family_pb2.TASK_FAMILY_TABULAR_CLASSIFICATION


def tiny_request(program, dataset: Dataset, **kw) -> pb.TrainRequest:
    return request_for(program, dataset, family=TABULAR, target="label", **kw)


def events_between(run: Run, first_stage: int, next_stage: int | None) -> list[pb.TrainResponse]:
    """The events after the stage change to ``first_stage`` and before the one to ``next_stage``."""
    inside, out = False, []
    for e in run.events:
        if e.WhichOneof("event") == "stage_change":
            if e.stage_change.stage == first_stage:
                inside = True
                continue
            if e.stage_change.stage == next_stage:
                break
        if inside:
            out.append(e)
    return out


# -- the reference program on scikit-learn's digits ----------------------------------------------------


def test_events_are_numbered_from_one_without_gaps_and_stages_come_in_order(digits_run: Run) -> None:
    assert [e.sequence for e in digits_run.events] == list(range(1, len(digits_run.events) + 1))
    times = [e.event_time.ToDatetime() for e in digits_run.events]
    assert times == sorted(times)
    assert digits_run.stages() == STAGES_IN_ORDER
    assert digits_run.events[0].WhichOneof("event") == "stage_change"
    assert digits_run.last.WhichOneof("event") == "result"


def test_smoke_metrics_come_first_then_the_full_run_and_its_loss_falls(digits_run: Run) -> None:
    smoke = [
        e.metrics
        for e in events_between(digits_run, pb.TRAIN_STAGE_SMOKE_RUN, pb.TRAIN_STAGE_TRAINING)
        if e.WhichOneof("event") == "metrics"
    ]
    full = [
        e.metrics
        for e in events_between(digits_run, pb.TRAIN_STAGE_TRAINING, pb.TRAIN_STAGE_EVALUATING)
        if e.WhichOneof("event") == "metrics"
    ]
    assert smoke and all(m.smoke for m in smoke)
    assert max(m.step for m in smoke) <= 3  # the reference program's SMOKE_BATCHES
    assert full and not any(m.smoke for m in full)
    losses = [m.loss for m in full if m.HasField("loss")]
    assert len(losses) >= 20
    assert all(m.step > 0 for m in full)
    assert [m.step for m in full] == sorted(m.step for m in full)
    assert max(m.epoch for m in full) >= 5
    assert any(m.HasField("learning_rate") and m.HasField("samples_per_second") for m in full)
    assert any(m.HasField("eta_duration") for m in full)
    assert any("accuracy" in m.validation_metrics.values for m in full)
    # Loss falls: the mean of the last ten reports is a fraction of the first ten's.
    assert sum(losses[-10:]) / 10 < 0.25 * sum(losses[:10]) / 10


def test_held_out_accuracy_is_computed_by_the_trainer_and_beats_the_baseline(
    digits_run: Run, digits: Dataset
) -> None:
    result = digits_run.result
    held_out = result.held_out_metrics.values
    assert result.metric_name == "accuracy"
    assert result.test_row_count == len(digits.rows["test"])
    assert held_out["accuracy"] >= 0.97
    assert set(held_out) == {"accuracy", "macro_f1", "mcc"}
    assert held_out["macro_f1"] >= 0.95 and held_out["mcc"] >= 0.95
    assert result.baseline_name.startswith("majority class")
    assert result.baseline_metrics.values["accuracy"] < 0.2
    assert 0.9 <= result.claimed_metrics.values["accuracy"] <= 1.0  # what the program said, beside it
    assert result.usage.wall_duration.seconds + result.usage.wall_duration.nanos > 0


def test_stored_artifact_holds_weights_program_schema_metrics_and_card_that_load_back(
    digits_run: Run, suite: Suite, digits: Dataset
) -> None:
    import asyncio

    from model import SmallCNN, images_to_tensor

    result = digits_run.result
    store = ArtifactStore(LocalBlobBackend(suite.artifact_dir))

    async def read() -> tuple[dict, dict[str, bytes]]:
        manifest = await store.manifest(result.artifact_id)
        return manifest, await store.read_all(manifest)

    manifest, files = asyncio.run(read())
    # The artifact is the program folder as the user runs it: the model under output/ (ZX_OUTPUT's default).
    assert {
        "output/model.safetensors",
        "output/model_config.json",
        "train.py",
        "predict.py",
        "model.py",
        "zxrt.py",
        "data/schema.json",
        "metrics.json",
        "MODEL_CARD.md",
    } <= set(files)
    assert not any("test" in path or path.startswith("data/train") for path in files)
    assert manifest.files["output/model.safetensors"].sha256 == result.weights_sha256
    assert result.artifact_uri.startswith("file://") and result.artifact_uri.endswith(
        f"{result.artifact_id}.json"
    )

    # The weights load back with safetensors (no pickle) and classify the test split as reported.
    weights_path = suite.artifact_dir / "weights.safetensors"
    weights_path.write_bytes(files["output/model.safetensors"])
    config = json.loads(files["output/model_config.json"])
    model = SmallCNN(len(config["classes"]), config["height"], config["width"], channels=config["channels"])
    model.load_state_dict(load_file(weights_path))
    model.eval()
    rows = digits.rows["test"]
    with torch.no_grad():
        logits = model(images_to_tensor([r["image"] for r in rows], [8, 8], config["scale"]))
    predicted = [config["classes"][i] for i in logits.argmax(dim=1).tolist()]
    accuracy = sum(p == str(r["digit"]) for p, r in zip(predicted, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(result.held_out_metrics.values["accuracy"], abs=1e-9)

    metrics = json.loads(files["metrics.json"])
    assert metrics["held_out"]["accuracy"] == pytest.approx(accuracy)
    assert metrics["beats_baseline"] is True
    card = files["MODEL_CARD.md"].decode()
    for heading in (
        "## Task",
        "## Data",
        "## Model",
        "## Training",
        "## Held-out evaluation",
        "## Known limits",
    ):
        assert heading in card, heading
    assert f"{accuracy:.4f}" in card and "majority class" in card
    assert result.weights_sha256 in card


def test_read_artifact_streams_the_model_as_one_verified_zip_the_same_every_time(
    digits_run: Run, suite: Suite
) -> None:
    """ReadArtifact is how the gateway gets a model (it never opens the trainer's store): a header,
    then the zip; the zip holds exactly the artifact's files, and a second read gives the same bytes."""
    import asyncio
    import hashlib
    import io
    import zipfile

    result = digits_run.result
    store = ArtifactStore(LocalBlobBackend(suite.artifact_dir))

    def read() -> tuple[pb.ReadArtifactResponse, bytes]:
        messages = list(
            suite.stub.ReadArtifact(
                pb.ReadArtifactRequest(artifact_id=result.artifact_id),
                metadata=[("x-zx-service-token", TOKEN)],
                timeout=60,
            )
        )
        assert messages[0].WhichOneof("part") == "header"
        assert all(m.WhichOneof("part") == "chunk" and len(m.chunk) <= 1024 * 1024 for m in messages[1:])
        return messages[0], b"".join(m.chunk for m in messages[1:])

    first, data = read()
    assert first.header.size_bytes == len(data)
    assert first.header.sha256 == hashlib.sha256(data).hexdigest()
    assert first.header.media_type == "application/zip"
    files = asyncio.run(store.read_all(asyncio.run(store.manifest(result.artifact_id))))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == sorted(files)
        assert all(archive.read(name) == content for name, content in files.items())
    again, data_again = read()
    assert again.header.sha256 == first.header.sha256 and data_again == data

    for artifact_id, code in (
        ("0" * 64, grpc.StatusCode.NOT_FOUND),
        ("../x", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            list(
                suite.stub.ReadArtifact(
                    pb.ReadArtifactRequest(artifact_id=artifact_id),
                    metadata=[("x-zx-service-token", TOKEN)],
                    timeout=30,
                )
            )
        assert refused.value.code() == code, artifact_id


# -- small programs -----------------------------------------------------------------------------------


def test_smoke_run_comes_first_and_the_training_sandbox_never_sees_the_test_split(
    suite: Suite, tiny: Dataset
) -> None:
    run = Run(request := tiny_request(tiny_program("honest"), tiny), suite.train(request))
    assert run.stages() == STAGES_IN_ORDER
    smoke_logs = [
        e.log_line.text
        for e in events_between(run, pb.TRAIN_STAGE_SMOKE_RUN, pb.TRAIN_STAGE_TRAINING)
        if e.WhichOneof("event") == "log_line"
    ]
    full_logs = [
        e.log_line.text
        for e in events_between(run, pb.TRAIN_STAGE_TRAINING, pb.TRAIN_STAGE_EVALUATING)
        if e.WhichOneof("event") == "log_line"
    ]
    assert any("ZX_SMOKE=1" in line for line in smoke_logs)
    assert any("ZX_SMOKE=0" in line for line in full_logs)
    listings = [
        json.loads(line.split("ZX_DATA holds ", 1)[1]) for line in run.logs() if "ZX_DATA holds " in line
    ]
    assert len(listings) == 2  # smoke run and full run
    for listing in listings:
        assert listing == ["schema.json", "train.jsonl", "validation.jsonl"]
    assert run.result.held_out_metrics.values["accuracy"] >= 0.9


def test_a_crashing_program_fails_its_smoke_run_with_a_structured_error_and_publishes_nothing(
    suite: Suite, tiny: Dataset
) -> None:
    before = manifests(suite.artifact_dir)
    run = Run(request := tiny_request(tiny_program("crash"), tiny), suite.train(request))
    assert run.last.WhichOneof("event") == "program_failure"
    failure = run.last.program_failure
    assert run.stages() == [pb.TRAIN_STAGE_STAGING, pb.TRAIN_STAGE_SMOKE_RUN]
    assert failure.stage == pb.TRAIN_STAGE_SMOKE_RUN
    assert failure.repairable
    assert failure.exit_code == 1
    error = failure.error
    assert error.phase == structured_error_pb2.PROGRAM_PHASE_MODEL_BUILDING
    assert error.exception_type == "KeyError"
    assert "no_such_column" in error.message
    assert error.file_path == "features.py" and error.line == 5
    assert error.traceback_tail.startswith("Traceback (most recent call last):")
    assert 'features.py", line 5' in error.traceback_tail and "train.py" in error.traceback_tail
    assert not run.of("result")
    assert manifests(suite.artifact_dir) == before


def test_a_program_claiming_099_is_reported_with_the_trainers_low_held_out_figure(
    suite: Suite, tiny: Dataset
) -> None:
    run = Run(request := tiny_request(tiny_program("liar"), tiny), suite.train(request))
    result = run.result
    negatives = sum(r["label"] == "neg" for r in tiny.rows["test"]) / len(tiny.rows["test"])
    assert result.claimed_metrics.values["accuracy"] == pytest.approx(0.99)
    assert result.held_out_metrics.values["accuracy"] == pytest.approx(negatives)
    assert result.held_out_metrics.values["accuracy"] < 0.7
    assert result.held_out_metrics.values["mcc"] == 0.0
    assert any("held-out accuracy" in line and "claimed 0.9900" in line for line in run.logs(PLATFORM))


def test_forged_and_oversized_metric_lines_are_rejected(suite: Suite, tiny: Dataset) -> None:
    run = Run(request := tiny_request(tiny_program("forger"), tiny), suite.train(request))
    assert run.result.held_out_metrics.values["accuracy"] >= 0.9  # the run itself still succeeds
    full = [
        e.metrics
        for e in events_between(run, pb.TRAIN_STAGE_TRAINING, pb.TRAIN_STAGE_EVALUATING)
        if e.WhichOneof("event") == "metrics"
    ]
    candidates = len(tiny.rows["train"])
    # Only the program's real reports: steps 1..N and the validation report; none of the forged ones.
    assert sorted({m.step for m in full}) == list(range(1, candidates + 1))
    assert not any("x" in m.validation_metrics.values for m in full)
    assert not run.of("checkpoint")
    platform = run.logs(PLATFORM)
    assert any("ignored a zxrt record that breaks the contract" in line for line in platform)
    assert any("UNSUPPORTED_VERSION" in line or "zxrt records in all" in line for line in platform)
    assert any("executor dropped" in line for line in platform)  # the oversized and the non-JSON line
    assert all(
        len(e.log_line.text.encode()) <= 16 * 1024 for e in run.events if e.WhichOneof("event") == "log_line"
    )


def test_smoke_only_stops_after_a_passed_smoke_run_without_artifacts(suite: Suite, tiny: Dataset) -> None:
    run = Run(request := tiny_request(tiny_program("honest"), tiny, smoke_only=True), suite.train(request))
    assert run.stages() == [pb.TRAIN_STAGE_STAGING, pb.TRAIN_STAGE_SMOKE_RUN]
    assert run.result.smoke_only and not run.result.artifact_id


def _sandbox_pids() -> list[int]:
    """Processes running as one of the test executor's sandbox uids."""
    uids = set(range(EXECUTOR_UID_BASE, EXECUTOR_UID_BASE + EXECUTOR_SLOTS))
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:") and int(line.split()[1]) in uids:
                    found.append(int(status.parent.name))
        except (OSError, ValueError):
            continue
    return found


def test_cancelling_train_kills_the_sandbox_and_publishes_nothing(suite: Suite, tiny: Dataset) -> None:
    before = manifests(suite.artifact_dir)
    call = suite.stub.Train(
        tiny_request(tiny_program("sleeper"), tiny), metadata=[("x-zx-service-token", TOKEN)], timeout=240
    )
    seen: list[pb.TrainResponse] = []
    sleeping = threading.Event()

    def consume() -> None:
        try:
            for event in call:
                seen.append(event)
                if event.WhichOneof("event") == "log_line" and event.log_line.text.endswith("sleeping"):
                    sleeping.set()
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert sleeping.wait(120), [e.WhichOneof("event") for e in seen]
    assert _sandbox_pids(), "the full run should be running in a sandbox now"
    call.cancel()
    reader.join(30)
    assert call.code() == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + 30
    while _sandbox_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sandbox_pids() == []
    assert not [e for e in seen if e.WhichOneof("event") in ("result", "program_failure")]
    assert manifests(suite.artifact_dir) == before


# -- requests the trainer refuses ---------------------------------------------------------------------


def _status(exc: grpc.RpcError) -> status_pb2.Status:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status")


def test_a_malformed_request_gets_invalid_argument_with_field_violations(suite: Suite, tiny: Dataset) -> None:
    request = tiny_request(tiny_program("honest"), tiny)
    request.run_id = "not-a-uuid"
    with pytest.raises(grpc.RpcError) as info:
        suite.train(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = set()
    for detail in _status(info.value).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields |= {v.field for v in bad.field_violations}
    assert "run_id" in fields


def test_a_zxrt_shipped_by_the_program_is_refused(suite: Suite, tiny: Dataset) -> None:
    request = tiny_request(tiny_program("honest"), tiny)
    request.program.files.add(path="zxrt.py", content=b"VERSION = 1\n")
    with pytest.raises(grpc.RpcError) as info:
        suite.train(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "zxrt.py" in (info.value.details() or "") or "cannot be run" in (info.value.details() or "")


def test_dataset_files_that_do_not_match_their_sha256_fail_the_precondition(
    suite: Suite, tiny: Dataset
) -> None:
    request = tiny_request(tiny_program("honest"), tiny)
    request.dataset.test_sha256 = "0" * 64
    with pytest.raises(grpc.RpcError) as info:
        suite.train(request)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sha256" in (info.value.details() or "")


def test_dataset_files_outside_the_allowed_folders_are_refused(
    suite: Suite, tiny: Dataset, tmp_path: Path
) -> None:
    outside = tmp_path / "test.jsonl"
    outside.write_bytes((tiny.root / "test.jsonl").read_bytes())
    request = tiny_request(tiny_program("honest"), tiny)
    request.dataset.test_uri = outside.as_uri()
    with pytest.raises(grpc.RpcError) as info:
        suite.train(request)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
