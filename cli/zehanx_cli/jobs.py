"""``zx train / jobs / job / cancel / models / download / predict``: the gateway's public API from a shell.

Every call goes to the gateway of this ZX_HOME's suite (``ZX_GATEWAY_ADDRESS`` moves it) with the API
key ``zx up`` made (``ZX_API_KEY`` overrides it). ``zx train --follow`` watches the job: each stage as a
line, the training as a live progress bar (epoch, loss, validation metric), then the held-out result
against the baseline. Ctrl-C while following asks whether to cancel the job or only stop watching.
"""

from __future__ import annotations

import hashlib
import itertools
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


def _when(timestamp: Any) -> str:
    return str(timestamp.ToDatetime().strftime("%Y-%m-%d %H:%M"))


def _listing(
    as_json: bool, records: list[dict[str, Any]], columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """A list of jobs or models: the records as JSON (--json), or a table of ``columns``."""
    if as_json:
        print(json.dumps(records, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def jobs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your jobs, newest first."""

    def action(gateway: Gateway) -> None:
        page = gateway.stub.ListJobs(pb.ListJobsRequest(page_size=limit), metadata=gateway.metadata)
        _listing(
            as_json,
            [json_format.MessageToDict(j) for j in page.jobs],
            ("ID", "STATE", "STAGE", "CREATED", "PROMPT"),
            [
                (j.id, _state(j.state), _stage(j.stage), _when(j.create_time), Text(j.prompt[:60]))
                for j in page.jobs
            ],
        )

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

    def row(m: Any) -> tuple[Any, ...]:
        name = m.metric_name
        return (
            m.id,
            Text(m.title[:40]),
            Text(f"{name} {m.held_out_metrics.values.get(name, float('nan')):.4f}"),
            f"{m.baseline_metrics.values.get(name, float('nan')):.4f}",
            _when(m.create_time),
        )

    def action(gateway: Gateway) -> None:
        page = gateway.stub.ListModels(pb.ListModelsRequest(page_size=limit), metadata=gateway.metadata)
        records = [json_format.MessageToDict(m) for m in page.models]
        for record in records:
            record.pop("modelCard", None)  # long; it is in the downloaded archive
        _listing(
            as_json,
            records,
            ("ID", "TITLE", "HELD-OUT", "BASELINE", "CREATED"),
            [row(m) for m in page.models],
        )

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


#: Most instances of one Predict (the gateway's limit); more go through PredictStream in chunks this size.
PREDICT_BATCH = 1000
#: At most this many predictions are shown as a table on a terminal; beyond, or when stdout is not a
#: terminal, one JSON line per prediction.
TABLE_ROWS = 20


def predict(
    model_id: Annotated[str, typer.Argument(help="The model's id.")],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Inputs: each a JSON value (or plain text); '-' alone reads JSON lines from stdin."
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help="Read the inputs from this file, one JSON value per line ('-': stdin). Up to 1000 go as "
            "one Predict; more stream through PredictStream, 1000 a chunk.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per prediction, even on a terminal.")
    ] = False,
) -> None:
    """Run a model on inputs and print one prediction per input, in order.

    On a terminal a few predictions show as a table; otherwise (or with --json) each is one JSON line
    ({"prediction": ..., "probabilities": {...}}) for machine use. A line on stderr says whether the
    model's predictor was warm (already loaded) or cold (started for this call) and the latency."""
    source = file if file is not None else ("-" if inputs == ["-"] else None)
    if source is not None and inputs and inputs != ["-"]:
        _fail("give the inputs either as arguments or with --file, not both", 2)
    if source is None and not inputs:
        _fail("no inputs: give them as arguments, or with --file PATH (or '-' for stdin) as JSON lines", 2)
    if source is None:
        instances: Iterator[struct_pb2.Value] = iter([_argument_value(text) for text in inputs or []])
    else:
        instances = _json_lines(source)
    try:
        first = list(itertools.islice(instances, PREDICT_BATCH + 1))
    except BadInput as exc:
        _fail(f"{exc}; nothing was sent", 2)
    if not first:
        _fail(f"no inputs in {'stdin' if source == '-' else source}", 2)
    table = not as_json and sys.stdout.isatty() and len(first) <= TABLE_ROWS

    def action(gateway: Gateway) -> None:
        started = time.monotonic()
        bad: list[BadInput] = []
        if len(first) <= PREDICT_BATCH:
            reply = gateway.stub.Predict(
                pb.PredictRequest(model_id=model_id, instances=first), metadata=gateway.metadata
            )
            answers = [(0, reply.predictions, reply.predict_duration, reply.warm, reply.restarted)]
        else:
            answers = _streamed(gateway, model_id, itertools.chain(first, instances), bad)
        done = 0
        warm: list[bool] = []
        trainer_s = 0.0
        rows: list[tuple[struct_pb2.Value, Any]] = []
        for offset, predictions, duration, was_warm, restarted in answers:
            warm.append(was_warm)
            trainer_s += duration.ToNanoseconds() / 1e9
            if restarted:
                err_console.print(
                    "note: the model's predictor had stopped; a new one was started",
                    highlight=False,
                    markup=False,
                )
            for i, prediction in enumerate(predictions):
                if table:
                    rows.append((first[offset + i], prediction))
                else:
                    print(json.dumps(_prediction_json(prediction)), flush=False)
            done += len(predictions)
        sys.stdout.flush()
        if bad:
            _fail(f"{bad[0]}; the {done} predictions of the lines before it were printed", 2)
        if table:
            console.print(_prediction_table(rows))
        elapsed = time.monotonic() - started
        state = (
            "warm"
            if all(warm)
            else "cold"
            if not any(warm)
            else f"cold for {warm.count(False)} of {len(warm)} calls"
        )
        err_console.print(
            f"{done} prediction{'s' if done != 1 else ''}, {state}: {trainer_s * 1000:.1f} ms at the trainer, "
            f"{elapsed * 1000:.1f} ms in all" + (f" ({len(warm)} chunks)" if len(warm) > 1 else ""),
            highlight=False,
            markup=False,
        )

    _call(action)


def _streamed(
    gateway: Gateway, model_id: str, instances: Iterator[struct_pb2.Value], bad: list[BadInput]
) -> Iterator[tuple[int, Any, Any, bool, bool]]:
    """PredictStream: the first message names the model, every message carries up to 1000 instances read
    lazily from ``instances`` (a large file is never held whole); the answers come back in order.

    gRPC reads the requests in a thread of its own: a line that is not JSON ends the requests there (the
    chunks before it are answered) and is handed back in ``bad``."""

    def requests() -> Iterator[pb.PredictStreamRequest]:
        chunk: list[struct_pb2.Value] = []
        sent = 0
        try:
            for value in instances:
                chunk.append(value)
                if len(chunk) == PREDICT_BATCH:
                    yield pb.PredictStreamRequest(model_id="" if sent else model_id, instances=chunk)
                    chunk, sent = [], sent + 1
        except BadInput as exc:  # the lines before it still go
            bad.append(exc)
        if chunk:
            yield pb.PredictStreamRequest(model_id="" if sent else model_id, instances=chunk)

    for answer in gateway.stub.PredictStream(requests(), metadata=gateway.metadata):
        yield answer.offset, answer.predictions, answer.predict_duration, answer.warm, answer.restarted


def _argument_value(text: str) -> struct_pb2.Value:
    value = struct_pb2.Value()
    try:
        json_format.Parse(text, value)
    except json_format.ParseError:
        value.string_value = text  # plain text, for text models
    return value


class BadInput(ValueError):
    """A line of the inputs that is not JSON."""


def _json_lines(source: str) -> Iterator[struct_pb2.Value]:
    """One instance per non-blank line of ``source`` (a path, or '-' for stdin), read as it is consumed.

    A line that is not JSON stops everything with its number (exit 2), before it is sent: a text
    instance is a JSON string ("a great film")."""
    if source == "-":
        stream = sys.stdin
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            _fail(f"--file {source!r}: no such file", 2)
        stream = path.open(encoding="utf-8")
    try:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            value = struct_pb2.Value()
            try:
                json_format.Parse(line, value)
            except json_format.ParseError as exc:
                name = "stdin" if source == "-" else source
                raise BadInput(
                    f"{name} line {number} is not JSON ({exc}); each line is one instance as JSON, a text "
                    'one a JSON string ("a great film")'
                ) from None
            yield value
    finally:
        if stream is not sys.stdin:
            stream.close()


def _prediction_json(prediction: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prediction": json_format.MessageToDict(prediction.output) if prediction.HasField("output") else None
    }
    if prediction.probabilities:
        row["probabilities"] = {k: round(v, 6) for k, v in prediction.probabilities.items()}
    return row


def _prediction_table(rows: list[tuple[struct_pb2.Value, Any]]) -> Table:
    table = Table("input", "prediction", "top probabilities")
    for value, prediction in rows:
        shown = json.dumps(json_format.MessageToDict(value))
        row = _prediction_json(prediction)
        top = sorted((row.get("probabilities") or {}).items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            Text(shown if len(shown) <= 80 else shown[:79] + "…"),
            Text(json.dumps(row["prediction"])),
            Text(", ".join(f"{k} {v:.3f}" for k, v in top)),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(jobs)
    app.command()(job)
    app.command()(cancel)
    app.command()(models)
    app.command()(download)
    app.command()(predict)
