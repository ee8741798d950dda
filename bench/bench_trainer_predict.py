"""Trainer Predict, cold vs warm, on a small tabular model: the codegen template's MLP (torch) trained on
Palmer penguins (../shared/data) through a real trainer and executor (local sandbox, sessions).

    .venv/bin/python bench/bench_trainer_predict.py [--warm 50] [--cold 5]

All calls go through the trainer's gRPC server (a process), one instance per call unless said:

- cold (resident start): ReleasePredictor, then Predict: a new sandboxed predictor starts and loads the
  model for the call (``warm`` false in the response);
- warm: Predict to the model's resident predictor (``warm`` true);
- warm, batch of 100 rows;
- in-process: the same predict.py imported in this process, ``predict(state, rows)`` with no server,
  as the floor.

It prints p50 and p99 of each; the ratios are against the in-process figure of the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness import trainer_over_executor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "services"))
sys.path.insert(0, str(REPO / "tests" / "codegen"))
TOKEN = "bench-token"
METADATA = (("x-zx-service-token", TOKEN),)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ref(folder: Path, test_rows: list[dict], schema_json: str):
    from zehanx.common.v1 import dataset_pb2

    (folder / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    shas = {
        s: hashlib.sha256((folder / "data" / f"{s}.jsonl").read_bytes()).hexdigest()
        for s in ("train", "validation", "test")
    }
    return dataset_pb2.DatasetRef(
        dataset_id=str(uuid.uuid4()),
        format=dataset_pb2.DATASET_FILE_FORMAT_JSONL,
        schema_json=schema_json,
        train_uri=(folder / "data" / "train.jsonl").as_uri(),
        train_sha256=shas["train"],
        validation_uri=(folder / "data" / "validation.jsonl").as_uri(),
        validation_sha256=shas["validation"],
        test_uri=(folder / "data" / "test.jsonl").as_uri(),
        test_sha256=shas["test"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--cold", type=int, default=5)
    args = parser.parse_args()

    import grpc
    import realdata
    from google.protobuf import duration_pb2, json_format, struct_pb2
    from zehanx.common.v1 import resources_pb2
    from zehanx.trainer.v1 import trainer_service_pb2 as pb
    from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
    from zehanx_codegen.app import build_codegen
    from zehanx_codegen.convert import plan_pb, program_pb
    from zehanx_codegen.settings import CodegenSettings

    work = Path(tempfile.mkdtemp(prefix="zx-bench-predict-"))
    data = realdata.penguins(work / "datasets")
    codegen = build_codegen(CodegenSettings(time_budget_s=20.0, allow_pretrained_encoder=False))
    prompt = "classify penguin species from their measurements"
    plan = codegen.plan(prompt, data.profile)
    program = codegen.generate(prompt, plan, data.profile).program
    ref = _ref(data.folder, data.test_rows, data.schema_json)
    inputs = [{k: v for k, v in r.items() if k != data.target} for r in data.test_rows]

    with trainer_over_executor(
        work, TOKEN, sandbox_dir="/var/tmp/zx-predict-bench", uid_base=67000
    ) as address:
        with grpc.insecure_channel(address) as channel:
            stub = rpc.TrainerServiceStub(channel)
            events = list(
                stub.Train(
                    pb.TrainRequest(
                        run_id=str(uuid.uuid4()),
                        program=program_pb(program),
                        dataset=ref,
                        plan=plan_pb(plan),
                        resources=resources_pb2.Resources(
                            device=resources_pb2.DEVICE_KIND_CPU,
                            max_training_duration=duration_pb2.Duration(seconds=60),
                        ),
                    ),
                    metadata=METADATA,
                    timeout=600,
                )
            )
            result = events[-1].result
            artifact = result.artifact_id
            assert artifact, events[-1]

            def call(rows: list[dict]) -> tuple[float, pb.PredictResponse]:
                started = time.perf_counter()
                response = stub.Predict(
                    pb.PredictRequest(
                        artifact_id=artifact,
                        instances=[json_format.ParseDict(r, struct_pb2.Value()) for r in rows],
                    ),
                    metadata=METADATA,
                    timeout=120,
                )
                return time.perf_counter() - started, response

            cold, warm, batch = [], [], []
            for i in range(args.cold):
                stub.ReleasePredictor(pb.ReleasePredictorRequest(artifact_id=artifact), metadata=METADATA)
                seconds, response = call(inputs[i : i + 1])
                assert not response.warm and response.mode == pb.PREDICT_MODE_RESIDENT, response
                cold.append(seconds)
            reference = call(inputs[:100])[1]
            for i in range(args.warm):
                seconds, response = call(inputs[i % len(inputs) : i % len(inputs) + 1])
                assert response.warm, response
                warm.append(seconds)
            for _ in range(10):
                seconds, response = call(inputs[:100])
                assert response.warm and response.predictions == reference.predictions
                batch.append(seconds)

            # The floor: the same predict.py in this process.
            import asyncio

            from zehanx_trainer.artifacts import ArtifactStore, LocalBlobBackend

            async def files_of() -> dict[str, bytes]:
                store = ArtifactStore(LocalBlobBackend(work / "artifacts"))
                return await store.read_all(await store.manifest(artifact))

            model_dir = work / "model"
            for path, content in asyncio.run(files_of()).items():
                (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
                (model_dir / path).write_bytes(content)
            sys.path.insert(0, str(model_dir))
            sys.path.insert(0, str(REPO / "services" / "trainer" / "zehanx_trainer" / "zxrt_runtime"))
            spec = importlib.util.spec_from_file_location("bench_predict", model_dir / "predict.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            state = module.load(str(model_dir / "output"))
            local, local_batch = [], []
            for i in range(args.warm):
                started = time.perf_counter()
                module.predict(state, inputs[i % len(inputs) : i % len(inputs) + 1])
                local.append(time.perf_counter() - started)
            for _ in range(10):
                started = time.perf_counter()
                module.predict(state, inputs[:100])
                local_batch.append(time.perf_counter() - started)

    print(
        f"Predict on the penguins MLP (tabular template, torch), {os.cpu_count()} cores, held-out "
        f"accuracy {result.held_out_metrics.values.get('accuracy', float('nan')):.3f}"
    )
    floor = statistics.median(local)
    for name, values in (
        (f"cold: new predictor (x{len(cold)})", cold),
        (f"warm: 1 row (x{len(warm)})", warm),
        ("warm: 100 rows (x10)", batch),
        (f"in-process predict(): 1 row (x{len(local)})", local),
        ("in-process predict(): 100 rows (x10)", local_batch),
    ):
        p50, p99 = statistics.median(values), _pct(values, 0.99)
        print(f"  {name:<40} p50 {p50 * 1e3:9.2f} ms   p99 {p99 * 1e3:9.2f} ms")
    print(f"  warm 1-row p50 / in-process 1-row p50: {statistics.median(warm) / floor:.1f}x")
    print(
        f"  batched throughput, warm vs in-process: "
        f"{statistics.median(local_batch) / statistics.median(batch) * 100:.0f} %"
    )


if __name__ == "__main__":
    main()
