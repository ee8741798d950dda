"""``zx sandbox run FILE``: run a Python file in the executor's sandbox and stream what it prints.

It talks to the running executor service (``ZX_EXECUTOR_ADDRESS``, default 127.0.0.1:47104) with the
service token (``ZX_SERVICE_TOKEN``, or the file ``$ZX_HOME/service-token`` that ``zx up`` writes).
The program's stdout and stderr come through as they are written; metric lines (``@@zx:{...}``) are
shown on stderr. The exit status is the program's own; when the sandbox stopped it (time, memory,
output or disk limit, cancellation) the reason is printed on stderr and the status is non-zero
(128 + the signal, as a shell reports it). 125 means the program could not be run at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.protobuf import duration_pb2, json_format
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from zehanx.common.v1 import log_pb2
from zehanx.executor.v1 import executor_service_pb2 as pb
from zehanx.executor.v1 import executor_service_pb2_grpc as rpc

app = typer.Typer(help="Run programs in the executor's sandbox.", no_args_is_help=True, add_completion=False)

#: Exit status when the program could not be run (the executor refused or failed), as ``docker run``.
CANNOT_RUN = 125
SERVICE_TOKEN_KEY = "x-zx-service-token"
_KILLED = {
    pb.EXIT_REASON_TIMEOUT: "time limit",
    pb.EXIT_REASON_MEMORY: "memory limit",
    pb.EXIT_REASON_OUTPUT_LIMIT: "output limit",
    pb.EXIT_REASON_DISK_LIMIT: "disk limit",
    pb.EXIT_REASON_CANCELLED: "cancelled",
    pb.EXIT_REASON_SANDBOX_ERROR: "sandbox error",
}


class SandboxCliSettings(BaseSettings):
    """Where the executor is and how to authenticate to it."""

    model_config = SettingsConfigDict(env_prefix="ZX_", extra="ignore")

    executor_address: str = Field("127.0.0.1:47104", description="host:port of the executor service.")
    service_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ZX_SERVICE_TOKEN"), description="The internal service token."
    )
    home: Path = Field(Path("~/.zehanx"), description="Local state; holds service-token after zx up.")

    def token(self) -> str | None:
        if self.service_token is not None and self.service_token.get_secret_value():
            return self.service_token.get_secret_value()
        path = self.home.expanduser() / "service-token"
        try:
            return path.read_text().strip() or None
        except OSError:
            return None


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def build_request(
    file: Path, args: list[str], *, timeout: float | None, memory_mb: int | None, gpu: bool
) -> pb.ExecuteRequest:
    content = file.read_bytes()
    name = file.name if _portable(file.name) else "main.py"
    limits = pb.Limits(gpu=gpu)
    if timeout is not None:
        limits.max_wall_duration.CopyFrom(
            duration_pb2.Duration(seconds=int(timeout), nanos=int((timeout % 1) * 1e9))
        )
    if memory_mb is not None:
        limits.max_memory_bytes = memory_mb * 1024 * 1024
    return pb.ExecuteRequest(
        files=[pb.ExecutionFile(path=name, content=content)],
        argv=["python", name, *args],
        limits=limits,
    )


def _portable(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "_.+=@,~-" for c in name) and name not in (".", "..")


def exit_status(result: pb.ExecutionResult) -> int:
    """The status ``zx sandbox run`` exits with for a finished execution."""
    if result.reason == pb.EXIT_REASON_COMPLETED:
        return 0
    if result.exit_code > 0:
        return min(result.exit_code, 255)
    if result.signal > 0:
        return 128 + result.signal
    if result.reason == pb.EXIT_REASON_SANDBOX_ERROR:
        return CANNOT_RUN
    return 1


async def _run(settings: SandboxCliSettings, request: pb.ExecuteRequest, deadline_s: float) -> int:
    token = settings.token()
    metadata = [(SERVICE_TOKEN_KEY, token)] if token else []
    out, err = sys.stdout.buffer, sys.stderr.buffer
    async with grpc.aio.insecure_channel(settings.executor_address) as channel:
        call = rpc.ExecutorServiceStub(channel).Execute(request, metadata=metadata, timeout=deadline_s)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, call.cancel)
        try:
            async for msg in call:
                kind = msg.WhichOneof("event")
                if kind == "output":
                    stream = out if msg.output.stream == log_pb2.OUTPUT_STREAM_STDOUT else err
                    stream.write(msg.output.data)
                    stream.flush()
                elif kind == "metric":
                    payload = json_format.MessageToDict(msg.metric.payload)
                    _err(f"[metric] {json.dumps(payload, separators=(',', ':'))}")
                elif kind == "result":
                    result = msg.result
                    if result.reason in _KILLED:
                        _err(
                            f"zx sandbox: stopped by the sandbox ({_KILLED[result.reason]}): {result.message}"
                        )
                    return exit_status(result)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                _err("zx sandbox: interrupted; the program was killed")
                return 130
            hint = ""
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                hint = f" (is the executor running at {settings.executor_address}? try `zx up`)"
            elif exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                hint = " (set ZX_SERVICE_TOKEN or run `zx up`, which writes $ZX_HOME/service-token)"
            _err(f"zx sandbox: {exc.code().name}: {exc.details()}{hint}")
            return CANNOT_RUN
        finally:
            loop.remove_signal_handler(signal.SIGINT)
    _err("zx sandbox: the executor ended the stream without a result")
    return CANNOT_RUN


@app.command("run")
def run_file(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The Python file to run.")
    ],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments passed to the program.")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.001, max=86400, help="Wall-clock limit, seconds.")
    ] = None,
    memory: Annotated[
        int | None, typer.Option("--memory", min=16, max=1024 * 1024, help="Memory limit, MiB.")
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="Give the program the host's GPU.")] = False,
) -> None:
    """Run FILE with the sandbox's Python; exit with the program's exit status."""
    settings = SandboxCliSettings()
    request = build_request(file, list(args or []), timeout=timeout, memory_mb=memory, gpu=gpu)
    # The call's own deadline: the program's limit plus time to set up and collect, so a stuck
    # executor cannot hang the CLI forever.
    deadline = (timeout or 86_400) + 120
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    raise typer.Exit(asyncio.run(_run(settings, request, deadline)))
