"""Running a generated program for real: smoke run, full run, predict.py, in subprocesses laid out
the way the trainer lays out a sandbox (``zxrt.py`` next to ``train.py``, ``data/`` and ``output/``).

The programs here are the template generator's own, checked by the validator first; they run as
plain child processes (the executor's sandbox is tested by the executor's and trainer's suites).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zehanx_codegen.domain import Program, ProgramFailure, ProgramPhase

REPO = Path(__file__).resolve().parents[2]
ZXRT = REPO / "services" / "trainer" / "zehanx_trainer" / "zxrt_runtime" / "zxrt.py"
PREFIX = "@@zx:"


@dataclass
class Run:
    returncode: int
    records: list[dict[str, Any]]
    stdout: str
    stderr: str

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    def failure(self) -> ProgramFailure:
        """The structured error the trainer would send to RepairProgram."""
        errors = self.of("error")
        tail = self.stderr[-4000:]
        if not errors:
            return ProgramFailure(
                ProgramPhase.UNSPECIFIED, "", tail.strip().splitlines()[-1] if tail.strip() else "", tail
            )
        e = errors[-1]
        return ProgramFailure(ProgramPhase(e["phase"]), e["type"], e["message"], tail, e["file"], e["line"])


def lay_out(program: Program, work: Path, data: Path) -> Path:
    """A fresh working folder: the program's files, zxrt.py, data/ (train, validation, schema)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for path, text in program.files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text, encoding="utf-8")
    shutil.copy(ZXRT, work / "zxrt.py")
    shutil.copytree(data, work / "data")
    return work


def _env(smoke: bool, budget_s: float | None, threads: int = 1) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update({"ZX_DATA": "data", "ZX_OUTPUT": "output", "ZX_SMOKE": "1" if smoke else "0", "ZX_DEVICE": "cpu",
                "ZX_SEED": "42", "OMP_NUM_THREADS": str(threads), "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    if budget_s is not None:
        env["ZX_TIME_BUDGET_S"] = str(budget_s)
    return env


def train(
    work: Path, *, smoke: bool, budget_s: float | None = None, timeout: float = 300, threads: int = 1
) -> Run:
    out = work / "output"
    if out.exists():
        shutil.rmtree(out)
    proc = subprocess.run(
        [sys.executable, "train.py"], cwd=work, env=_env(smoke, budget_s, threads), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    records = [
        json.loads(line[len(PREFIX) :]) for line in proc.stdout.splitlines() if line.startswith(PREFIX)
    ]
    return Run(proc.returncode, records, proc.stdout, proc.stderr)


def predict(work: Path, inputs: Path, *, timeout: float = 300) -> list[dict[str, Any]]:
    target = work / "predictions.jsonl"
    shutil.copy(inputs, work / "data" / "inputs.jsonl")
    proc = subprocess.run(
        [sys.executable, "predict.py", "data/inputs.jsonl", "predictions.jsonl"], cwd=work,
        env=_env(False, None), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"predict.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in target.read_text().splitlines()]
