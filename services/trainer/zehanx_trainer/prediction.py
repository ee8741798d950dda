"""Predictions of a stored model: its ``predict.py`` in the sandbox on the given instances.

The artifact is read and verified (sha256 of every file) once, then kept staged in memory for the
most recently used models. A call is then served by the model's resident predictor
(:mod:`zehanx_trainer.serving`: ``load`` once, ``predict`` per batch, in an executor session), started
on the model's first call (cold) and answering later calls warm. When the executor's backend has no
sessions, or the model's ``predict.py`` predates ``load`` / ``predict``, the call runs ``predict.py
INPUT.jsonl OUTPUT.jsonl`` once in a fresh sandbox (one-shot, always cold), and the response says so.
Both paths check the program's answers by the same rules (``parse_predictions`` on a one-shot run's
file, ``check_predictions`` on a warm answer already parsed), so a warm call's predictions are the
ones a cold call gives. Instances may come as JSON lines (``instances_jsonl``): parsed once here and
passed on to the predictor as they came; the answer then goes back as JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter, Histogram
from zehanx_runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from zehanx_runtime.logging import get_logger

from zehanx_trainer import fastjson
from zehanx_trainer.artifacts import ArtifactStore, check_artifact_id
from zehanx_trainer.evaluation import check_predictions, parse_predictions
from zehanx_trainer.executor_port import (
    ExecFile,
    ExecLimits,
    ExecOutput,
    ExecProducedFile,
    ExecRequest,
    ExecResult,
    Executor,
    ExitReason,
)
from zehanx_trainer.failures import build_error
from zehanx_trainer.serving import ModelFiles, PredictorPool, SessionsUnsupported, resident_capable

# Prometheus (served by zehanx_runtime.metrics). start="warm": a resident predictor that had already
# loaded the model answered; "cold": a process started for the call (a new predictor, or one-shot).
PREDICT_SECONDS = Histogram(
    "zx_trainer_predict_seconds",
    "Predict calls that answered, from the request to the predictions, by cold or warm start.",
    ["start"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120),
)
PREDICT_ROWS = Counter("zx_trainer_predict_rows_total", "Instances answered by Predict.")

log = get_logger("zehanx.trainer.predict")

#: Artifact files that predict.py never needs.
_NOT_STAGED = frozenset({"metrics.json", "MODEL_CARD.md"})
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
#: Instances, answers and files this small are parsed and checked on the event loop (about 2 ms for a
#: MiB with orjson: less than a thread hop costs once the loop is busy), larger ones in a thread.
_INLINE_BYTES = 1024 * 1024
#: A one-shot run's file is parsed with json's number hooks (slower): on the loop only when this small.
_FILE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class StagedModel:
    """A verified artifact, ready to be written into a sandbox."""

    artifact_id: str
    files: tuple[ExecFile, ...]
    predict_entry_point: str
    input_columns: tuple[str, ...]
    task_family: str
    size_bytes: int


@dataclass(frozen=True)
class PredictOutcome:
    predictions: list[tuple[Any, dict[str, float]]]
    duration_s: float
    staged_from_cache: bool
    #: A resident predictor that had already loaded the model answered.
    warm: bool = False
    #: This call started the model's predictor again after the previous one died.
    restarted: bool = False
    #: "resident" or "one_shot".
    mode: str = "one_shot"
    #: Why the call was one-shot ("" when resident).
    one_shot_reason: str = ""
    #: The instances came as JSON lines: answer with JSON lines too.
    as_jsonl: bool = False


@dataclass(frozen=True)
class PredictorConfig:
    cache_models: int = 8
    cache_bytes: int = 2 * 1024**3
    timeout_s: float = 120.0
    memory_bytes: int = 2 * 1024**3
    max_processes: int = 256
    disk_bytes: int = 2 * 1024**3
    device: str = "cpu"
    executor_margin_s: float = 30.0


class Predictor:
    """Answers Predict: an LRU of staged models, their resident predictors, one-shot runs otherwise."""

    def __init__(
        self,
        executor: Executor,
        store: ArtifactStore,
        config: PredictorConfig,
        *,
        pool: PredictorPool | None = None,
    ) -> None:
        self.executor = executor
        self.store = store
        self.config = config
        #: None: every call is one-shot (an executor port without sessions).
        self.pool = pool
        self._capable: dict[str, str] = {}
        self._cache: OrderedDict[str, StagedModel] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        #: Artifacts read (and verified) from the store, and predictions served from the staged cache.
        self.loads = 0
        self.cache_hits = 0

    async def staged(self, artifact_id: str) -> tuple[StagedModel, bool]:
        """The staged model and whether it came from the cache."""
        check_artifact_id(artifact_id)
        if artifact_id in self._cache:
            self._cache.move_to_end(artifact_id)
            self.cache_hits += 1
            return self._cache[artifact_id], True
        lock = self._loading.setdefault(artifact_id, asyncio.Lock())
        try:
            async with lock:
                if artifact_id in self._cache:
                    self.cache_hits += 1
                    return self._cache[artifact_id], True
                model = await self._load(artifact_id)
                self.loads += 1
                self._cache[artifact_id] = model
                while len(self._cache) > self.config.cache_models or (
                    len(self._cache) > 1
                    and sum(m.size_bytes for m in self._cache.values()) > self.config.cache_bytes
                ):
                    self._cache.popitem(last=False)
        finally:
            if not lock.locked():
                self._loading.pop(artifact_id, None)
        return model, False

    async def _load(self, artifact_id: str) -> StagedModel:
        manifest = await self.store.manifest(artifact_id)
        entry = manifest.metadata.get("predict_entry_point", "predict.py")
        if entry not in manifest.files:
            raise FailedPrecondition(f"artifact {artifact_id} holds no {entry}", reason="NOT_A_MODEL")
        files = []
        for path in sorted(manifest.files):
            if path in _NOT_STAGED:
                continue
            files.append(ExecFile(path, await self.store.read(manifest, path)))
        try:
            columns = tuple(json.loads(manifest.metadata.get("input_columns", "[]")))
        except ValueError:
            columns = ()
        return StagedModel(
            artifact_id=artifact_id,
            files=tuple(files),
            predict_entry_point=entry,
            input_columns=columns,
            task_family=manifest.metadata.get("task_family", ""),
            size_bytes=sum(len(f.content) for f in files),
        )

    def rows_of(self, model: StagedModel, instances: list[Any]) -> list[dict[str, Any]]:
        """Instances as input rows: objects as given; a bare value when the model reads one column."""
        rows: list[dict[str, Any]] = []
        bad: list[FieldViolation] = []
        for i, instance in enumerate(instances):
            if isinstance(instance, dict):
                rows.append(instance)
            elif len(model.input_columns) == 1:
                rows.append({model.input_columns[0]: instance})
            else:
                bad.append(
                    FieldViolation(
                        f"instances[{i}]",
                        "must be an object of column values: this model reads "
                        + (", ".join(model.input_columns) or "several columns"),
                    )
                )
        if bad:
            raise InvalidArgument("instances do not fit the model", violations=bad, reason="BAD_INSTANCES")
        return rows

    async def predict(
        self,
        artifact_id: str,
        instances: list[Any] | bytes,
        *,
        job_id: str = "",
        deadline: float | None = None,
    ) -> PredictOutcome:
        """``instances`` as JSON values, or as UTF-8 JSON lines (bytes): then parsed once here and, when
        every line is an object of columns, passed on to the predictor as they came."""
        started = time.monotonic()
        model, cached = await self.staged(artifact_id)
        payload: bytes | None = None
        as_jsonl = isinstance(instances, bytes)
        if isinstance(instances, bytes):
            lines = instances.rstrip(b"\n").split(b"\n")
            instances = await _parse_jsonl_instances(lines)
            rows = self.rows_of(model, instances)
            if all(isinstance(i, dict) for i in instances):
                payload = b'{"rows":[' + b",".join(lines) + b"]}"
        else:
            rows = self.rows_of(model, instances)
        reason = self._one_shot_reason(model)
        if not reason:
            assert self.pool is not None
            try:
                served = await self.pool.predict(
                    ModelFiles(model.artifact_id, model.files, model.predict_entry_point),
                    rows,
                    job_id=job_id,
                    payload=payload,
                )
            except SessionsUnsupported as exc:
                reason = exc.reason
            else:
                # The checks of a one-shot run's file (parse_predictions) on the parsed answer.
                predictions = await self._check_served(served.predictions, len(rows), served.answer_bytes)
                return self._done(
                    artifact_id,
                    rows,
                    started,
                    predictions,
                    cached,
                    warm=served.warm,
                    restarted=served.restarted,
                    mode="resident",
                    reason="",
                    as_jsonl=as_jsonl,
                )
        predictions = await self._one_shot(model, rows, job_id=job_id, deadline=deadline)
        return self._done(
            artifact_id,
            rows,
            started,
            predictions,
            cached,
            warm=False,
            restarted=False,
            mode="one_shot",
            reason=reason,
            as_jsonl=as_jsonl,
        )

    def _one_shot_reason(self, model: StagedModel) -> str:
        """Why this model's calls cannot go to a resident predictor, or ""."""
        if self.pool is None:
            return "the trainer's executor has no sessions"
        if self.pool.unsupported_reason:
            return self.pool.unsupported_reason
        if model.artifact_id not in self._capable:
            source = next((f.content for f in model.files if f.path == model.predict_entry_point), b"")
            if len(self._capable) >= 4096:
                self._capable.clear()
            self._capable[model.artifact_id] = resident_capable(source)
        return self._capable[model.artifact_id]

    async def _check_served(
        self, answers: list[Any], rows: int, answer_bytes: int
    ) -> list[tuple[Any, dict[str, float]]]:
        try:
            if answer_bytes <= _INLINE_BYTES:  # a thread hop would cost more than the checks
                return check_predictions(answers, rows, None)
            return await asyncio.to_thread(check_predictions, answers, rows, None)
        except ValueError as exc:
            raise FailedPrecondition(
                f"predict.py returned unusable predictions: {exc}", reason="PREDICT_BAD_OUTPUT"
            ) from None

    async def _check(self, content: bytes, rows: int) -> list[tuple[Any, dict[str, float]]]:
        try:
            if len(content) <= _FILE_INLINE_BYTES:  # a few rows: a thread hop would cost more than the parse
                return parse_predictions(content, rows, None)
            # A program's output, up to 64 MiB: parsed in a thread, off the event loop.
            return await asyncio.to_thread(parse_predictions, content, rows, None)
        except ValueError as exc:
            raise FailedPrecondition(
                f"predict.py wrote unusable predictions: {exc}", reason="PREDICT_BAD_OUTPUT"
            ) from None

    def _done(
        self,
        artifact_id: str,
        rows: list[dict[str, Any]],
        started: float,
        predictions: list[tuple[Any, dict[str, float]]],
        cached: bool,
        *,
        warm: bool,
        restarted: bool,
        mode: str,
        reason: str,
        as_jsonl: bool = False,
    ) -> PredictOutcome:
        duration = time.monotonic() - started
        PREDICT_SECONDS.labels("warm" if warm else "cold").observe(duration)
        PREDICT_ROWS.inc(len(rows))
        log.info(
            "predicted",
            artifact_id=artifact_id,
            rows=len(rows),
            seconds=round(duration, 4),
            staged_from_cache=cached,
            mode=mode,
            warm=warm,
            restarted=restarted,
            one_shot_reason=reason or None,
        )
        return PredictOutcome(
            predictions=predictions,
            duration_s=duration,
            staged_from_cache=cached,
            warm=warm,
            restarted=restarted,
            mode=mode,
            one_shot_reason=reason,
            as_jsonl=as_jsonl,
        )

    async def release(self, artifact_id: str) -> bool:
        """Ends the model's resident predictor; the staged copy goes too (the model may be deleted)."""
        check_artifact_id(artifact_id)
        self._cache.pop(artifact_id, None)
        self._capable.pop(artifact_id, None)
        return await self.pool.release(artifact_id) if self.pool is not None else False

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def _one_shot(
        self, model: StagedModel, rows: list[dict[str, Any]], *, job_id: str, deadline: float | None
    ) -> list[tuple[Any, dict[str, float]]]:
        inputs = ("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n").encode("utf-8")
        request = ExecRequest(
            files=(*model.files, ExecFile("data/inputs.jsonl", inputs)),
            argv=("python", model.predict_entry_point, "data/inputs.jsonl", "predictions.jsonl"),
            env={"ZX_DATA": "data", "ZX_OUTPUT": "output", "ZX_SMOKE": "0", "ZX_DEVICE": self.config.device},
            limits=ExecLimits(
                wall_s=self.config.timeout_s,
                memory_bytes=self.config.memory_bytes,
                max_processes=self.config.max_processes,
                disk_bytes=self.config.disk_bytes,
                gpu=self.config.device == "cuda",
            ),
            collect=("predictions.jsonl",),
            collect_max_bytes=MAX_OUTPUT_BYTES,
            job_id=job_id,
        )
        timeout = self.config.timeout_s + self.config.executor_margin_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0.5:
                raise DeadlineExceeded("no time left for the prediction", reason="DEADLINE_EXCEEDED")
        result: ExecResult | None = None
        produced: dict[str, ExecProducedFile] = {}
        stderr = bytearray()
        async for event in self.executor.execute(request, timeout_s=timeout):
            if isinstance(event, ExecOutput) and event.stream == "stderr":
                stderr += event.data
                del stderr[:-32768]
            elif isinstance(event, ExecProducedFile):
                produced[event.path] = event
            elif isinstance(event, ExecResult):
                result = event
        if result is None:
            raise Unavailable("the executor ended the stream without a result", reason="EXECUTOR_PROTOCOL")
        if result.reason is ExitReason.SANDBOX_ERROR:
            raise Unavailable(f"the sandbox failed: {result.message}", reason="SANDBOX_ERROR")
        if not result.succeeded:
            error = build_error(
                result=result,
                record=None,
                stderr_tail=stderr.decode("utf-8", "replace"),
                program_paths={f.path for f in model.files},
                phase="prediction",
                what="predict.py",
            )
            where = f" ({error.file_path}:{error.line})" if error.file_path else ""
            text = f"{error.exception_type + ': ' if error.exception_type else ''}{error.message}{where}"
            if result.reason in (
                ExitReason.TIMEOUT,
                ExitReason.MEMORY,
                ExitReason.OUTPUT_LIMIT,
                ExitReason.DISK_LIMIT,
            ):
                raise ResourceExhausted(f"predict.py hit a limit: {text}", reason="PREDICT_LIMIT")
            raise InvalidArgument(f"predict.py failed on these inputs: {text}", reason="PREDICT_FAILED")
        output = produced.get("predictions.jsonl")
        if output is None or output.content is None:
            raise FailedPrecondition(
                "predict.py exited 0 but wrote no predictions", reason="PREDICT_NO_OUTPUT"
            )
        return await self._check(output.content, len(rows))


#: One encoder for every line (json.dumps with options builds a new one per call: half the cost).
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def predictions_jsonl(predictions: list[tuple[Any, dict[str, float]]]) -> bytes:
    """Checked predictions as JSON lines, ``{"prediction": ..., "probabilities": {...}}`` each.

    orjson writes them as one array (a tenth of json's time; one orjson call per line cost several
    times that), cut into lines where one object ends and the next begins. orjson never writes a raw
    newline (a string's is ``\\n``), so the lines are exactly the predictions when there are as many
    cuts as predictions; a nested value that looks like a boundary makes more, and those answers, like
    what orjson would write differently from json (see :mod:`zehanx_trainer.fastjson`: an integer
    beyond 64 bits, a ``null``, which it also writes for NaN), are written by json line by line."""
    objects = [
        {"prediction": value, "probabilities": probabilities} if probabilities else {"prediction": value}
        for value, probabilities in predictions
    ]
    try:
        out = orjson.dumps(objects)
    except TypeError:
        out = b"null"
    if b"null" not in out:
        out = out[1:-1].replace(b'},{"prediction":', b'}\n{"prediction":') + b"\n"
        if out.count(b"\n") == len(objects) or not objects:
            return out if objects else b""
    encode = _LINE_ENCODER.encode
    return "".join(encode(obj) + "\n" for obj in objects).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse_jsonl(lines: list[bytes]) -> list[Any]:
    try:
        values = fastjson.loads(b"[" + b",".join(lines) + b"]", parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        pass
    else:
        if len(values) == len(lines):  # else a line held more than one value ("1, 2")
            return values  # type: ignore[no-any-return]
    # Which line: each alone (only on this error path).
    for number, line in enumerate(lines, start=1):
        try:
            json.loads(line, parse_constant=_refuse_constant)
        except RecursionError:
            raise InvalidArgument(
                f"instances_jsonl line {number} nests too deep",
                violations=[FieldViolation("instances_jsonl", f"line {number} nests too deep")],
                reason="BAD_INSTANCES",
            ) from None
        except ValueError as exc:
            raise InvalidArgument(
                f"instances_jsonl line {number} is not one JSON value: {exc}",
                violations=[FieldViolation("instances_jsonl", f"line {number} is not one JSON value")],
                reason="BAD_INSTANCES",
            ) from None
    raise InvalidArgument(  # each line parses alone but not together: cannot happen for JSON values
        "instances_jsonl is not JSON lines", reason="BAD_INSTANCES"
    )


async def _parse_jsonl_instances(lines: list[bytes]) -> list[Any]:
    """JSON lines as values (orjson, json where they differ; in a thread when large); a bad line named."""
    if sum(len(line) for line in lines) <= _INLINE_BYTES:
        return _parse_jsonl(lines)
    return await asyncio.to_thread(_parse_jsonl, lines)
