"""``zx train / jobs / job / cancel / models / download / predict``: the gateway's public API from a shell.

Every call goes to the gateway of this ZX_HOME's suite (``ZX_GATEWAY_ADDRESS`` moves it) with the API
key ``zx up`` made (``ZX_API_KEY`` overrides it). ``zx train --follow`` watches the job: each stage as a
line, the training as a live progress bar (epoch, loss, validation metric), then the held-out result
against the baseline. Ctrl-C while following asks whether to cancel the job or only stop watching.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format, struct_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from zehanx.common.v1 import dataset_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx.gateway.v1 import job_pb2

from zehanx_cli import account
from zehanx_cli.channel import gateway_target
from zehanx_cli.errors import LaunchError
from zehanx_cli.settings import LauncherSettings

# What the gateway sends (dataset names from crawled pages, reasons and log lines from programs, titles,
# error text) is printed as plain text, never parsed as rich markup: "[/data]" would crash a following
# zx train, "[link=...]" would hide a hyperlink. Only our own fixed strings carry styles.
console = Console()
err_console = Console(stderr=True, soft_wrap=True)
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def _state(value: int) -> str:
    return job_pb2.JobState.Name(value).removeprefix("JOB_STATE_")


def _stage(value: int) -> str:
    return job_pb2.JobStage.Name(value).removeprefix("JOB_STAGE_") if value else "-"


class Gateway:
    """A channel to the gateway with the caller's key."""

    def __init__(self) -> None:
        settings = LauncherSettings()
        target = gateway_target(settings)
        self.address = target.address
        self.tls = target.tls
        self._key = account.read_api_key(settings)
        self.channel = target.channel(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        self.stub = rpc.GatewayServiceStub(self.channel)

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._key}")]

    def close(self) -> None:
        self.channel.close()


def _styled(style: str, label: str, text: str) -> Text:
    """``label`` in ``style``, then ``text`` as it is (no markup)."""
    return Text.assemble((label, style), text)


def _fail(message: str, code: int = 1) -> None:
    err_console.print(_styled("bold red", "error:", f" {message}"))
    raise typer.Exit(code)


def _call(action: Any) -> Any:
    """Run ``action(gateway)``, turning a status into a clear message and exit code."""
    try:
        gateway = Gateway()
    except LaunchError as exc:
        _fail(str(exc))
    try:
        return action(gateway)
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        detail = exc.details()  # type: ignore[attr-defined]
        if code is grpc.StatusCode.UNAVAILABLE:
            hint = " (TLS: does ZX_TLS_CA_FILE hold the CA of its certificate?)" if gateway.tls else ""
            _fail(
                f"the gateway at {gateway.address} is not reachable ({detail}); is the suite up? (zx up){hint}"
            )
        _fail(f"{code.name}: {detail}")
    finally:
        gateway.close()


def _source(value: str) -> dataset_pb2.DataSource:
    if value.startswith(("http://", "https://")):
        return dataset_pb2.DataSource(url=value)
    if value.startswith("catalog:"):
        return dataset_pb2.DataSource(catalog_name=value.removeprefix("catalog:"))
    path = Path(value).expanduser()
    if not path.exists():
        _fail(f"--source {value!r} is neither an http(s) URL, catalog:<name>, nor an existing path", 2)
    return dataset_pb2.DataSource(local_path=str(path.resolve()))


def _metrics(values: Any) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items())) or "-"


# -- following a job ----------------------------------------------------------------------------------


def _watch(gateway: Gateway, job_id: str, after: int) -> Iterator[Any]:
    """WatchJob, resumed from the last sequence seen whenever the stream breaks (a gateway restart)."""
    last = after
    failures = 0
    while True:
        try:
            for message in gateway.stub.WatchJob(
                pb.WatchJobRequest(job_id=job_id, after_sequence=last), metadata=gateway.metadata
            ):
                failures = 0
                event = message.event
                if event.WhichOneof("event") != "snapshot":
                    last = event.sequence
                yield event
            return
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE or failures >= 60:  # type: ignore[attr-defined]
                raise
            failures += 1
            err_console.print(f"[yellow]the gateway went away; reconnecting (from event {last})...[/]")
            time.sleep(min(1.0 * failures, 5.0))


def follow(gateway: Gateway, job_id: str) -> int:
    """Show the job live until it ends; returns the exit status (0 only for SUCCEEDED)."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    bar: Any = None
    final: job_pb2.Job | None = None
    evaluation: Any = None
    try:
        with progress:
            for event in _watch(gateway, job_id, 0):
                kind = event.WhichOneof("event")
                if kind == "snapshot":
                    final = event.snapshot
                    continue
                if kind == "state_change":
                    change = event.state_change
                    line = f"{_state(change.to_state):<10} {_stage(change.to_stage):<11} {change.reason}"
                    progress.console.print(line.rstrip(), highlight=False, markup=False)
                    if change.to_state in TERMINAL:
                        break
                elif kind == "dataset_built":
                    built = event.dataset_built
                    progress.console.print(
                        f"  dataset {built.name}: {built.train_row_count} train / {built.validation_row_count} "
                        f"validation / {built.test_row_count} held-out rows, target '{built.target_column}'",
                        highlight=False,
                        markup=False,
                    )
                elif kind == "program_generated":
                    made = event.program_generated
                    what = "repaired" if made.program_attempt > 1 else "written"
                    progress.console.print(
                        f"  program v{made.program_attempt} {what} ({made.plan.model_family}, "
                        f"{len(made.file_paths)} files, {made.backend})",
                        highlight=False,
                        markup=False,
                    )
                elif kind == "training_metrics":
                    metrics = event.training_metrics
                    if metrics.smoke:
                        continue
                    if bar is None:
                        bar = progress.add_task("training", total=metrics.total_steps or None, detail="")
                    # Programs that report no epoch (step-based loops) show their step instead of "epoch 0".
                    detail = f"epoch {metrics.epoch}" if metrics.epoch else f"step {metrics.step}"
                    if metrics.HasField("loss"):
                        detail += f"  loss {metrics.loss:.4f}"
                    if metrics.validation_metrics.values:
                        detail += "  val " + _metrics(metrics.validation_metrics.values)
                    progress.update(
                        bar, completed=metrics.step, total=metrics.total_steps or None, detail=detail
                    )
                elif kind == "log_line" and event.log_line.source == 2 and "fail" in event.log_line.text:
                    first = (event.log_line.text.splitlines() or [""])[0]
                    progress.console.print(Text(f"  {first}", style="yellow"))
                elif kind == "evaluation_result":
                    evaluation = event.evaluation_result
    except KeyboardInterrupt:
        return _interrupted(gateway, job_id)
    job = gateway.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=gateway.metadata)
    final = job
    return _summary(gateway, final, evaluation)


def _interrupted(gateway: Gateway, job_id: str) -> int:
    if not sys.stdin.isatty():
        console.print(f"Stopped watching; the job goes on. Watch again: zx job {job_id} --follow")
        return 130
    try:
        answer = console.input("\nCancel the job [c], or only stop watching [d]? [d] ", markup=False)
        answer = answer.strip().lower()
    except (KeyboardInterrupt, EOFError):
        answer = "d"
    if answer.startswith("c"):
        job = gateway.stub.CancelJob(
            pb.CancelJobRequest(job_id=job_id, reason="cancelled from zx train"), metadata=gateway.metadata
        )
        console.print(f"Job {job_id} is {_state(job.state)}.")
    else:
        console.print(f"Stopped watching; the job goes on. Watch again: zx job {job_id} --follow")
    return 130


def _summary(gateway: Gateway, job: job_pb2.Job, evaluation: Any) -> int:
    state = _state(job.state)
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        console.print(_styled("bold red", f"Job {job.id} {state}", f": {job.error.message}"))
        return 1
    model = gateway.stub.GetModel(pb.GetModelRequest(model_id=job.model_id), metadata=gateway.metadata)
    name = model.metric_name
    held = model.held_out_metrics.values
    base = model.baseline_metrics.values
    console.print(f"\n[bold green]Job {job.id} SUCCEEDED[/]", highlight=False)
    table = Table(box=None, pad_edge=False, title="Held-out test split (never seen by the program)")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(Text(f"baseline ({model.baseline_name})"), justify="right")
    for metric in sorted(held):
        table.add_row(
            Text(("* " if metric == name else "  ") + metric),
            f"{held[metric]:.4f}",
            f"{base.get(metric, float('nan')):.4f}",
        )
    console.print(table)
    if evaluation is not None:
        console.print(f"{evaluation.test_row_count} held-out rows.", highlight=False)
    zx = zx_command()
    console.print(f"Model id: {model.id}", highlight=False)
    console.print(
        f"Model card: {zx} download {model.id} -o ./model  (then read ./model/MODEL_CARD.md)", highlight=False
    )
    console.print(
        f"Try it:    {zx} predict {model.id} '<one input as JSON: an object of the input columns "
        "the model card lists under Task>'",
        highlight=False,
    )
    return 0


def zx_command() -> str:
    """How the user can type zx again: ``zx`` when it is on PATH, else the path they ran (.venv/bin/zx)."""
    invoked = Path(sys.argv[0])
    found = shutil.which("zx")
    if found and invoked.exists() and Path(found).resolve() == invoked.resolve():
        return "zx"
    if invoked.name == "zx" and invoked.exists():
        try:
            return os.path.relpath(invoked)
        except ValueError:
            return str(invoked)
    return "zx"


# -- commands -------------------------------------------------------------------------------------------


def train(
    prompt: Annotated[str, typer.Argument(help="What the model should do, in your words.")],
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Data: an http(s) URL, catalog:<name>, or a path (repeatable)."),
    ] = None,
    follow_: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Watch the job live.")] = True,
    max_repairs: Annotated[int | None, typer.Option("--max-repairs", min=0, max=3)] = None,
    training_minutes: Annotated[
        float | None, typer.Option("--training-minutes", help="Training budget of the full run.")
    ] = None,
) -> None:
    """Create a job that turns PROMPT (and optional sources) into a trained model."""
    job = job_pb2.Job(prompt=prompt, sources=[_source(s) for s in source or []])
    if max_repairs is not None:
        job.options.max_repair_attempts = max_repairs
    if training_minutes is not None:
        job.options.resources.max_training_duration.FromSeconds(int(training_minutes * 60))

    def action(gateway: Gateway) -> int:
        created = gateway.stub.CreateJob(
            pb.CreateJobRequest(job=job, request_id=str(uuid.uuid4())), metadata=gateway.metadata
        )
        console.print(f"Job {created.id} {_state(created.state)}: {prompt}", highlight=False, markup=False)
        if not follow_:
            console.print(f"Watch it: zx job {created.id} --follow", highlight=False)
            return 0
        return follow(gateway, created.id)

    raise typer.Exit(_call(action))


def jobs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your jobs, newest first."""

    def action(gateway: Gateway) -> None:
        page = gateway.stub.ListJobs(pb.ListJobsRequest(page_size=limit), metadata=gateway.metadata)
        if as_json:
            print(json.dumps([json_format.MessageToDict(j) for j in page.jobs], indent=2))
            return
        table = Table(box=None, pad_edge=False)
        for column in ("ID", "STATE", "STAGE", "CREATED", "PROMPT"):
            table.add_column(column)
        for j in page.jobs:
            table.add_row(
                j.id,
                _state(j.state),
                _stage(j.stage),
                j.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
                Text(j.prompt[:60]),
            )
        console.print(table)

    _call(action)


def job(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Watch it until it ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one job (and, with --follow, watch it)."""

    def action(gateway: Gateway) -> int:
        if follow_:
            return follow(gateway, job_id)
        found = gateway.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=gateway.metadata)
        if as_json:
            print(json.dumps(json_format.MessageToDict(found), indent=2))
            return 0
        console.print(f"Job {found.id}: {_state(found.state)} ({_stage(found.stage)})", highlight=False)
        console.print(f"  prompt:  {found.prompt}", highlight=False, markup=False)
        console.print(f"  attempt: {found.attempt}, repairs: {found.repair_count}", highlight=False)
        if found.dataset_id:
            console.print(f"  dataset: {found.dataset_id}", highlight=False)
        if found.model_id:
            console.print(f"  model:   {found.model_id}", highlight=False)
        if found.trace_id:
            console.print(f"  trace:   {found.trace_id}", highlight=False)
        if found.HasField("error") and found.error.message:
            console.print(f"  error:   {found.error.message}", highlight=False, markup=False)
        return 0

    raise typer.Exit(_call(action))


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    reason: Annotated[str, typer.Option("--reason", "-r")] = "",
) -> None:
    """Cancel a job (it ends CANCELLED within seconds)."""

    def action(gateway: Gateway) -> None:
        found = gateway.stub.CancelJob(
            pb.CancelJobRequest(job_id=job_id, reason=reason), metadata=gateway.metadata
        )
        console.print(f"Job {found.id} is {_state(found.state)}.", highlight=False)

    _call(action)


def models(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your models, newest first."""

    def action(gateway: Gateway) -> None:
        page = gateway.stub.ListModels(pb.ListModelsRequest(page_size=limit), metadata=gateway.metadata)
        if as_json:
            rows = []
            for m in page.models:
                row = json_format.MessageToDict(m)
                row.pop("modelCard", None)
                rows.append(row)
            print(json.dumps(rows, indent=2))
            return
        table = Table(box=None, pad_edge=False)
        for column in ("ID", "TITLE", "HELD-OUT", "BASELINE", "CREATED"):
            table.add_column(column)
        for m in page.models:
            name = m.metric_name
            table.add_row(
                m.id,
                Text(m.title[:40]),
                Text(f"{name} {m.held_out_metrics.values.get(name, float('nan')):.4f}"),
                f"{m.baseline_metrics.values.get(name, float('nan')):.4f}",
                m.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
            )
        console.print(table)

    _call(action)


def download(
    model_id: Annotated[str, typer.Argument(help="The model's id.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder to unpack the model into.")] = Path("."),
    keep_zip: Annotated[
        bool, typer.Option("--zip", help="Keep the archive as a .zip instead of unpacking.")
    ] = False,
) -> None:
    """Download a model (weights, program, model card, metrics), verify its sha256, and unpack it."""

    def action(gateway: Gateway) -> None:
        import zipfile

        out.mkdir(parents=True, exist_ok=True)
        # Received into a fresh private file of our own (O_EXCL, no name from the server), renamed or
        # unpacked only once its size and sha256 match the header.
        fd, temp_name = tempfile.mkstemp(prefix=".zx-download-", suffix=".part", dir=out)
        temp = Path(temp_name)
        header: pb.DownloadHeader | None = None
        name = ""
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for message in gateway.stub.DownloadModel(
                    pb.DownloadModelRequest(model_id=model_id), metadata=gateway.metadata
                ):
                    if message.WhichOneof("part") == "header":
                        if header is not None:
                            _fail("the gateway sent a second header in one download")
                        header = message.header
                        name = archive_name(header.filename)
                        continue
                    if header is None:
                        _fail("the gateway sent data before the download's header")
                    data = message.chunk.data
                    size += len(data)
                    if size > header.total_size_bytes:
                        _fail(f"the gateway sent more than the {header.total_size_bytes} bytes it announced")
                    handle.write(data)
                    digest.update(data)
            if header is None:
                _fail("the gateway sent no download header")
            if digest.hexdigest() != header.sha256 or size != header.total_size_bytes:
                _fail(
                    f"the download does not match its sha256 {header.sha256} "
                    f"(got {digest.hexdigest()}, {size} bytes)"
                )
            console.print(f"verified sha256 {header.sha256} ({size} bytes)", highlight=False, markup=False)
            if keep_zip:
                target = out / name
                os.chmod(temp, 0o666 & ~_umask())
                os.replace(temp, target)  # replaces a link of that name itself, never what it points to
                console.print(f"saved {target}", highlight=False, markup=False)
                return
            with zipfile.ZipFile(temp) as archive:
                archive.extractall(out)  # member names lose their '..' parts and leading '/'
            console.print(
                f"unpacked into {out} (model card: {out / 'MODEL_CARD.md'})", highlight=False, markup=False
            )
        finally:
            temp.unlink(missing_ok=True)

    _call(action)


def archive_name(name: str) -> str:
    """The archive's file name as the gateway sent it, when it is one plain name in the output folder.

    Anything else (empty, absolute, with a separator, ``.``/``..``, hidden, NUL, longer than a file name
    may be) is refused: a malicious gateway, or anyone in the middle of the channel, must not pick where
    the CLI writes.
    """
    plain = (
        bool(name)
        and name == Path(name).name
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
        and len(name.encode("utf-8", "surrogateescape")) <= 255
    )
    if not plain:
        _fail(f"the gateway sent an unsafe file name for the archive: {name!r}; nothing was written")
    return name


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def predict(
    model_id: Annotated[str, typer.Argument(help="The model's id.")],
    inputs: Annotated[list[str], typer.Argument(help="Inputs: each a JSON value (or plain text).")],
) -> None:
    """Run a model on inputs (in the sandbox) and print one prediction per input."""
    instances = []
    for text in inputs:
        value = struct_pb2.Value()
        try:
            json_format.Parse(text, value)
        except json_format.ParseError:
            value.string_value = text  # plain text, for text models
        instances.append(value)

    def action(gateway: Gateway) -> None:
        reply = gateway.stub.Predict(
            pb.PredictRequest(model_id=model_id, instances=instances), metadata=gateway.metadata
        )
        for text, prediction in zip(inputs, reply.predictions, strict=True):
            output = json_format.MessageToDict(prediction.output) if prediction.HasField("output") else None
            row: dict[str, Any] = {"input": text[:80], "prediction": output}
            if prediction.probabilities:
                top = sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])[:3]
                row["top"] = {k: round(v, 4) for k, v in top}
            print(json.dumps(row))

    _call(action)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(jobs)
    app.command()(job)
    app.command()(cancel)
    app.command()(models)
    app.command()(download)
    app.command()(predict)
