"""The E2B backend: the same run in an E2B sandbox (a Firecracker microVM), through
``e2b-code-interpreter``'s ``AsyncSandbox``.

Per run: create a sandbox whose lifetime covers the wall-clock limit (the SDK's default of 300 s would
kill a training run) with internet access off unless configured; upload the files; run the command in
the background with an explicit command timeout (the SDK's default of 60 s would kill it too) and
stream its output through the same line/metric parser as the local backend; download the files that
match ``collect``; kill the sandbox in ``finally``, always.

What E2B does not offer is reported, not faked: memory, CPU and process limits come from the E2B
template (the description in ``Started`` says so); wall-clock, output and collect limits are enforced
here. A GPU request is refused (E2B has no GPU option).

The template must hold what the programs import (``e2b_template.py``; E2B's default
``code-interpreter-v1`` has no torch): :func:`check_template` runs ``import torch, safetensors`` in one
sandbox at start and the executor refuses the E2B backend when it fails. A run that fails on a missing
module says so in its result's message: the sandbox's environment lacks it, the program is not at fault.

The SDK is reached through :class:`E2BFactory`, so tests drive this adapter with recorded
request/response shapes instead of the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import posixpath
import re
import shlex
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from zehanx_executor.domain import (
    Event,
    ExitReason,
    FileChunk,
    Finished,
    JobSpec,
    Limits,
    Output,
    ResourceUsage,
    Started,
    Stream,
)
from zehanx_executor.sandbox.e2b_template import BUILD_COMMAND, PROBE_IMPORTS, TEMPLATE_SETTING
from zehanx_executor.sandbox.globs import compile_globs
from zehanx_executor.sandbox.metrics import MetricGate
from zehanx_executor.sandbox.output import OutputBudget, OutputParser
from zehanx_runtime.errors import (
    DomainError,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)
from zehanx_runtime.logging import get_logger

log = get_logger("zehanx.executor.e2b")

FILE_CHUNK_BYTES = 1024 * 1024
QUEUE_EVENTS = 256
#: The end of stderr a run keeps, to name a module its program could not import.
STDERR_TAIL_BYTES = 8 * 1024
DEFAULT_TEMPLATE = "code-interpreter-v1"  # the SDK's own default (e2b_code_interpreter/constants.py:1)
_NO_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([^']+)'")


def missing_module(output: str) -> str | None:
    """The module a Python program could not import, from its output (the last one named), or None."""
    found = _NO_MODULE.findall(output)
    return found[-1] if found else None


def template_advice(template: str) -> str:
    return (
        f"build the template with `{BUILD_COMMAND}` and set {TEMPLATE_SETTING} to the name it prints "
        f"(now {template!r})"
    )


class E2BFactory(Protocol):
    """Creates a sandbox; returns an object shaped like ``e2b.AsyncSandbox`` (``sandbox_id``, ``files``,
    ``commands``, ``kill``)."""

    async def __call__(self, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class E2BConfig:
    api_key: str
    template: str | None = None
    domain: str | None = None
    api_url: str | None = None
    """Override of the API URL (the SDK's deprecated ``api_url``); tests point it at a local server."""
    request_timeout_s: float = 60.0
    """Per HTTP request (create, upload, download); not the command's run time."""
    lifetime_margin_s: float = 120.0
    """Sandbox lifetime = wall-clock limit + this margin (setup, upload, download)."""
    workdir: str = "/home/user/job"
    allow_internet: bool = False


def sdk_factory() -> E2BFactory:
    """The real SDK (imported lazily: only an executor configured for E2B needs it)."""
    from e2b_code_interpreter import AsyncSandbox

    async def create(**kwargs: Any) -> Any:
        return await AsyncSandbox.create(**kwargs)

    return create


def _map_sdk_error(exc: BaseException) -> DomainError | None:
    """E2B SDK exceptions → domain errors (AuthenticationException is not a SandboxException)."""
    try:
        from e2b import exceptions as ex
    except ImportError:  # pragma: no cover - the SDK is pinned in requirements.txt
        return None
    if isinstance(exc, ex.AuthenticationException):
        return FailedPrecondition(
            f"E2B rejected the executor's API key: {exc}", reason="E2B_AUTHENTICATION_FAILED"
        )
    if isinstance(exc, ex.RateLimitException):
        return ResourceExhausted(f"E2B rate limit: {exc}", reason="E2B_RATE_LIMITED")
    if isinstance(exc, ex.TimeoutException):
        return Unavailable(f"E2B did not answer in time: {exc}", reason="E2B_TIMEOUT")
    if isinstance(exc, ex.SandboxException):
        return Unavailable(f"E2B sandbox error: {exc}", reason="E2B_UNAVAILABLE")
    if isinstance(exc, httpx.TimeoutException):
        return Unavailable(f"E2B did not answer in time: {exc}", reason="E2B_TIMEOUT")
    # The SDK lets its HTTP client's transport errors through (connection refused, reset, DNS).
    if isinstance(exc, (OSError, ConnectionError, httpx.TransportError)):
        return Unavailable(f"E2B is unreachable: {exc}", reason="E2B_UNREACHABLE")
    return None


class E2BSandbox:
    """The E2B backend (chosen when an E2B API key is configured)."""

    name = "e2b"

    def __init__(self, config: E2BConfig, factory: E2BFactory | None = None) -> None:
        self.config = config
        self.factory = factory or sdk_factory()

    def check(self, spec: JobSpec) -> None:
        if spec.limits.gpu:
            raise FailedPrecondition("the E2B backend has no GPUs", reason="GPU_UNAVAILABLE")

    def start(self, spec: JobSpec, slot: int) -> _E2BRun:
        return _E2BRun(self, spec)

    async def close(self) -> None:
        return None

    @property
    def template(self) -> str:
        return self.config.template or DEFAULT_TEMPLATE

    def description(self) -> str:
        net = "internet allowed" if self.config.allow_internet else "no internet"
        return (
            f"E2B microVM (template {self.template}; {net}); wall-clock, "
            "output and collect limits enforced by the executor; memory, CPU and processes as the template sets"
        )


class _E2BRun:
    def __init__(self, box: E2BSandbox, spec: JobSpec) -> None:
        self.box, self.spec = box, spec
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_EVENTS)
        self.gate = MetricGate()
        self.budget = OutputBudget(spec.limits.output_bytes)
        self.parsers = {s: OutputParser(s, self.gate, self.budget) for s in Stream}
        self.reason: ExitReason | None = None
        self.message = ""
        self.handle: Any = None
        self.sandbox: Any = None
        self.finished = False
        self.stderr_tail = bytearray()
        self._kill_task: asyncio.Task[Any] | None = None
        self._done = asyncio.Event()

    def abort(self) -> None:
        if not self.finished:
            self._stop(ExitReason.CANCELLED, "the caller cancelled the execution")

    def _stop(self, reason: ExitReason, message: str) -> None:
        if self.reason is None:
            self.reason, self.message = reason, message
        self._done.set()
        if self.handle is not None and self._kill_task is None:
            self._kill_task = asyncio.ensure_future(self._kill_command())

    async def _kill_command(self) -> None:
        with contextlib.suppress(Exception):
            await self.handle.kill()

    def _on(self, stream: Stream) -> Callable[[str], None]:
        def callback(chunk: str) -> None:
            # The SDK hands arbitrary UTF-8 fragments, not lines; the parser line-buffers them.
            data = chunk.encode()
            if stream is Stream.STDERR:
                self.stderr_tail += data
                del self.stderr_tail[:-STDERR_TAIL_BYTES]
            for event in self.parsers[stream].feed(data):
                try:
                    self.queue.put_nowait(event)
                except asyncio.QueueFull:
                    self.budget.capped = True  # the caller is not reading: treat as a flood
            if self.budget.capped:
                self._stop(
                    ExitReason.OUTPUT_LIMIT, f"output limit of {self.spec.limits.output_bytes} bytes reached"
                )

        return callback

    async def events(self) -> AsyncIterator[Event]:
        cfg, spec, limits = self.box.config, self.spec, self.spec.limits
        wall = limits.wall_time_s
        try:
            try:
                self.sandbox = await self.box.factory(
                    template=cfg.template,
                    timeout=math.ceil(wall + cfg.lifetime_margin_s),
                    metadata={"execution_id": spec.execution_id, "job_id": spec.job_id},
                    allow_internet_access=cfg.allow_internet,
                    api_key=spec.sandbox_api_key or cfg.api_key,  # the job owner's own key first
                    domain=cfg.domain,
                    request_timeout=cfg.request_timeout_s,
                    **({"api_url": cfg.api_url} if cfg.api_url else {}),
                )
                entries = [{"path": posixpath.join(cfg.workdir, f.path), "data": f.data} for f in spec.files]
                if entries:
                    await self.sandbox.files.write_files(entries, request_timeout=cfg.request_timeout_s)
            except Exception as exc:
                mapped = _map_sdk_error(exc)
                if mapped is not None:
                    raise mapped from exc
                raise
            yield Started(spec.execution_id, self.box.name, self.box.description(), limits)
            started = time.monotonic()
            if self.reason is None:
                async for event in self._run_command(wall):
                    yield event
            wall_used = time.monotonic() - started
            async for event in self._collect():
                yield event
            finished = self._finish(wall_used)
            self.finished = True
            yield finished
        finally:
            if not self.finished and self.reason is None:
                self.reason = ExitReason.CANCELLED
            if self.handle is not None and not self.finished:
                await self._kill_command()
            if self.sandbox is not None:
                try:
                    await asyncio.wait_for(self.sandbox.kill(), cfg.request_timeout_s)
                except Exception as exc:  # the sandbox's lifetime ends it anyway
                    log.warning("could not kill the E2B sandbox", error=str(exc))

    async def _run_command(self, wall: float) -> AsyncIterator[Event]:
        cfg, spec = self.box.config, self.spec
        self.exit_code, self.error = -1, ""
        self.handle = await self.sandbox.commands.run(
            shlex.join(spec.command),
            background=True,
            envs={"HOME": cfg.workdir, "PYTHONUNBUFFERED": "1", "ZX_JOB_DIR": cfg.workdir, **dict(spec.env)},
            cwd=cfg.workdir,
            on_stdout=self._on(Stream.STDOUT),
            on_stderr=self._on(Stream.STDERR),
            timeout=math.ceil(wall) + 5,  # server-side backstop; our own deadline is below
            request_timeout=cfg.request_timeout_s,
        )
        waiter = asyncio.ensure_future(self._wait_command())
        deadline = asyncio.get_running_loop().time() + wall
        try:
            while True:
                get = asyncio.ensure_future(self.queue.get())
                stop = asyncio.ensure_future(self._done.wait())
                remaining = deadline - asyncio.get_running_loop().time()
                done, _ = await asyncio.wait(
                    {get, waiter, stop}, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED
                )
                stop.cancel()
                if get in done:
                    item = get.result()
                    if item is not None:
                        yield item
                    continue
                get.cancel()
                if waiter in done:
                    break
                if not done:  # the wall-clock deadline
                    self._stop(ExitReason.TIMEOUT, f"wall-clock limit of {wall:g} s reached")
                if self._done.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(waiter), 5.0)
                    break
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None:
                    yield item
            for stream in Stream:
                for event in self.parsers[stream].finish():
                    yield event
        finally:
            waiter.cancel()

    async def _wait_command(self) -> None:
        try:
            result = await self.handle.wait()
            self.exit_code = int(getattr(result, "exit_code", 0))
            self.error = getattr(result, "error", "") or ""
        except Exception as exc:
            code = getattr(exc, "exit_code", None)
            if code is not None:  # CommandExitException: a non-zero exit is a result, not an error
                self.exit_code = int(code)
                self.error = getattr(exc, "error", "") or ""
            else:
                mapped = _map_sdk_error(exc)
                if self.reason is None:
                    self.reason = ExitReason.SANDBOX_ERROR
                    self.message = str(mapped.message if mapped else exc)[:500]

    async def _collect(self) -> AsyncIterator[FileChunk]:
        cfg, spec = self.box.config, self.spec
        pattern = compile_globs(spec.collect)
        if pattern is None or self.reason in (ExitReason.CANCELLED, ExitReason.SANDBOX_ERROR):
            return
        inputs = {f.path: hashlib.sha256(f.data).hexdigest() for f in spec.files}
        try:
            entries = await self.sandbox.files.list(
                cfg.workdir, depth=32, request_timeout=cfg.request_timeout_s
            )
        except Exception as exc:
            log.warning("could not list the E2B job folder", error=str(exc))
            return
        budget = spec.collect_max_bytes
        prefix = cfg.workdir.rstrip("/") + "/"
        for entry in sorted(entries, key=lambda e: e.path):
            kind = getattr(entry.type, "value", entry.type)
            if kind != "file" or getattr(entry, "symlink_target", None) or not entry.path.startswith(prefix):
                continue
            rel = entry.path[len(prefix) :]
            if not pattern.match(rel):
                continue
            try:
                data = bytes(
                    await self.sandbox.files.read(
                        entry.path, format="bytes", request_timeout=cfg.request_timeout_s
                    )
                )
            except Exception as exc:
                log.warning("could not download a produced file", path=rel, error=str(exc))
                continue
            sha = hashlib.sha256(data).hexdigest()
            if inputs.get(rel) == sha:
                continue
            if len(data) > budget:
                yield FileChunk(rel, len(data), sha, content_included=False)
                continue
            budget -= len(data)
            if not data:
                yield FileChunk(rel, 0, sha, True, 0, b"", True)
            for off in range(0, len(data), FILE_CHUNK_BYTES):
                piece = data[off : off + FILE_CHUNK_BYTES]
                yield FileChunk(rel, len(data), sha, True, off, piece, off + len(piece) >= len(data))

    def _finish(self, wall: float) -> Finished:
        code = getattr(self, "exit_code", -1)
        reason, message = self.reason, self.message
        sig = 0
        if reason is None:
            if code == 0:
                reason = ExitReason.COMPLETED
            else:
                reason = ExitReason.FAILED
                if code > 128:
                    sig = code - 128
                message = f"exited with status {code}" + (f" ({self.error})" if self.error else "")
                module = missing_module(self.stderr_tail.decode("utf-8", "replace"))
                if module is not None:
                    message += (
                        f"; environment error: the E2B template {self.box.template!r} has no Python module "
                        f"{module!r} (not a fault of the program or its data): "
                        + template_advice(self.box.template)
                    )
        if reason in (ExitReason.TIMEOUT, ExitReason.OUTPUT_LIMIT, ExitReason.CANCELLED):
            code, sig = -1, 9
        usage = ResourceUsage(
            wall_time_s=wall,
            output_bytes=self.budget.used,
            metric_lines=self.gate.accepted,
            metric_lines_dropped=self.gate.dropped,
        )
        return Finished(reason, code if sig == 0 else -1, sig, usage, message)


class TemplateUnusable(Exception):
    """The configured E2B template cannot run Zehanx's programs; the message says why and what to do."""


async def check_template(box: E2BSandbox, *, wall_s: float = 120.0) -> str:
    """Run ``python -c "import torch, safetensors"`` once in a sandbox of the configured template; return
    what it printed (the torch version), or raise :class:`TemplateUnusable` naming the setting and the
    command that builds a usable template."""
    template = box.template
    spec = JobSpec(
        execution_id=f"e2b-template-check-{uuid.uuid4().hex[:8]}",
        command=("python", "-c", f"{PROBE_IMPORTS}; print('torch', torch.__version__)"),
        limits=Limits(wall_time_s=wall_s, output_bytes=64 * 1024),
    )
    out, finished = b"", None
    events = box.start(spec, 0).events()
    try:
        async for event in events:
            if isinstance(event, Output):
                out += event.data
            elif isinstance(event, Finished):
                finished = event
    except DomainError as exc:
        raise TemplateUnusable(
            f"the E2B backend is refused: a sandbox of template {template!r} could not be started to "
            f"check it ({exc.message}); check the E2B API key, or {template_advice(template)}"
        ) from exc
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    text = out.decode("utf-8", "replace")
    if finished is not None and finished.reason is ExitReason.COMPLETED:
        return text.strip()
    module = missing_module(text)
    why = (
        f"it has no Python module {module!r}"
        if module
        else f"`{PROBE_IMPORTS}` did not succeed there ({finished.message if finished else 'no result'}): "
        f"{text[-400:].strip()}"
    )
    raise TemplateUnusable(
        f"the E2B backend is refused: template {template!r} cannot run Zehanx's programs, {why}; "
        + template_advice(template)
    )
