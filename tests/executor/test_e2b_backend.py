"""The E2B backend, against recorded request/response shapes (E2B itself is unreachable here).

The control plane is the real SDK (``e2b-code-interpreter``'s ``AsyncSandbox.create`` and ``kill``) talking
HTTP to a local server that answers as E2B's API does (``POST /v2/sandboxes`` → 201 with the sandbox's
ids, ``DELETE /sandboxes/{id}`` → 204, 401 and 429 error bodies): so the tests see the very bytes the
executor would send (template, explicit lifetime, internet off, metadata, API key header) and that the
sandbox is deleted in every outcome. The sandbox's data plane (envd: commands and files) is replaced
on the SDK's object by fakes whose methods are checked against the real SDK signatures on every call
and which answer with the SDK's own result types (``CommandExitException``, ``EntryInfo``, ``FileType``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from e2b import CommandExitException, EntryInfo, FileType
from e2b.sandbox_async.commands.command import Commands
from e2b.sandbox_async.commands.command_handle import AsyncCommandHandle
from e2b.sandbox_async.filesystem.filesystem import Filesystem
from e2b_code_interpreter import AsyncSandbox
from support.http_stand_in import QuietHandler, serve_http
from zehanx_executor.app import SandboxUnavailableError, build_executor
from zehanx_executor.domain import (
    Event,
    ExitReason,
    FileChunk,
    Finished,
    JobFile,
    JobSpec,
    Limits,
    Metric,
    Output,
    Started,
    Stream,
)
from zehanx_executor.sandbox.e2b import E2BConfig, E2BSandbox
from zehanx_executor.settings import ExecutorSettings
from zehanx_runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable

API_KEY = "e2b_" + "5" * 40
WORKDIR = "/home/user/job"
SANDBOX_ID = "i5r1x9z7k2m4q8w3e6t0"


# -- the control plane: a local server with E2B's API shapes ----------------------------------------


@dataclass
class Api:
    port: int
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    create_status: int = 201

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, method: str) -> list[tuple[str, dict[str, str], Any]]:
        return [(p, h, json.loads(b) if b else None) for m, p, h, b in self.seen if m == method]


# Recorded from E2B's API (openapi: POST /v2/sandboxes 201 "Sandbox"; errors {"code", "message"}).
CREATED = {
    "templateID": "nlhz8vlwyupq845jsdg9",
    "sandboxID": SANDBOX_ID,
    "alias": "code-interpreter-v1",
    "clientID": "6532622b",
    "envdVersion": "0.2.4",
    "envdAccessToken": "tok_3c1d0e",
    "domain": None,
}
ERRORS = {
    401: {"code": 401, "message": "Invalid API key, it must start with 'e2b_' prefix"},
    # openapi: POST /v2/sandboxes 404 is an Error {code, message} (SDK api/client/api/sandboxes/
    # post_v2_sandboxes.py:55); handle_api_exception makes it a SandboxException "404: <message>"
    # (SDK api/__init__.py:217). The message text is illustrative.
    404: {"code": 404, "message": "template 'zehanx-torch-cpu' not found"},
    429: {"code": 429, "message": "You have reached the maximum number of concurrent E2B sandboxes (20)"},
}


@pytest.fixture
def api() -> Iterator[Api]:
    state = Api(port=0)

    class Handler(QuietHandler):
        def _record(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            state.seen.append((self.command, self.path, dict(self.headers), self.rfile.read(n) if n else b""))

        def do_POST(self) -> None:
            self._record()
            status = state.create_status
            self.reply_json(status, CREATED if status == 201 else ERRORS[status])

        def do_DELETE(self) -> None:
            self._record()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

    with serve_http(Handler) as port:
        state.port = port
        yield state


# -- the data plane: fakes of envd checked against the SDK's signatures ------------------------------


def _checked(real: Any, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
    """Bind a call against the real SDK method: a keyword the SDK does not take fails the test."""
    return inspect.signature(real).bind(None, *args, **kwargs)


@dataclass
class Program:
    """What the fake sandbox's command does: (stream, text, delay before it) steps, then an exit code."""

    steps: list[tuple[str, str, float]]
    exit_code: int = 0
    writes: dict[str, bytes] = field(default_factory=dict)


class FakeHandle:
    def __init__(self, program: Program, on_stdout: Any, on_stderr: Any, files: FakeFiles) -> None:
        self.killed = False
        self._task = asyncio.ensure_future(self._play(program, on_stdout, on_stderr, files))
        self.stdout, self.stderr = "", ""
        self.program = program

    async def _play(self, program: Program, on_stdout: Any, on_stderr: Any, files: FakeFiles) -> None:
        for stream, text, delay in program.steps:
            await asyncio.sleep(delay)
            (on_stdout if stream == "stdout" else on_stderr)(text)
            if stream == "stdout":
                self.stdout += text
            else:
                self.stderr += text
        files.store.update({f"{WORKDIR}/{k}": v for k, v in program.writes.items()})

    async def wait(self) -> Any:
        _checked(AsyncCommandHandle.wait)
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        code = -1 if self.killed else self.program.exit_code
        if code != 0:  # the SDK raises for a non-zero exit, with the result's fields
            raise CommandExitException(
                stderr=self.stderr, stdout=self.stdout, exit_code=code, error="exit status"
            )
        from e2b import CommandResult

        return CommandResult(stderr=self.stderr, stdout=self.stdout, exit_code=0, error=None)

    async def kill(self) -> bool:
        _checked(AsyncCommandHandle.kill)
        self.killed = True
        self._task.cancel()
        return True


class FakeCommands:
    def __init__(self, program: Program, files: FakeFiles) -> None:
        self.program, self.files = program, files
        self.calls: list[dict[str, Any]] = []
        self.handle: FakeHandle | None = None

    async def run(self, *args: Any, **kwargs: Any) -> FakeHandle:
        bound = _checked(Commands.run, *args, **kwargs)
        self.calls.append(dict(bound.arguments))
        assert kwargs.get("background") is True, "the executor streams: it must start in the background"
        self.handle = FakeHandle(self.program, kwargs["on_stdout"], kwargs["on_stderr"], self.files)
        return self.handle


class FakeFiles:
    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.symlinks: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def write_files(self, *args: Any, **kwargs: Any) -> list:
        bound = _checked(Filesystem.write_files, *args, **kwargs)
        self.calls.append(("write_files", dict(bound.arguments)))
        for entry in bound.arguments["files"]:
            self.store[entry["path"]] = entry["data"]
        return []

    async def list(self, *args: Any, **kwargs: Any) -> list[EntryInfo]:
        bound = _checked(Filesystem.list, *args, **kwargs)
        self.calls.append(("list", dict(bound.arguments)))
        now = datetime(2026, 1, 1)

        def entry(path: str, kind: FileType, size: int, target: str | None = None) -> EntryInfo:
            return EntryInfo(
                name=path.rsplit("/", 1)[1], type=kind, path=path, size=size, mode=0o644,
                permissions="rw-r--r--", owner="user", group="user", modified_time=now, symlink_target=target,
            )  # fmt: skip

        out = [entry(p, FileType.FILE, len(d)) for p, d in self.store.items()]
        out += [entry(p, FileType.FILE, 0, t) for p, t in self.symlinks.items()]
        out.append(entry(f"{WORKDIR}/out", FileType.DIR, 0))
        return out

    async def read(self, *args: Any, **kwargs: Any) -> bytearray:
        bound = _checked(Filesystem.read, *args, **kwargs)
        self.calls.append(("read", dict(bound.arguments)))
        assert bound.arguments.get("format") == "bytes"
        return bytearray(self.store[bound.arguments["path"]])


@dataclass
class Harness:
    api: Api
    commands: FakeCommands
    files: FakeFiles
    backend: E2BSandbox


def harness(api: Api, program: Program, **config: Any) -> Harness:
    files = FakeFiles()
    commands = FakeCommands(program, files)

    async def factory(**kwargs: Any) -> Any:
        sandbox = await AsyncSandbox.create(**kwargs)  # the real SDK, over HTTP to the recorded API
        sandbox._commands, sandbox._filesystem = commands, files  # envd: the fakes above
        return sandbox

    cfg = E2BConfig(
        api_key=API_KEY, api_url=api.url, request_timeout_s=5.0, lifetime_margin_s=120.0, **config
    )
    return Harness(api, commands, files, E2BSandbox(cfg, factory))


def job(
    *, wall: float = 600.0, output_bytes: int = 1 << 20, collect: tuple[str, ...] = ("out/**",)
) -> JobSpec:
    return JobSpec(
        execution_id="e2b-test",
        job_id="9b2f8a9e-4c1e-4a53-9d7e-2a9a5f3c1d00",
        command=("python", "train.py", "--epochs", "2"),
        files=(JobFile("train.py", b"print('hi')"), JobFile("data/train.csv", b"a,b\n1,2\n")),
        env={"ZX_SMOKE": "1"},
        limits=Limits(wall_time_s=wall, output_bytes=output_bytes),
        collect=collect,
    )


async def run_all(backend: E2BSandbox, spec: JobSpec) -> list[Event]:
    backend.check(spec)
    events = backend.start(spec, 0).events()
    try:
        return [e async for e in events]
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# -- the tests ------------------------------------------------------------------------------------


async def test_a_run_creates_uploads_streams_collects_and_always_kills_the_sandbox(api: Api) -> None:
    model = bytes(range(256)) * 10
    program = Program(
        [
            ("stdout", "epoch 1\nep", 0.0),
            ("stdout", 'och 2\n@@zx:{"kind": "metric", "loss": 0.5}\n', 0.01),
            ("stderr", "warning\n", 0.0),
        ],
        writes={"out/model.safetensors": model},
    )
    h = harness(api, program)
    h.files.symlinks[f"{WORKDIR}/out/leak"] = "/etc/shadow"
    events = await run_all(h.backend, job())

    # Control plane: what went over the wire.
    [(path, headers, body)] = api.requests("POST")
    assert path == "/v2/sandboxes" and headers["x-api-key"] == API_KEY
    assert body["templateID"] == "code-interpreter-v1"
    assert body["timeout"] == 600 + 120  # the SDK's default 300 s would kill a training run
    assert body["allow_internet_access"] is False
    assert body["metadata"] == {"execution_id": "e2b-test", "job_id": "9b2f8a9e-4c1e-4a53-9d7e-2a9a5f3c1d00"}
    assert [p for p, _, _ in api.requests("DELETE")] == [f"/sandboxes/{SANDBOX_ID}"]

    # Data plane: files up, the command with explicit timeouts, files down.
    [(_, upload)] = [c for c in h.files.calls if c[0] == "write_files"]
    assert {e["path"]: e["data"] for e in upload["files"]} == {
        f"{WORKDIR}/train.py": b"print('hi')",
        f"{WORKDIR}/data/train.csv": b"a,b\n1,2\n",
    }
    assert upload["request_timeout"] == 5.0
    [run] = h.commands.calls
    assert run["cmd"] == "python train.py --epochs 2" and run["cwd"] == WORKDIR
    assert run["timeout"] == 605  # not the SDK's 60 s default; our own deadline is the wall limit
    assert run["request_timeout"] == 5.0
    assert run["envs"]["ZX_SMOKE"] == "1" and run["envs"]["HOME"] == WORKDIR

    # Events: Started, line-buffered output, the metric, the produced file (not the symlink), result.
    assert isinstance(events[0], Started) and events[0].backend == "e2b"
    assert "no internet" in events[0].description
    out = [e for e in events if isinstance(e, Output)]
    assert [(e.stream, e.data) for e in out] == [
        (Stream.STDOUT, b"epoch 1\n"),
        (Stream.STDOUT, b"epoch 2\n"),
        (Stream.STDERR, b"warning\n"),
    ]
    [metric] = [e for e in events if isinstance(e, Metric)]
    assert metric.payload == {"kind": "metric", "loss": 0.5}
    files = [e for e in events if isinstance(e, FileChunk)]
    assert [(f.path, f.size, f.sha256, f.data) for f in files] == [
        ("out/model.safetensors", len(model), hashlib.sha256(model).hexdigest(), model)
    ]
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason is ExitReason.COMPLETED and fin.exit_code == 0
    assert fin.usage.metric_lines == 1


async def test_a_non_zero_exit_is_failed_with_its_status(api: Api) -> None:
    h = harness(api, Program([("stderr", "Traceback ...\n", 0.0)], exit_code=3))
    fin = (await run_all(h.backend, job()))[-1]
    assert isinstance(fin, Finished) and (fin.reason, fin.exit_code) == (ExitReason.FAILED, 3)
    assert len(api.requests("DELETE")) == 1


async def test_the_wall_clock_limit_kills_the_command_and_the_sandbox(api: Api) -> None:
    h = harness(api, Program([("stdout", "start\n", 0.0), ("stdout", "never\n", 30.0)]))
    events = await run_all(h.backend, job(wall=0.5))
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason is ExitReason.TIMEOUT and "wall-clock" in fin.message
    assert h.commands.handle is not None and h.commands.handle.killed
    assert b"never" not in b"".join(e.data for e in events if isinstance(e, Output))
    assert len(api.requests("DELETE")) == 1


async def test_an_output_flood_stops_at_the_cap(api: Api) -> None:
    h = harness(api, Program([("stdout", "A" * 4096 + "\n", 0.0)] * 100))
    events = await run_all(h.backend, job(output_bytes=10_000))
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason is ExitReason.OUTPUT_LIMIT
    assert sum(len(e.data) for e in events if isinstance(e, Output)) <= 10_000
    assert h.commands.handle is not None and h.commands.handle.killed
    assert len(api.requests("DELETE")) == 1


async def test_the_caller_going_away_kills_the_command_and_the_sandbox(api: Api) -> None:
    h = harness(api, Program([("stdout", "ready\n", 0.0), ("stdout", "later\n", 30.0)]))
    events = h.backend.start(job(), 0).events()
    async for event in events:
        if isinstance(event, Output):
            break
    await events.aclose()  # type: ignore[attr-defined]
    assert h.commands.handle is not None and h.commands.handle.killed
    assert len(api.requests("DELETE")) == 1


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [(401, FailedPrecondition, "E2B_AUTHENTICATION_FAILED"), (429, ResourceExhausted, "E2B_RATE_LIMITED")],
)
async def test_api_refusals_become_typed_errors(api: Api, status: int, error: type, reason: str) -> None:
    api.create_status = status
    h = harness(api, Program([]))
    with pytest.raises(error) as caught:
        await run_all(h.backend, job())
    assert caught.value.reason == reason
    assert api.requests("DELETE") == []  # nothing was created


async def test_an_unreachable_api_is_unavailable() -> None:
    unused = Api(port=9)  # discard: nothing listens
    h = harness(unused, Program([]))
    with pytest.raises(Unavailable):
        await run_all(h.backend, job())


async def test_a_failed_upload_still_kills_the_sandbox(api: Api) -> None:
    h = harness(api, Program([]))

    async def broken(*args: Any, **kwargs: Any) -> list:
        raise OSError("connection reset by peer")

    h.files.write_files = broken  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await run_all(h.backend, job())
    assert [p for p, _, _ in api.requests("DELETE")] == [f"/sandboxes/{SANDBOX_ID}"]


async def test_a_gpu_request_is_refused_before_anything_is_created(api: Api) -> None:
    h = harness(api, Program([]))
    spec = job()
    from dataclasses import replace

    with pytest.raises(FailedPrecondition):
        h.backend.check(replace(spec, limits=replace(spec.limits, gpu=True)))
    assert api.seen == []


def test_an_e2b_key_selects_the_e2b_backend_and_stays_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("E2B_API_KEY", "ZX_EXECUTOR_E2B_API_KEY", "ZX_EXECUTOR_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    assert ExecutorSettings().use_e2b is False
    monkeypatch.setenv("E2B_API_KEY", API_KEY)
    settings = ExecutorSettings()
    assert settings.use_e2b is True
    assert API_KEY not in repr(settings)
    assert ExecutorSettings(backend="local").use_e2b is False


async def test_a_job_owners_own_key_creates_the_sandbox_and_never_enters_it(api: Api) -> None:
    """The trainer forwards a job owner's E2B key (x-zx-e2b-api-key): it creates the sandbox in place of
    the configured key, and appears nowhere the program can see (environment, files, command)."""
    user_key = "e2b_user_" + "7" * 32
    h = harness(api, Program([("stdout", "ok\n", 0.0)]))
    spec = dataclasses.replace(job(), sandbox_api_key=user_key)
    assert user_key not in repr(spec)
    events = await run_all(h.backend, spec)
    assert isinstance(events[-1], Finished) and events[-1].reason is ExitReason.COMPLETED
    [(_, headers, body)] = api.requests("POST")
    assert headers["x-api-key"] == user_key
    assert user_key not in json.dumps(body)
    [run] = h.commands.calls
    assert user_key not in json.dumps(run["envs"]) and user_key not in run["cmd"]
    [(_, upload)] = [c for c in h.files.calls if c[0] == "write_files"]
    assert all(user_key.encode() not in entry["data"] for entry in upload["files"])


# -- the template: checked at start, and a missing module is the environment's fault -----------------

# What CPython prints when a program imports a module its environment lacks (the default template
# code-interpreter-v1 has no torch: e2b-dev/code-interpreter template/requirements.txt).
NO_TORCH = (
    "Traceback (most recent call last):\n"
    '  File "<string>", line 1, in <module>\n'
    "ModuleNotFoundError: No module named 'torch'\n"
)


def e2b_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ExecutorSettings:
    for name in ("ZX_EXECUTOR_E2B_TEMPLATE", "ZX_EXECUTOR_E2B_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("E2B_API_KEY", API_KEY)
    monkeypatch.setenv("ZX_EXECUTOR_BACKEND", "e2b")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ExecutorSettings()


def app_factory(api: Api, program: Program) -> tuple[Any, FakeCommands]:
    """The factory build_executor gets: the real SDK pointed at the stand-in, envd faked."""
    files = FakeFiles()
    commands = FakeCommands(program, files)

    async def factory(**kwargs: Any) -> Any:
        sandbox = await AsyncSandbox.create(**kwargs, api_url=api.url)
        sandbox._commands, sandbox._filesystem = commands, files
        return sandbox

    return factory, commands


async def test_the_start_up_check_refuses_a_template_without_torch(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = e2b_settings(monkeypatch, ZX_EXECUTOR_E2B_TEMPLATE="code-interpreter-v1")
    factory, commands = app_factory(api, Program([("stderr", NO_TORCH, 0.0)], exit_code=1))
    with pytest.raises(SandboxUnavailableError) as caught:
        await build_executor(settings, e2b_factory=factory)
    text = str(caught.value)
    assert "ZX_EXECUTOR_E2B_TEMPLATE" in text and "zx e2b build-template" in text
    assert "code-interpreter-v1" in text and "'torch'" in text
    [(_, _, body)] = api.requests("POST")
    assert body["templateID"] == "code-interpreter-v1"
    [run] = commands.calls
    assert run["cmd"].startswith("python -c 'import torch, safetensors;")
    assert len(api.requests("DELETE")) == 1  # the check's sandbox is killed too


async def test_the_start_up_check_passes_a_template_with_torch(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = e2b_settings(monkeypatch)  # the default: the template `zx e2b build-template` builds
    factory, commands = app_factory(api, Program([("stdout", "torch 2.13.0+cpu\n", 0.0)]))
    executor = await build_executor(settings, e2b_factory=factory)
    assert isinstance(executor.backend, E2BSandbox)
    [(_, _, body)] = api.requests("POST")
    assert body["templateID"] == "zehanx-torch-cpu"
    assert len(commands.calls) == 1 and len(api.requests("DELETE")) == 1


async def test_a_template_e2b_does_not_know_refuses_the_backend(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.create_status = 404
    settings = e2b_settings(monkeypatch, ZX_EXECUTOR_E2B_TEMPLATE="zehanx-torch-cpu")
    factory, commands = app_factory(api, Program([]))
    with pytest.raises(SandboxUnavailableError) as caught:
        await build_executor(settings, e2b_factory=factory)
    assert "ZX_EXECUTOR_E2B_TEMPLATE" in str(caught.value) and "zx e2b build-template" in str(caught.value)
    assert commands.calls == []


async def test_a_run_missing_a_module_is_an_environment_error_naming_the_fix(api: Api) -> None:
    h = harness(api, Program([("stderr", NO_TORCH, 0.0)], exit_code=1), template="code-interpreter-v1")
    fin = (await run_all(h.backend, job()))[-1]
    assert isinstance(fin, Finished) and (fin.reason, fin.exit_code) == (ExitReason.FAILED, 1)
    assert "environment error" in fin.message and "'torch'" in fin.message
    assert "zx e2b build-template" in fin.message and "ZX_EXECUTOR_E2B_TEMPLATE" in fin.message


async def test_a_program_failing_otherwise_is_not_called_an_environment_error(api: Api) -> None:
    h = harness(api, Program([("stderr", "ValueError: could not convert 'x' to float\n", 0.0)], exit_code=1))
    fin = (await run_all(h.backend, job()))[-1]
    assert isinstance(fin, Finished) and "environment" not in fin.message
