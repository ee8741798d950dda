"""A module the sandbox lacks is an environment error: said plainly, and never sent to repair.

On E2B's default template every generated program died at ``import torch`` and the trainer reported it
as a repairable program failure, so the gateway burnt its repairs and codegen's template repairer
answered with advice about the data (cloud_adapters_review.md, section 3).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from zehanx_trainer.domain import ProgramSpec, Stage
from zehanx_trainer.executor_port import ExecFile, ExecResult, ExecUsage, ExitReason
from zehanx_trainer.failures import StructuredError, build_error, is_repairable
from zehanx_trainer.program_output import ProgramRun
from zehanx_trainer.records import ErrorRecord
from zehanx_trainer.training import _Run

# What CPython prints for `import torch` where torch is not installed.
NO_TORCH = (
    "Traceback (most recent call last):\n"
    '  File "/home/user/job/train.py", line 13, in <module>\n'
    "    import torch\n"
    "ModuleNotFoundError: No module named 'torch'\n"
)
FAILED = ExecResult(ExitReason.FAILED, 1, 0, "exited with status 1", ExecUsage())
PROGRAM = {"train.py", "predict.py", "features.py", "model.py"}


def _error(stderr: str, record: ErrorRecord | None = None, paths: set[str] = PROGRAM) -> StructuredError:
    return build_error(
        result=FAILED,
        record=record,
        stderr_tail=stderr,
        program_paths=paths,
        phase="",
        what="train.py (smoke run)",
    )


def test_a_missing_torch_is_an_environment_error_that_is_never_repaired() -> None:
    error = _error(NO_TORCH)
    assert error.environment and error.exception_type == "ModuleNotFoundError"
    assert error.message.startswith("environment error, not a fault of the program or its data")
    assert "'torch'" in error.message and "zx e2b build-template" in error.message
    assert "ZX_EXECUTOR_E2B_TEMPLATE" in error.message
    assert error.phase == "setup"
    # Not repairable in the smoke run (where a program's own crash is) nor in the full run.
    assert is_repairable(FAILED, error, True) is False
    assert is_repairable(FAILED, error, None) is False


def test_zxrts_own_error_record_of_a_missing_module_is_classified_the_same() -> None:
    record = ErrorRecord("setup", "ModuleNotFoundError", "No module named 'safetensors'", "train.py", 14)
    error = _error("", record)
    assert error.environment and "'safetensors'" in error.message


@pytest.mark.parametrize(
    ("stderr", "why"),
    [
        ("ModuleNotFoundError: No module named 'features'\n", "a module the program should have shipped"),
        ("ModuleNotFoundError: No module named 'model.layers'\n", "a submodule of the program's own"),
        ("ImportError: cannot import name 'FancyNet' from 'torch.nn'\n", "an API the program made up"),
        ("ValueError: could not convert string to float: 'x'\n", "the program's own bug"),
    ],
)
def test_the_programs_own_import_mistakes_stay_repairable(stderr: str, why: str) -> None:
    error = _error("Traceback (most recent call last):\n" + stderr)
    assert not error.environment, why
    assert is_repairable(FAILED, error, True) is True


def test_a_library_that_cannot_load_is_the_environments_fault() -> None:
    error = _error(
        "Traceback (most recent call last):\nImportError: libgomp.so.1: cannot open shared object file: No such file or directory\n"
    )
    assert error.environment and is_repairable(FAILED, error, True) is False


async def test_the_smoke_run_reports_a_missing_module_as_not_repairable() -> None:
    """The trainer's own path for a failed smoke run (``_train_failure`` → ``_program_failed``)."""
    spec = SimpleNamespace(run_id="r1", program=ProgramSpec(tuple(ExecFile(p, b"") for p in PROGRAM)))
    run = _Run(SimpleNamespace(config=None), spec, None)  # type: ignore[arg-type]
    program_run = ProgramRun(result=FAILED, stderr_tail=bytearray(NO_TORCH.encode()))
    failure = await run._train_failure(program_run, Stage.SMOKE_RUN, "train.py (smoke run)", repairable=True)
    assert failure is not None
    assert failure.repairable is False and failure.error.environment
    assert failure.exit_reason is ExitReason.FAILED and failure.exit_code == 1
    # The contract carries it, so the gateway can tell the operator's problem from the program's.
    from datetime import UTC, datetime

    from zehanx_trainer.convert import to_response
    from zehanx_trainer.domain import Sequenced

    message = to_response(Sequenced(1, datetime.now(UTC), failure))
    assert message.program_failure.environment and not message.program_failure.repairable
