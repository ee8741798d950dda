"""Run a generated program for real, the way the trainer does, outside the platform.

Used by the quality benchmark and the codegen tests. It writes the dataset folder (train.jsonl,
validation.jsonl, schema.json), runs ``train.py`` in a child process with the ZX_* variables and
the trainer's ``zxrt`` on PYTHONPATH, then ``predict.py`` on the test inputs, and scores the
predictions. Only our own template programs are run this way; LLM-written code runs in the sandbox.

``trainer_over_executor`` starts the other way the trainer benchmarks run programs: a real executor and
trainer as processes, called over gRPC.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZXRT_DIR = REPO / "services" / "trainer" / "zehanx_trainer" / "zxrt_runtime"
sys.path.insert(0, str(REPO / "services" / "codegen"))
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package: services and the sandbox as processes

from zehanx_codegen.domain import (  # noqa: E402
    ClassCount,
    ColumnProfile,
    ColumnType,
    DatasetProfile,
    NumericStats,
    Program,
    TextLength,
)


def zxrt_dir() -> Path:
    if not (ZXRT_DIR / "zxrt.py").is_file():
        raise RuntimeError(f"the trainer's runtime helper is missing: {ZXRT_DIR / 'zxrt.py'}")
    return ZXRT_DIR


def _column(name: str, values: list, rows: int) -> ColumnProfile:
    present = [v for v in values if v is not None and v != ""]
    missing = rows - len(present)
    if present and all(isinstance(v, list) for v in present):
        return ColumnProfile(name, ColumnType.IMAGE, missing, len(present))
    if present and all(isinstance(v, bool) for v in present):
        return ColumnProfile(name, ColumnType.BOOLEAN, missing, len(set(present)))
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        floats = [float(v) for v in present]
        kind = ColumnType.INTEGER if all(float(v).is_integer() for v in present) else ColumnType.FLOAT
        stats = NumericStats(min(floats), max(floats), statistics.fmean(floats), statistics.pstdev(floats))
        return ColumnProfile(name, kind, missing, len(set(floats)), numeric=stats)
    texts = [str(v) for v in present]
    distinct = len(set(texts))
    if texts and all(len(t) == 7 and t[4] == "-" for t in texts[:20]):
        return ColumnProfile(name, ColumnType.DATETIME, missing, distinct, sample_values=tuple(texts[:5]))
    lengths = sorted(len(t) for t in texts) or [0]
    is_text = distinct > 0.5 * len(texts) and statistics.fmean(lengths) > 15
    if is_text:
        length = TextLength(
            lengths[0],
            lengths[-1],
            statistics.fmean(lengths),
            lengths[len(lengths) // 2],
            lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
        )
        return ColumnProfile(
            name,
            ColumnType.TEXT,
            missing,
            distinct,
            text_length=length,
            sample_values=tuple(t[:200] for t in texts[:5]),
        )
    return ColumnProfile(name, ColumnType.CATEGORICAL, missing, distinct, sample_values=tuple(texts[:5]))


def profile_of(
    rows: list[dict],
    target: str | None = None,
    *,
    image_shape: tuple[int, ...] = (),
    time_column: str | None = None,
    with_schema_target: bool = False,
) -> DatasetProfile:
    """What the crawler would report for these rows (enough of it for planning)."""
    names = list(rows[0])
    columns = tuple(_column(n, [r.get(n) for r in rows], len(rows)) for n in names)
    classes: tuple[ClassCount, ...] = ()
    ratio = 0.0
    if target is not None:
        col = next(c for c in columns if c.name == target)
        if col.type not in (ColumnType.FLOAT,) and col.distinct_count <= 1000:
            counts = Counter(str(r[target]) for r in rows if r.get(target) is not None)
            if col.type is not ColumnType.INTEGER or len(counts) <= 20:
                total = sum(counts.values())
                classes = tuple(ClassCount(k, n, n / total) for k, n in counts.most_common())
                ratio = classes[0].count / classes[-1].count
    return DatasetProfile(
        row_count=len(rows),
        columns=columns,
        classes=classes,
        imbalance_ratio=ratio,
        schema_target=target if with_schema_target else None,
        time_column=time_column,
        image_shape=image_shape,
    )


@dataclass
class RunResult:
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    records: list[dict] = field(default_factory=list)

    @property
    def final(self) -> dict:
        return next((r for r in reversed(self.records) if r.get("kind") == "final"), {})


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_program(program: Program, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in program.files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    return folder


def write_data(folder: Path, train: list[dict], validation: list[dict], schema: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl(folder / "train.jsonl", train)
    _write_jsonl(folder / "validation.jsonl", validation)
    (folder / "schema.json").write_text(json.dumps(schema or {}), encoding="utf-8")
    return folder


def _env(data: Path, output: Path, *, smoke: bool, budget_s: float, seed: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update(
        ZX_DATA=str(data),
        ZX_OUTPUT=str(output),
        ZX_SMOKE="1" if smoke else "0",
        ZX_DEVICE="cpu",
        ZX_TIME_BUDGET_S=str(budget_s),
        ZX_SEED=str(seed),
        PYTHONPATH=str(zxrt_dir()),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_train(
    program_dir: Path,
    data: Path,
    output: Path,
    *,
    smoke: bool,
    budget_s: float = 180.0,
    seed: int = 0,
    threads: int = 2,
    timeout: float = 900.0,
) -> RunResult:
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "train.py"],
        cwd=program_dir,
        capture_output=True,
        text=True,
        env=_env(data, output, smoke=smoke, budget_s=budget_s, seed=seed, threads=threads),
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    records = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("@@zx:")]
    return RunResult(proc.returncode, seconds, proc.stdout, proc.stderr, records)


def run_predict(
    program_dir: Path, output: Path, rows: list[dict], work: Path, *, threads: int = 2, timeout: float = 600.0
) -> tuple[list[dict], float]:
    work.mkdir(parents=True, exist_ok=True)
    _write_jsonl(work / "inputs.jsonl", rows)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "predict.py", str(work / "inputs.jsonl"), str(work / "predictions.jsonl")],
        cwd=program_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(work, output, smoke=False, budget_s=0, seed=0, threads=threads),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"predict.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(work / "predictions.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()], time.monotonic() - started


def accuracy(truth: list, predicted: list) -> float:
    return sum(str(a) == str(b) for a, b in zip(truth, predicted, strict=True)) / len(truth)


def mcc_binary(truth: list, predicted: list, positive: str) -> float:
    tp = sum(str(t) == positive and str(p) == positive for t, p in zip(truth, predicted, strict=True))
    tn = sum(str(t) != positive and str(p) != positive for t, p in zip(truth, predicted, strict=True))
    fp = sum(str(t) != positive and str(p) == positive for t, p in zip(truth, predicted, strict=True))
    fn = sum(str(t) == positive and str(p) != positive for t, p in zip(truth, predicted, strict=True))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def mape(truth: list[float], predicted: list[float]) -> float:
    return statistics.fmean(abs(t - p) / abs(t) for t, p in zip(truth, predicted, strict=True))


@contextmanager
def trainer_over_executor(work: Path, token: str, *, sandbox_dir: str, uid_base: int) -> Iterator[str]:
    """A real executor (local sandbox, two slots, its jobs under ``sandbox_dir``, uids from ``uid_base``) and
    a real trainer on it, as processes (``tests/support``); the trainer reads datasets from
    ``work/datasets`` and writes artifacts to ``work/artifacts``. Yields the trainer's address; stops both
    and deletes ``work`` on exit."""
    from support.sandbox import local_executor
    from support.services import start_service

    try:
        with local_executor(work, token, sandbox_dir, uid_base, 2) as executor:
            trainer = start_service(
                "trainer",
                work,
                token=token,
                extra_env={
                    "ZX_TRAINER_EXECUTOR_ADDRESS": executor.address,
                    "ZX_TRAINER_DATASET_ROOTS": json.dumps([str(work / "datasets")]),
                    "ZX_TRAINER_ARTIFACT_DIR": str(work / "artifacts"),
                    "ZX_TRAINER_GPUS": "0",
                },
            )
            try:
                trainer.wait_serving(60)
                yield trainer.address
            finally:
                trainer.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
