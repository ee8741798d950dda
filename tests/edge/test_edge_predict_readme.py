"""The README's serving examples (curl and Node.js through the web edge, with an API key) run as they are
written against a real gateway and edge, so they cannot rot.

The trainer behind the gateway is a gRPC TrainerService on port 0 that answers like the trainer's
predictor pool (the first call of a model cold, later ones warm) with an iris rule, and refuses
instances without the four iris columns; the real pool is tested in tests/trainer and measured in
bench/bench_serving.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from edge_support import Edge, serve, stop
from google.protobuf import duration_pb2, struct_pb2
from support.stand_in_trainer import serve_trainer
from zehanx.common.v1 import prediction_pb2
from zehanx.gateway.v1 import model_pb2
from zehanx.trainer.v1 import trainer_service_pb2 as tpb
from zehanx.trainer.v1 import trainer_service_pb2_grpc as trpc
from zehanx_gateway import convert

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_ID = "c" * 64
COLUMNS = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("node")), reason="the README examples need curl and node"
)


class IrisTrainer(trpc.TrainerServiceServicer):
    def __init__(self) -> None:
        self.resident: set[str] = set()

    async def Predict(self, request: tpb.PredictRequest, context: Any) -> tpb.PredictResponse:
        outputs = []
        for i, value in enumerate(request.instances):
            fields = value.struct_value.fields
            if set(fields) != set(COLUMNS):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"instance {i} lacks the iris columns")
            petal = fields["petal length (cm)"].number_value
            outputs.append("setosa" if petal < 2.5 else "versicolor" if petal < 5 else "virginica")
        warm = request.artifact_id in self.resident
        self.resident.add(request.artifact_id)
        return tpb.PredictResponse(
            predictions=[prediction_pb2.Prediction(output=struct_pb2.Value(string_value=o)) for o in outputs],
            predict_duration=duration_pb2.Duration(nanos=4_000_000 if warm else 800_000_000),
            warm=warm,
        )


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Edge]:
    async with serve_trainer(IrisTrainer()) as address:
        edge = await serve(database_url, tmp_path, trainer_address=address)
        try:
            yield edge
        finally:
            await stop(edge)


def readme_block(marker: str, language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```", readme, re.S)
    assert match, f"README.md lost its {marker}"
    return match.group(1)


async def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode() + out.decode()
    return out.decode()


async def test_the_readme_serving_examples_run_against_a_real_edge(served: Edge, tmp_path: Path) -> None:
    key = await served.api_key("alice")
    user_id = await served.gateway.registry.user_by_name("alice", create=False)
    info = await served.gateway.artifacts.put([b"iris weights"])
    record = model_pb2.Model(
        title="Iris species",
        archive_sha256=info.sha256,
        archive_size_bytes=info.size,
        metric_name="accuracy",
    )
    model = await served.gateway.models.publish(
        user_id, convert.new_model(record, trainer_artifact_id=ARTIFACT_ID)
    )
    env = {**os.environ, "EDGE": served.url, "KEY": key, "MODEL": str(model.id)}

    curl = ["bash", "-c", "set -euo pipefail\n" + readme_block("serving-curl-example", "sh")]
    cold = json.loads(await run(curl, env, tmp_path))
    assert [p["output"] for p in cold["predictions"]] == ["setosa", "virginica"]
    assert cold.get("warm", False) is False and cold["predictDuration"] == "0.800s"
    warm = json.loads(await run(curl, env, tmp_path))
    assert warm["warm"] is True and warm["predictDuration"] == "0.004s"
    assert warm["predictions"] == cold["predictions"]

    (tmp_path / "predict.mjs").write_text(readme_block("serving-node-example", "js"))
    printed = await run(["node", "predict.mjs", str(model.id)], env, tmp_path)
    assert printed.split() == ["versicolor", "warm", "0.004s"]
    # A key that is not valid: the example's error path throws with the Connect code.
    env["KEY"] = key[:-4] + "xxxx"
    proc = await asyncio.create_subprocess_exec(
        "node", "predict.mjs", str(model.id), cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and "unauthenticated" in err.decode()
