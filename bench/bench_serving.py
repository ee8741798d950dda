"""Serving benchmark: Predict through the gateway (gRPC), cold and warm, against the same model's
``predict()`` called in-process with no server, in the same run.

    .venv/bin/python bench/bench_serving.py [--warm-calls 200] [--cold-calls 5] [--keep]

1. ``zx up --detach`` in a temporary ZX_HOME on free ports (the whole suite: gateway, crawler, codegen,
   executor with its local sandbox, trainer), then three jobs trained through it: a tabular model
   (catalogue ``sklearn.iris``), an image model (catalogue ``sklearn.digits``) and a text model (1000
   IMDb sentences from ../shared/data/sentiment_labelled_sentences, uploaded; the text template with
   its MiniLM sentence encoder when the planner picks it).
2. Per model, through the gateway's gRPC port with the API key ``zx up`` made:
   - cold: the trainer's predictor of the model is ended (``TrainerService.ReleasePredictor``), then one
     Predict of one row, timed at the client; ``--cold-calls`` times;
   - warm: ``--warm-calls`` Predicts of one row each, one after the other;
   - batched: Predicts of 1000 rows (warm), rows per second.
3. In-process, in a child Python process per model (no server, no sandbox): the downloaded archive's
   ``predict.py`` imported, ``load(model_dir)`` once, then ``predict(state, [row])`` the same number of
   times, and ``predict(state, rows)`` on the same 1000-row batches, in alternation with the gateway's
   calls (20 one-row calls or one batch each side in turn), so both see the same load on the machine.

Targets on this machine: warm p50 <= 20 ms (tabular, image), <= 40 ms (text); batched throughput through
the gateway >= 50 % of in-process. The figures are printed whatever they are, with the warm flags the
gateway returned (a "warm" call that was not is counted and shown).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "services"))
ZX = str(Path(sys.executable).with_name("zx"))
SHARED = REPO.parent / "shared" / "data"
TEXT_FILE = SHARED / "sentiment_labelled_sentences" / "imdb_labelled.txt"
BATCH = 1000
SLOTS = 4
#: Sandbox uids 58000-58499 by this process's id: apart from the tests' (59000+, 60000+, 66000+, 67000+).
UID_BASE = 58000 + (os.getpid() % 100) * (SLOTS + 1)
TARGET_P50_MS = {"tabular": 20.0, "image": 20.0, "text": 40.0}
TARGET_THROUGHPUT = 0.5


@dataclass
class Case:
    name: str  # tabular, image, text
    prompt: str
    source: dict[str, str]
    job_id: str = ""
    model: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    from svc_harness import free_port as free

    return free()


def zx(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ZX, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def suite_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    ports = {
        name: free_port() for name in ("gateway", "crawler", "codegen", "executor", "trainer", "postgres")
    }
    env.update(
        {
            "ZX_HOME": str(home),
            **{f"ZX_{name.upper()}_PORT": str(port) for name, port in ports.items()},
            **{
                f"ZX_{n.upper()}_METRICS_PORT": "0"
                for n in ("gateway", "crawler", "codegen", "executor", "trainer")
            },
            "ZX_GATEWAY_EDGE_PORT": str(free_port()),
            "ZX_EXECUTOR_WORK_DIR": f"/var/tmp/zx-bench-serving-{UID_BASE}",
            "ZX_EXECUTOR_UID_BASE": str(UID_BASE),
            "ZX_EXECUTOR_MAX_CONCURRENT": str(SLOTS),
            "ZX_GATEWAY_CLAIM_POLL_SECONDS": "0.5",
            "COLUMNS": "160",
        }
    )
    return env


# -- data -------------------------------------------------------------------------------------------


def text_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["review", "sentiment"])
    for line in TEXT_FILE.read_text(encoding="utf-8", errors="replace").splitlines():
        text, _, label = line.rpartition("\t")
        if text.strip() and label.strip() in ("0", "1"):
            writer.writerow([text.strip(), "positive" if label.strip() == "1" else "negative"])
    return out.getvalue().encode()


def rows_for(case: Case, columns: list[str]) -> list[dict[str, Any]]:
    """Input rows the model reads (its plan's input columns), from the data it was trained on."""
    from sklearn import datasets

    if case.name == "text":
        texts = [r["review"] for r in csv.DictReader(io.StringIO(text_csv().decode()))]
        rows = [{"review": t} for t in texts]
    elif case.name == "tabular":
        bunch = datasets.load_iris()
        rows = [dict(zip([str(n) for n in bunch.feature_names], x, strict=True)) for x in bunch.data.tolist()]
    else:
        bunch = datasets.load_digits()
        names = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
        rows = [dict(zip(names, [int(v) for v in x], strict=True)) for x in bunch.data.tolist()]
    if case.name == "image" and len(columns) == 1:  # the image layout "array_column": the pixels in one list
        rows = [{columns[0]: list(r.values())} for r in rows]
    if columns:
        missing = set(columns) - set(rows[0])
        if missing:
            raise SystemExit(
                f"{case.name}: the model reads columns the bench does not have: {sorted(missing)}"
            )
        rows = [{c: r[c] for c in columns} for r in rows]
    return rows


# -- through the gateway ------------------------------------------------------------------------------


class Client:
    def __init__(self, env: dict[str, str], home: Path) -> None:
        import grpc
        from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
        from zehanx.trainer.v1 import trainer_service_pb2_grpc as trpc

        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{env['ZX_GATEWAY_PORT']}", options=options)
        self.stub = rpc.GatewayServiceStub(self.channel)
        self.auth = (("authorization", f"Bearer {(home / 'api-key').read_text().strip()}"),)
        self.trainer_channel = grpc.insecure_channel(f"127.0.0.1:{env['ZX_TRAINER_PORT']}")
        self.trainer = trpc.TrainerServiceStub(self.trainer_channel)
        self.service = (("x-zx-service-token", (home / "service-token").read_text().strip()),)

    def values(self, rows: list[dict[str, Any]]) -> list[Any]:
        from google.protobuf import json_format, struct_pb2

        out = []
        for row in rows:
            value = struct_pb2.Value()
            json_format.ParseDict(row, value)
            out.append(value)
        return out

    def predict(self, model_id: str, instances: list[Any] | bytes) -> tuple[float, Any]:
        from zehanx.gateway.v1 import gateway_service_pb2 as pb

        if isinstance(instances, bytes):
            request = pb.PredictRequest(model_id=model_id, instances_jsonl=instances)
        else:
            request = pb.PredictRequest(model_id=model_id, instances=instances)
        started = time.perf_counter()
        reply = self.stub.Predict(request, metadata=self.auth, timeout=300)
        return time.perf_counter() - started, reply

    def release(self, artifact_id: str) -> bool:
        from zehanx.trainer.v1 import trainer_service_pb2 as tpb

        request = tpb.ReleasePredictorRequest(artifact_id=artifact_id)
        return self.trainer.ReleasePredictor(request, metadata=self.service, timeout=60).released


def train(client: Client, cases: list[Case]) -> None:
    from zehanx.common.v1 import dataset_pb2
    from zehanx.gateway.v1 import gateway_service_pb2 as pb
    from zehanx.gateway.v1 import job_pb2

    for case in cases:
        if "upload" in case.source:
            upload = client.stub.UploadFile(
                pb.UploadFileRequest(filename="imdb.csv", content=text_csv()), metadata=client.auth
            )
            source = dataset_pb2.DataSource(upload_id=upload.upload_id)
        else:
            source = dataset_pb2.DataSource(catalog_name=case.source["catalog"])
        job = client.stub.CreateJob(
            pb.CreateJobRequest(job=job_pb2.Job(prompt=case.prompt, sources=[source])), metadata=client.auth
        )
        case.job_id = job.id
        print(f"  {case.name}: job {job.id}: {case.prompt!r}", flush=True)
    terminal = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
    deadline = time.monotonic() + 1800
    pending = list(cases)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs still running after 30 min: {[c.name for c in pending]}")
        for case in list(pending):
            job = client.stub.GetJob(pb.GetJobRequest(job_id=case.job_id), metadata=client.auth)
            if job.state in terminal:
                pending.remove(case)
                state = job_pb2.JobState.Name(job.state)
                if job.state != job_pb2.JOB_STATE_SUCCEEDED:
                    raise SystemExit(f"{case.name}: job {case.job_id} ended {state}: {job.error.message}")
                models = client.stub.ListModels(
                    pb.ListModelsRequest(job_id=case.job_id), metadata=client.auth
                )
                case.model = models.models[0]
                metric = case.model.metric_name
                print(
                    f"  {case.name}: trained, held-out {metric} "
                    f"{case.model.held_out_metrics.values.get(metric, float('nan')):.3f}",
                    flush=True,
                )
        time.sleep(2)


def find_models(client: Client, cases: list[Case]) -> None:
    """The newest model of each case's prompt in a reused suite."""
    from zehanx.gateway.v1 import gateway_service_pb2 as pb

    models = client.stub.ListModels(pb.ListModelsRequest(page_size=100), metadata=client.auth).models
    for case in cases:
        found = [m for m in models if m.prompt == case.prompt]
        if not found:
            raise SystemExit(f"{case.name}: the reused suite has no model of {case.prompt!r}")
        case.model = found[0]


def batch_rows(case: Case) -> list[dict[str, Any]]:
    return [case.rows[i % len(case.rows)] for i in range(BATCH)]


# -- in-process, interleaved with the gateway's calls -------------------------------------------------

#: The in-process side: a child Python process (no server, no sandbox) that imports the downloaded
#: predict.py, calls load() once, then answers commands on stdin with timings on stdout, so that the two
#: sides are measured in alternation (the machine's load changes over minutes; both see the same).
CHILD = r"""
import importlib, json, os, sys, time
program, model_dir, rows_path = sys.argv[1:4]
sys.path.insert(0, program)
os.chdir(program)
rows = json.loads(open(rows_path).read())
started = time.perf_counter()
predict = importlib.import_module("predict")
state = predict.load(model_dir)
print(json.dumps({"load_s": time.perf_counter() - started}), flush=True)
predict.predict(state, rows[:1])
for line in sys.stdin:
    kind, start, count = line.split()
    start, count = int(start), int(count)
    took = []
    if kind == "one":
        for i in range(start, start + count):
            t = time.perf_counter()
            predict.predict(state, [rows[i % len(rows)]])
            took.append(time.perf_counter() - t)
    else:
        t = time.perf_counter()
        out = predict.predict(state, rows)
        took.append(time.perf_counter() - t)
        assert len(out) == len(rows)
    print(json.dumps(took), flush=True)
"""


class InProcess:
    def __init__(self, program: Path, weights: Path, rows_path: Path, threads: int | None) -> None:
        env = dict(os.environ)
        if threads:
            env.update(
                dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), str(threads))
            )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(program), str(weights), str(rows_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.load_s = json.loads(self._line())["load_s"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the in-process predict.py ended (exit {self.proc.wait()})")
        return line

    def run(self, kind: str, start: int, count: int) -> list[float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{kind} {start} {count}\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


def measure(
    client: Client,
    case: Case,
    folder: Path,
    *,
    warm_calls: int,
    cold_calls: int,
    batches: int,
    threads: int | None = None,
) -> None:
    model_id = case.model.id
    one = client.values(case.rows[:1])
    artifact = case.figures["artifact_id"]
    program, weights = download(client, case, folder)
    rows_path = folder / f"{case.name}-rows.json"
    rows_path.write_text(json.dumps(batch_rows(case)))
    local = InProcess(program, weights, rows_path, threads)
    try:
        cold: list[float] = []
        cold_flags: list[bool] = []
        for _ in range(cold_calls):
            client.release(artifact)
            latency, reply = client.predict(model_id, one)
            cold.append(latency)
            cold_flags.append(reply.warm)
        client.predict(model_id, one)  # the predictor is resident again
        warm: list[float] = []
        warm_flags: list[bool] = []
        trainer_s: list[float] = []
        inproc_one: list[float] = []
        step = 20
        for start in range(0, warm_calls, step):
            count = min(step, warm_calls - start)
            for i in range(start, start + count):
                latency, reply = client.predict(model_id, client.values([case.rows[i % len(case.rows)]]))
                warm.append(latency)
                warm_flags.append(reply.warm)
                trainer_s.append(reply.predict_duration.ToNanoseconds() / 1e9)
            inproc_one += local.run("one", start, count)
        batch = client.values(batch_rows(case))
        # The same rows as JSON lines (Predict's instances_jsonl): no Value per number on the way.
        batch_jsonl = "".join(json.dumps(row) + "\n" for row in batch_rows(case)).encode()
        rates: list[float] = []
        jsonl_rates: list[float] = []
        inproc_rates: list[float] = []
        batch_flags: list[bool] = []
        for _ in range(batches):
            latency, reply = client.predict(model_id, batch)
            assert len(reply.predictions) == BATCH
            rates.append(BATCH / latency)
            batch_flags.append(reply.warm)
            inproc_rates.append(BATCH / local.run("batch", 0, BATCH)[0])
            latency, reply = client.predict(model_id, batch_jsonl)
            assert reply.predictions_jsonl.count(b"\n") == BATCH
            jsonl_rates.append(BATCH / latency)
            batch_flags.append(reply.warm)
    finally:
        local.close()
    case.figures.update(
        cold=cold,
        cold_said_warm=sum(cold_flags),
        warm=warm,
        warm_said_cold=warm_flags.count(False),
        warm_trainer=trainer_s,
        batch_rows_per_s=statistics.median(rates),
        batch_jsonl_rows_per_s=statistics.median(jsonl_rates),
        batch_said_cold=batch_flags.count(False),
        inproc_load_s=local.load_s,
        inproc_one=inproc_one,
        inproc_batch_rows_per_s=statistics.median(inproc_rates),
    )


def download(client: Client, case: Case, folder: Path) -> tuple[Path, Path]:
    """The model's archive unpacked: (the folder of its predict.py, the folder of its weights)."""
    from zehanx.gateway.v1 import gateway_service_pb2 as pb

    data = bytearray()
    request = pb.DownloadModelRequest(model_id=case.model.id)
    for part in client.stub.DownloadModel(request, metadata=client.auth):
        if part.HasField("chunk"):
            data += part.chunk.data
    target = folder / case.name
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        archive.extractall(target)
    program = next(target.rglob("predict.py")).parent
    weights = next(target.rglob("model.safetensors")).parent
    return program, weights


# -- report -------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(cases: list[Case]) -> None:
    print()
    print(
        f"load average at the end (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"{'model':8} {'cold p50':>9} {'cold p99':>9} {'warm p50':>9} {'warm p99':>9} {'trainer p50':>11} "
        f"{'in-proc p50':>11} {'in-proc p99':>11} {'batch rows/s':>12} {'in-proc rows/s':>14} {'ratio':>6} "
        f"{'jsonl rows/s':>12} {'ratio':>6}"
    )
    for case in cases:
        f = case.figures
        ratio = f["batch_rows_per_s"] / f["inproc_batch_rows_per_s"]
        f["ratio"] = ratio
        jsonl_ratio = f["batch_jsonl_rows_per_s"] / f["inproc_batch_rows_per_s"]
        f["jsonl_ratio"] = jsonl_ratio
        print(
            f"{case.name:8} {ms(pct(f['cold'], 50)):>9} {ms(pct(f['cold'], 99)):>9} {ms(pct(f['warm'], 50)):>9} "
            f"{ms(pct(f['warm'], 99)):>9} {ms(pct(f['warm_trainer'], 50)):>11} {ms(pct(f['inproc_one'], 50)):>11} "
            f"{ms(pct(f['inproc_one'], 99)):>11} {f['batch_rows_per_s']:>12.0f} {f['inproc_batch_rows_per_s']:>14.0f} "
            f"{ratio:>6.2f} {f['batch_jsonl_rows_per_s']:>12.0f} {jsonl_ratio:>6.2f}"
        )
    print(
        "(ms; latencies at the client through the gateway's gRPC port; trainer = predictDuration it reported)"
    )
    print()
    for case in cases:
        f = case.figures
        p50 = pct(f["warm"], 50) * 1000
        target = TARGET_P50_MS[case.name]
        flags = (
            f"cold calls answered warm: {f['cold_said_warm']}/{len(f['cold'])}; warm calls answered cold: "
            f"{f['warm_said_cold']}/{len(f['warm'])}; batches answered cold: {f['batch_said_cold']}"
        )
        print(
            f"{case.name}: warm p50 {p50:.1f} ms (target <= {target:.0f}: {'met' if p50 <= target else 'MISSED'}); "
            f"batched {f['ratio']:.0%} of in-process as Values, {f['jsonl_ratio']:.0%} as JSON lines "
            f"(target >= {TARGET_THROUGHPUT:.0%}: "
            f"{'met' if max(f['ratio'], f['jsonl_ratio']) >= TARGET_THROUGHPUT else 'MISSED'}); "
            f"in-process load {f['inproc_load_s']:.2f} s; "
            f"{flags}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-calls", type=int, default=200)
    parser.add_argument("--cold-calls", type=int, default=5)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument(
        "--inproc-threads",
        type=int,
        default=1,
        help="OMP/MKL threads of the in-process side (default 1: on a busy 2-core machine the fastest and "
        "steadiest in-process figure, so the ratio is taken against the best; 0: the libraries' default, "
        "as the predictor's sandbox has without a CPU limit)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the suite running (zx down --purge it)")
    parser.add_argument(
        "--reuse",
        metavar="ZX_HOME",
        help="measure the models of a suite a previous --keep run left running (no zx up, no training)",
    )
    args = parser.parse_args()
    if not TEXT_FILE.is_file():
        raise SystemExit(f"the text data is missing: {TEXT_FILE}")
    cases = [
        Case("tabular", "Classify iris flowers by species", {"catalog": "sklearn.iris"}),
        Case("image", "Classify handwritten digits", {"catalog": "sklearn.digits"}),
        Case("text", "Classify the sentiment of movie reviews as positive or negative", {"upload": "imdb"}),
    ]
    with tempfile.TemporaryDirectory(prefix="zx-bench-serving-") as tmp:
        if args.reuse:
            home = Path(args.reuse)
            env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
            env.update(json.loads((home / "bench-serving-env.json").read_text()))
        else:
            home = Path(tempfile.mkdtemp(prefix="zx-bench-serving-")) / "home"
            env = suite_env(home)
            print("starting the suite (zx up --detach)...", flush=True)
            up = zx(env, "up", "--detach", timeout=600)
            if up.returncode != 0:
                raise SystemExit(f"zx up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
            # Only the suite's own settings (ports, folders): nothing else of this environment goes to disk.
            (home / "bench-serving-env.json").write_text(
                json.dumps({k: v for k, v in env.items() if k.startswith("ZX_")})
            )
        try:
            client = Client(env, home)
            if args.reuse:
                find_models(client, cases)
            else:
                print("training three models through the suite...", flush=True)
                started = time.monotonic()
                train(client, cases)
                print(f"  trained in {time.monotonic() - started:.0f} s", flush=True)
            artifacts = trainer_artifact_ids(env, home, cases)
            for case in cases:
                case.figures["artifact_id"] = artifacts[case.model.id]
                case.rows = rows_for(case, list(case.model.plan.input_columns))
                print(
                    f"measuring {case.name} ({len(case.model.plan.input_columns)} input columns)...",
                    flush=True,
                )
                measure(
                    client,
                    case,
                    Path(tmp),
                    warm_calls=args.warm_calls,
                    cold_calls=args.cold_calls,
                    batches=args.batches,
                    threads=args.inproc_threads or None,
                )
            report(cases)
        finally:
            if args.keep:
                print(
                    f"the suite is still running: --reuse {home}; stop it with ZX_HOME={home} zx down --purge"
                )
            else:
                zx(env, "down", "--purge", timeout=300)
                if not args.reuse:
                    shutil.rmtree(home.parent, ignore_errors=True)


def trainer_artifact_ids(env: dict[str, str], home: Path, cases: list[Case]) -> dict[str, str]:
    """Model id -> the trainer's artifact id, from the gateway's registry in the suite's PostgreSQL (the
    public API does not show it; the bench needs it to end a predictor for the cold calls)."""
    import psycopg
    from zehanx_cli.postgres import EmbeddedPostgres

    postgres = EmbeddedPostgres(home, host="127.0.0.1", port=int(env["ZX_POSTGRES_PORT"]))
    ids = [c.model.id for c in cases]
    with psycopg.connect(postgres.url()) as conn:
        rows = conn.execute(
            "select id::text, trainer_artifact_id from zehanx.models where id::text = any(%s)", (ids,)
        ).fetchall()
    found = {model_id: artifact for model_id, artifact in rows if artifact}
    missing = [i for i in ids if i not in found]
    if missing:
        raise SystemExit(f"no trainer artifact id recorded for models {missing}")
    return found


if __name__ == "__main__":
    main()
