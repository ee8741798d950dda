"""RepairProgram, template backend: an injected bug is fixed for real (the smoke run fails, the
repaired program's smoke run passes); resource failures get safer settings; what no setting fixes
is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import realdata
import running
from zehanx_codegen.domain import Program, ProgramFailure, ProgramPhase
from zehanx_codegen.service import Codegen
from zehanx_runtime.errors import FailedPrecondition


def test_an_injected_bug_is_repaired_and_the_smoke_run_then_passes(
    codegen: Codegen, penguins: realdata.Prepared, tmp_path: Path
) -> None:
    prompt = "predict the species of a penguin"
    plan = codegen.plan(prompt, penguins.profile)
    good = codegen.generate(prompt, plan, penguins.profile).program
    bug = good.files["train.py"].replace("x_train, x_val = encode(", "x_train, x_val = encode_rows(", 1)
    assert bug != good.files["train.py"]
    broken = Program(files={**good.files, "train.py": bug})

    failed = running.train(running.lay_out(broken, tmp_path / "broken", penguins.folder / "data"), smoke=True)
    assert failed.returncode != 0
    failure = failed.failure()
    assert failure.exception_type == "NameError" and failure.file_path == "train.py" and failure.line > 0
    assert failure.phase is ProgramPhase.DATA_LOADING

    repaired = codegen.repair(broken, plan, failure, attempt=1, profile=penguins.profile)
    assert repaired.validation.passed and repaired.backend == "template"
    assert repaired.changed_paths == ("train.py",)
    assert "NameError" in repaired.change_summary and "train.py" in repaired.change_summary
    fixed = running.train(
        running.lay_out(repaired.program, tmp_path / "fixed", penguins.folder / "data"), smoke=True
    )
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert fixed.of("model")


def test_out_of_memory_gets_smaller_batches_and_a_smaller_network(codegen: Codegen, digits) -> None:
    plan = codegen.plan("classify handwritten digits", digits.profile)
    program = codegen.generate("", plan).program
    failure = ProgramFailure(ProgramPhase.TRAINING, "RuntimeError", "DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip
    repaired = codegen.repair(program, plan, failure, attempt=1)
    text = repaired.program.files["train.py"]
    assert "batch_size = 32" in text and "conv_channels = [16, 32, 64]" in text
    assert repaired.changed_paths == ("train.py",) and "memory" in repaired.change_summary


def test_a_diverged_loss_gets_a_tenth_of_the_learning_rate(codegen: Codegen, penguins) -> None:
    plan = codegen.plan("predict the species", penguins.profile)
    program = codegen.generate("", plan).program
    failure = ProgramFailure(ProgramPhase.TRAINING, "ValueError", "loss is nan after step 12")
    repaired = codegen.repair(program, plan, failure, attempt=2)
    assert "learning_rate = 0.001" in repaired.program.files["train.py"]


def test_a_failure_no_setting_fixes_is_refused_with_the_reason(codegen: Codegen, penguins) -> None:
    plan = codegen.plan("predict the species", penguins.profile)
    program = codegen.generate("", plan).program
    failure = ProgramFailure(
        ProgramPhase.DATA_LOADING, "KeyError", "'species'", file_path="train.py", line=40
    )
    with pytest.raises(FailedPrecondition) as caught:
        codegen.repair(program, plan, failure, attempt=3)
    assert caught.value.reason == "NOT_REPAIRABLE" and "KeyError" in caught.value.message


@pytest.mark.parametrize(("dataset", "prompt", "expected"), [
    ("diamonds_price", "predict the price", ("max_leaves = 15", "max_iterations = 1000")),
    ("arrowhead", "classify the outlines", ("num_features = 4998",)),
])  # fmt: skip
def test_out_of_memory_shrinks_the_trees_and_the_series_features(
    codegen: Codegen, request: pytest.FixtureRequest, dataset: str, prompt: str, expected: tuple[str, ...]
) -> None:
    data = request.getfixturevalue(dataset)
    plan = codegen.plan(prompt, data.profile)
    program = codegen.generate("", plan).program
    failure = ProgramFailure(ProgramPhase.TRAINING, "MemoryError", "Unable to allocate 2.00 GiB for an array")
    repaired = codegen.repair(program, plan, failure, attempt=1)
    text = repaired.program.files["train.py"]
    assert all(e in text for e in expected), text[:2000]
    assert repaired.changed_paths == ("train.py",) and "memory" in repaired.change_summary
