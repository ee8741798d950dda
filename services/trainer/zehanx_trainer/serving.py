"""Resident predictors: one sandboxed process per model that loaded it once and answers batches.

A predictor is the model's ``predict.py`` imported by the runner ``zx_predictor.py`` (staged next to
it) inside an executor session (``ExecutorService.Session``): ``load(model_dir)`` once, then one JSON
line per call, ``predict(state, rows)`` inside. The pool here keeps at most ``max_predictors`` of them
and at most ``max_memory_bytes`` of their sandbox memory limits, least recently used ended first;
predictors idle for ``idle_s`` are ended. Each model has its own process (two models, or two users'
models, never share one), and each predictor answers one call at a time (the others wait their turn).

Failures, as the caller sees them:

- ``predict()`` raised: that call's error (INVALID_ARGUMENT, the program's exception), and the
  predictor keeps serving;
- the process died during a call (a crash, ``os._exit``, the memory limit): that call's error says so
  with the program's own last words (ABORTED, reason PREDICTOR_CRASHED; RESOURCE_EXHAUSTED for a
  limit), and the next call starts a new predictor and says it was a restart;
- a call over ``call_timeout_s``: the predictor is ended (RESOURCE_EXHAUSTED, PREDICT_LIMIT);
- the executor's sessions are full (SESSION_CAPACITY): the least recently used idle predictor is
  ended and the start tried once more.

When the executor's backend has no sessions (E2B, Ray), :class:`SessionsUnsupported` tells the
caller to run ``predict.py`` once instead (a cold call, said as such).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge
from zehanx_runtime.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from zehanx_runtime.logging import get_logger

from zehanx_trainer import fastjson
from zehanx_trainer.executor_port import (
    ExecFile,
    ExecLimits,
    ExecResult,
    ExecSession,
    ExitReason,
    SessionEnded,
    SessionExecutor,
    SessionSpec,
)
from zehanx_trainer.failures import build_error

log = get_logger("zehanx.trainer.serving")

#: The runner, staged beside the model's program under this name.
RUNNER_PATH = Path(__file__).resolve().parent / "predictor_runtime" / "zx_predictor.py"
RUNNER_NAME = "zx_predictor.py"

EVICTIONS = Counter(
    "zx_trainer_predictor_evictions_total",
    "Resident predictors ended, by reason (idle, count, memory, executor_capacity, released, crashed, "
    "timeout, shutdown).",
    ["reason"],
)
WARM = Gauge("zx_trainer_predictors_warm", "Resident predictors with their model loaded.")
RESERVED = Gauge(
    "zx_trainer_predictors_memory_reserved_bytes", "Sandbox memory limits of the resident predictors, summed."
)
RESTARTS = Counter(
    "zx_trainer_predictor_restarts_total",
    "Predictors started again after the previous one of the model died.",
)

#: How long a start waits for the executor to free the place of the predictor ended to make room.
_CAPACITY_WAIT_S = 10.0
_LIMIT_REASONS = (ExitReason.TIMEOUT, ExitReason.MEMORY, ExitReason.OUTPUT_LIMIT, ExitReason.DISK_LIMIT)


@cache
def runner_source() -> bytes:
    return RUNNER_PATH.read_bytes()


def resident_capable(source: bytes) -> str:
    """Why ``predict.py`` cannot serve as a resident predictor, or "" when it can (it defines top-level
    ``load`` and ``predict``; programs written before that contract only have their file entry point)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return "predict.py does not parse"
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    missing = [n for n in ("load", "predict") if n not in names]
    if missing:
        return f"the model's predict.py defines no {' and '.join(f'{n}()' for n in missing)}"
    return ""


class SessionsUnsupported(Exception):
    """The executor's backend cannot keep a process alive; ``reason`` says why, for the response."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ServingConfig:
    max_predictors: int = 8
    max_memory_bytes: int = 8 * 1024**3
    #: The sandbox memory limit of one predictor (what it reserves against ``max_memory_bytes``).
    predictor_memory_bytes: int = 2 * 1024**3
    idle_s: float = 300.0
    #: Wall-clock life of one predictor's sandbox; after it the next call starts a new one.
    life_s: float = 6 * 3600.0
    start_timeout_s: float = 120.0
    call_timeout_s: float = 120.0
    max_processes: int = 256
    disk_bytes: int = 256 * 1024**2
    device: str = "cpu"


@dataclass(frozen=True)
class ModelFiles:
    """What a predictor needs of a staged model (see :class:`zehanx_trainer.prediction.StagedModel`)."""

    artifact_id: str
    files: tuple[ExecFile, ...]
    predict_entry_point: str


@dataclass(frozen=True)
class Served:
    """A batch one predictor answered: the program's predictions (JSON values, not yet checked)."""

    predictions: list[Any]
    warm: bool
    restarted: bool
    execution_id: str
    instance: str
    #: Size of the predictor's answer line (for where to check it: on the loop or in a thread).
    answer_bytes: int = 0


@dataclass
class _Resident:
    artifact_id: str
    memory_bytes: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    session: ExecSession | None = None
    failure: BaseException | None = None
    last_used: float = field(default_factory=time.monotonic)
    #: Calls holding or waiting for this predictor (never evicted while > 0).
    users: int = 0
    start_task: asyncio.Task[None] | None = None
    instance: str = ""
    load_s: float = 0.0
    restarted: bool = False
    #: The restart was reported to a caller already.
    restart_reported: bool = False
    closed: bool = False


class PredictorPool:
    """The trainer's resident predictors, keyed by artifact id."""

    def __init__(
        self, executor: SessionExecutor, config: ServingConfig, *, clock: Any = time.monotonic
    ) -> None:
        if config.max_memory_bytes < config.predictor_memory_bytes:
            raise ValueError("the predictors' memory total is below one predictor's memory limit")
        self.executor = executor
        self.config = config
        self._clock = clock
        self._residents: OrderedDict[str, _Resident] = OrderedDict()
        self._died: set[str] = set()
        self._room = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        #: Set once the executor answered SESSIONS_UNSUPPORTED: every later call goes cold at once.
        self.unsupported_reason = ""
        self.starts = 0
        WARM.set_function(lambda: sum(1 for r in self._residents.values() if r.instance and not r.closed))
        RESERVED.set_function(lambda: self.reserved_bytes)

    # -- what tests and metrics read -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._residents)

    def resident(self, artifact_id: str) -> tuple[str, str] | None:
        """(execution id, runner instance) of the model's predictor when it is resident and loaded."""
        r = self._residents.get(artifact_id)
        if r is None or r.session is None or not r.ready.is_set():
            return None
        return r.session.execution_id, r.instance

    def residents(self) -> list[str]:
        """Artifact ids, least recently used first."""
        return list(self._residents)

    @property
    def reserved_bytes(self) -> int:
        return sum(r.memory_bytes for r in self._residents.values())

    # -- serving ---------------------------------------------------------------------------------------

    async def predict(
        self, model: ModelFiles, rows: list[dict[str, Any]], *, job_id: str = "", payload: bytes | None = None
    ) -> Served:
        """``rows`` answered by the model's predictor. ``payload``, when given, is the call's line
        already encoded (``{"rows": [...]}`` of exactly these rows, no newline)."""
        if self.unsupported_reason:
            raise SessionsUnsupported(self.unsupported_reason)
        self._start_reaper()
        while True:
            resident = self._residents.get(model.artifact_id)
            warm = resident is not None and resident.ready.is_set() and resident.failure is None
            if resident is None or resident.closed:
                resident = await self._admit(model.artifact_id)
            else:
                self._residents.move_to_end(model.artifact_id)
            resident.users += 1
            try:
                if resident.start_task is None:
                    # Its own task: a caller that gives up does not take the start down with it.
                    resident.start_task = asyncio.create_task(self._start(resident, model, job_id))
                await asyncio.shield(resident.start_task)
                if resident.failure is not None:
                    raise resident.failure
                async with resident.lock:
                    ended = resident.session.ended if resident.session is not None else None
                    if ended is not None:
                        # It ended between calls (a crash, a limit, the executor's idle timeout):
                        # not this call's failure; the next round starts a new one.
                        if ended.reason not in (ExitReason.COMPLETED, ExitReason.TIMEOUT):
                            self._died.add(resident.artifact_id)
                        await self._end(resident, "ended", count=False)
                    if resident.closed:
                        # Its process died (or was released) while this call waited its turn: the
                        # next round starts a new one.
                        continue
                    return await self._call(resident, model, rows, warm=warm, payload=payload)
            finally:
                resident.users -= 1
                resident.last_used = self._clock()

    async def _admit(self, artifact_id: str) -> _Resident:
        """A new (not yet started) predictor entry, after making room for it."""
        async with self._room:
            existing = self._residents.get(artifact_id)
            if existing is not None and not existing.closed:
                return existing
            await self._make_room(self.config.predictor_memory_bytes)
            resident = _Resident(artifact_id, self.config.predictor_memory_bytes)
            resident.restarted = artifact_id in self._died
            self._residents[artifact_id] = resident
            return resident

    async def _make_room(self, memory_bytes: int) -> None:
        while True:
            if len(self._residents) >= self.config.max_predictors:
                reason = "count"
            elif self.reserved_bytes + memory_bytes > self.config.max_memory_bytes:
                reason = "memory"
            else:
                return
            if not await self._evict_lru(reason):
                raise ResourceExhausted(
                    f"all {len(self._residents)} resident predictors are busy "
                    f"(ZX_TRAINER_PREDICTORS_MAX={self.config.max_predictors}, "
                    f"ZX_TRAINER_PREDICTORS_MEMORY_BYTES={self.config.max_memory_bytes}); try again shortly",
                    reason="PREDICTORS_BUSY",
                )

    async def _evict_lru(self, reason: str, *, keep: str = "") -> bool:
        for artifact_id, r in self._residents.items():
            if artifact_id != keep and r.users == 0 and not r.lock.locked():
                await self._end(r, reason)
                return True
        return False

    def _spec(self, model: ModelFiles, job_id: str, instance: str) -> SessionSpec:
        if any(f.path == RUNNER_NAME for f in model.files):
            raise FailedPrecondition(
                f"the model ships its own {RUNNER_NAME}, a name the platform's predictor runner uses",
                reason="PREDICT_RUNNER_CLASH",
            )
        module = model.predict_entry_point.removesuffix(".py").replace("/", ".")
        return SessionSpec(
            files=(*model.files, ExecFile(RUNNER_NAME, runner_source())),
            argv=("python", RUNNER_NAME, module, "output", instance),
            env={"ZX_DATA": "data", "ZX_OUTPUT": "output", "ZX_SMOKE": "0", "ZX_DEVICE": self.config.device},
            limits=ExecLimits(
                wall_s=self.config.life_s,
                memory_bytes=self.config.predictor_memory_bytes,
                max_processes=self.config.max_processes,
                disk_bytes=self.config.disk_bytes,
                gpu=self.config.device == "cuda",
            ),
            # A backstop: the trainer ends idle predictors itself, at idle_s.
            idle_timeout_s=self.config.idle_s + 60.0,
            job_id=job_id,
        )

    async def _start(self, resident: _Resident, model: ModelFiles, job_id: str) -> None:
        """Starts the model's process and waits for its load; failures are kept for every waiter."""
        started = time.monotonic()
        try:
            spec = self._spec(model, job_id, uuid.uuid4().hex)
            session = await self._open(spec, resident.artifact_id)
            resident.session = session
            remaining = max(1.0, self.config.start_timeout_s - (time.monotonic() - started))
            try:
                raw = await session.call(b'{"hello": 1}', timeout_s=remaining)
            except TimeoutError:
                raise ResourceExhausted(
                    f"predict.py's load() took longer than {self.config.start_timeout_s:g} s "
                    "(ZX_TRAINER_PREDICT_TIMEOUT_S)",
                    reason="PREDICT_LIMIT",
                ) from None
            except SessionEnded as ended:
                raise self._ended_error(model, ended, during="while loading the model") from None
            answer = _answer(raw)
            if "error" in answer:
                raise FailedPrecondition(
                    f"predict.py's load() failed: {_error_text(answer['error'])}",
                    reason="PREDICT_LOAD_FAILED",
                )
            ready = answer.get("ready")
            if not isinstance(ready, dict):
                raise FailedPrecondition(
                    f"the predictor answered its hello with {raw[:200]!r}", reason="PREDICT_BAD_OUTPUT"
                )
            resident.instance = str(ready.get("instance", ""))
            resident.load_s = float(ready.get("load_s", 0.0))
            self.starts += 1
            if resident.restarted:
                RESTARTS.inc()
                self._died.discard(resident.artifact_id)
            log.info(
                "predictor started",
                artifact_id=resident.artifact_id,
                execution_id=session.execution_id,
                seconds=round(time.monotonic() - started, 3),
                load_s=resident.load_s,
                restarted=resident.restarted,
            )
        except SessionsUnsupported as exc:
            resident.failure = exc
            self._forget(resident)
        except Exception as exc:
            resident.failure = exc
            await self._end(resident, "start_failed", count=False, kill=True)
        except asyncio.CancelledError:  # the pool is closing
            resident.failure = Unavailable("the trainer is shutting down", reason="SHUTTING_DOWN")
            await self._end(resident, "shutdown", count=False, kill=True)
            raise
        finally:
            resident.ready.set()

    async def _open(self, spec: SessionSpec, artifact_id: str) -> ExecSession:
        evicted_at: float | None = None
        while True:
            try:
                return await self.executor.open_session(spec, timeout_s=self.config.start_timeout_s)
            except DomainError as exc:
                if exc.reason == "SESSIONS_UNSUPPORTED":
                    self.unsupported_reason = f"the executor's backend has no sessions ({exc})"
                    log.warning("sessions unsupported: predictions run cold", detail=str(exc))
                    raise SessionsUnsupported(self.unsupported_reason) from None
                if exc.reason != "SESSION_CAPACITY":
                    raise
                if evicted_at is None:
                    async with self._room:
                        evicted = await self._evict_lru("executor_capacity", keep=artifact_id)
                    if not evicted:
                        raise ResourceExhausted(
                            "the executor has no room for another predictor and none of the trainer's is "
                            f"idle: {exc}",
                            reason="SESSION_CAPACITY",
                        ) from None
                    evicted_at = time.monotonic()
                elif time.monotonic() - evicted_at > _CAPACITY_WAIT_S:
                    raise ResourceExhausted(
                        f"the executor still has no room for the predictor after one was ended: {exc}",
                        reason="SESSION_CAPACITY",
                    ) from None
                # The executor frees the ended predictor's place once its sandbox is cleaned up.
                await asyncio.sleep(0.05)

    async def _call(
        self, resident: _Resident, model: ModelFiles, rows: list[Any], *, warm: bool, payload: bytes | None
    ) -> Served:
        session = resident.session
        assert session is not None
        if payload is None:
            payload = fastjson.dumps({"rows": rows})
        try:
            raw = await session.call(payload, timeout_s=self.config.call_timeout_s)
        except TimeoutError:
            self._died.add(resident.artifact_id)
            await self._end(resident, "timeout", kill=True)
            raise ResourceExhausted(
                f"predict() took longer than {self.config.call_timeout_s:g} s (ZX_TRAINER_PREDICT_TIMEOUT_S); "
                "its predictor was ended and the next call starts a new one",
                reason="PREDICT_LIMIT",
            ) from None
        except SessionEnded as ended:
            self._died.add(resident.artifact_id)
            await self._end(resident, "crashed")
            raise self._ended_error(model, ended, during="during this call") from None
        answer = await asyncio.to_thread(_answer, raw) if len(raw) > 1024 * 1024 else _answer(raw)
        if "error" in answer:
            raise InvalidArgument(
                f"predict.py failed on these inputs: {_error_text(answer['error'])}", reason="PREDICT_FAILED"
            )
        predictions = answer.get("predictions")
        if not isinstance(predictions, list):
            raise FailedPrecondition(
                f"the predictor answered {raw[:200]!r} instead of predictions", reason="PREDICT_BAD_OUTPUT"
            )
        restarted = resident.restarted and not resident.restart_reported
        resident.restart_reported = resident.restart_reported or restarted
        if restarted:
            log.warning(
                "predictor restarted after its previous process died",
                artifact_id=resident.artifact_id,
                execution_id=session.execution_id,
            )
        return Served(predictions, warm, restarted, session.execution_id, resident.instance, len(raw))

    def _ended_error(self, model: ModelFiles, ended: SessionEnded, *, during: str) -> DomainError:
        result: ExecResult = ended.result
        if result.reason is ExitReason.SANDBOX_ERROR:
            return Unavailable(
                f"the predictor's sandbox failed {during}: {result.message}", reason="SANDBOX_ERROR"
            )
        error = build_error(
            result=result,
            record=None,
            stderr_tail=ended.stderr_tail,
            program_paths={f.path for f in model.files},
            phase="prediction",
            what="predict.py",
        )
        where = f" ({error.file_path}:{error.line})" if error.file_path else ""
        text = f"{error.exception_type + ': ' if error.exception_type else ''}{error.message}{where}"
        if result.reason in _LIMIT_REASONS:
            return ResourceExhausted(
                f"the model's predictor hit a limit {during} and was ended: {text}", reason="PREDICT_LIMIT"
            )
        how = f"exit status {result.exit_code}" if result.exit_code >= 0 else f"signal {result.signal}"
        return Aborted(
            f"the model's predictor died {during} ({how}): {text}; the next call starts a new one",
            reason="PREDICTOR_CRASHED",
        )

    # -- ending predictors -----------------------------------------------------------------------------

    def _forget(self, resident: _Resident) -> None:
        resident.closed = True
        if self._residents.get(resident.artifact_id) is resident:
            del self._residents[resident.artifact_id]

    async def _end(self, resident: _Resident, reason: str, *, count: bool = True, kill: bool = False) -> None:
        if resident.closed and resident.session is None:
            return
        self._forget(resident)
        if count:
            EVICTIONS.labels(reason).inc()
        session, resident.session = resident.session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close(kill=kill or session.ended is not None)
        log.info("predictor ended", artifact_id=resident.artifact_id, reason=reason)

    async def release(self, artifact_id: str) -> bool:
        """Ends the model's predictor (a call in flight gets the crash answer). True when one ran."""
        resident = self._residents.get(artifact_id)
        if resident is None:
            return False
        await self._end(resident, "released", kill=True)
        return True

    async def reap(self) -> int:
        """Ends the predictors idle for ``idle_s`` or more; returns how many."""
        now = self._clock()
        idle = [
            r
            for r in list(self._residents.values())
            if r.users == 0 and r.ready.is_set() and now - r.last_used >= self.config.idle_s
        ]
        for r in idle:
            await self._end(r, "idle")
        # A session the executor ended by itself (a limit, its own idle timeout) while no call ran.
        for r in list(self._residents.values()):
            if r.users == 0 and r.session is not None and r.session.ended is not None:
                if r.session.ended.reason not in (ExitReason.COMPLETED, ExitReason.TIMEOUT):
                    self._died.add(r.artifact_id)
                await self._end(r, "ended", count=False)
        return len(idle)

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_forever(), name="predictor-reaper")

    async def _reap_forever(self) -> None:
        interval = min(max(self.config.idle_s / 4, 0.2), 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception:
                log.exception("reaping predictors failed")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for r in list(self._residents.values()):
            await self._end(r, "shutdown", kill=True)


def _answer(raw: bytes) -> dict[str, Any]:
    # The line comes from the sandbox (the program could write to the runner's descriptor): untrusted.
    try:
        answer = fastjson.loads(raw)
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        raise FailedPrecondition(
            f"the predictor wrote a line that is not a JSON object: {raw[:200]!r}",
            reason="PREDICT_BAD_OUTPUT",
        )
    return answer


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)[:4000]
    kind, message, where = (str(error.get(k, "")) for k in ("type", "message", "where"))
    return f"{kind + ': ' if kind else ''}{message}{f' ({where})' if where else ''}"
