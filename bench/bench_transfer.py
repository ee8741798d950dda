"""Transfer benchmark: what it costs that no service reads another's disk. Every figure is measured in
this run, against a baseline measured in the same run.

    .venv/bin/python bench/bench_transfer.py [--mb 40] [--reps 5]

1. A dataset split file of ``--mb`` MB (JSONL rows), read by the trainer as it stages a run: through the
   crawler's ``ReadDatasetFile`` stream (a real crawler gRPC server on port 0, the trainer's real
   ``GrpcCrawlerFiles`` client, size and sha256 checked on arrival) vs the old way, the trainer reading
   the crawler's file from a shared disk and hashing it (``LocalDatasetFiles``). Interleaved.
2. A model archive: the trainer's ``ReadArtifact`` stream of a published artifact (a ``--mb`` MB weights
   file plus small files, zipped by the trainer) received and verified by the gateway's own
   ``receive_archive`` vs building the same zip straight from the trainer's folder in process (what the
   gateway used to do by reading that folder). Interleaved.

The ratio is stream time / shared-disk time (p50 over ``--reps``). A job stages its splits once and
publishes once, so against a training run of seconds to minutes the cost is the absolute figure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for sub in ("runtime", "gen/python", "services/crawler", "services/trainer", "services/gateway"):
    sys.path.insert(0, str(REPO / sub))

TOKEN = "bench-token"


def _write_dataset(root: Path, mb: int) -> str:
    """A crawler store folder as DatasetStore writes it; returns the train split's zx-crawler: URI."""
    line = json.dumps({"text": "a fairly ordinary review of a film " * 4, "label": "1"}) + "\n"
    data = (line * (mb * 1024 * 1024 // len(line) + 1)).encode()
    files = {
        split: {
            "path": f"{split}.jsonl",
            "rows": 0,
            "sha256": hashlib.sha256(body).hexdigest(),
            "bytes": len(body),
        }
        for split, body in (("train", data), ("validation", b"{}\n"), ("test", b"{}\n"))
    }
    schema = json.dumps({"format": "zehanx.dataset", "files": files}, indent=2).encode()
    digest = hashlib.sha256(schema).hexdigest()
    folder = root / digest
    folder.mkdir(parents=True)
    (folder / "schema.json").write_bytes(schema)
    (folder / "train.jsonl").write_bytes(data)
    (folder / "validation.jsonl").write_bytes(b"{}\n")
    (folder / "test.jsonl").write_bytes(b"{}\n")
    return f"zx-crawler:/datasets/{digest}/train.jsonl"


async def _datasets(tmp: Path, mb: int, reps: int) -> tuple[list[float], list[float], int]:
    from zehanx.crawler.v1 import crawler_service_pb2_grpc as crawler_rpc
    from zehanx_crawler.app import build as build_crawler
    from zehanx_crawler.servicer import SERVICE_NAME
    from zehanx_crawler.settings import CrawlerSettings
    from zehanx_runtime.server import ServiceBinding, start_server
    from zehanx_trainer.clients.crawler import GrpcCrawlerFiles
    from zehanx_trainer.datasets import LocalDatasetFiles

    datasets = tmp / "crawler" / "datasets"
    uri = _write_dataset(datasets, mb)
    digest = uri.split("/")[2]
    path = datasets / digest / "train.jsonl"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    settings = CrawlerSettings(
        port=0, service_token=TOKEN, data_dir=datasets, backend="local", firecrawl_api_key=None
    )
    app = build_crawler(settings)
    server = await start_server(
        settings,
        [ServiceBinding(crawler_rpc.add_CrawlerServiceServicer_to_server, app.servicer, SERVICE_NAME)],
        service_name="crawler",
    )
    remote = GrpcCrawlerFiles(f"127.0.0.1:{server.port}", TOKEN)
    local = LocalDatasetFiles([datasets])
    streamed, shared = [], []
    try:
        await remote.read(uri, sha, "warm-up", 1 << 30)
        for _ in range(reps):
            started = time.perf_counter()
            got = await remote.read(uri, sha, "train", 1 << 30)
            streamed.append(time.perf_counter() - started)
            started = time.perf_counter()
            again = await local.read(path.as_uri(), sha, "train", 1 << 30)
            shared.append(time.perf_counter() - started)
            assert got == again
    finally:
        await remote.close()
        await server.stop(None)
        await app.close()
    return streamed, shared, path.stat().st_size


async def _archives(tmp: Path, mb: int, reps: int) -> tuple[list[float], list[float], int]:
    from zehanx.trainer.v1 import trainer_service_pb2_grpc as trainer_rpc
    from zehanx_gateway.clients.pipeline import GrpcTrainer
    from zehanx_gateway.orchestrator.archive import receive_archive
    from zehanx_runtime.server import ServiceBinding, start_server
    from zehanx_trainer.app import build as build_trainer
    from zehanx_trainer.archive import build_archive
    from zehanx_trainer.servicer import SERVICE_NAME
    from zehanx_trainer.settings import TrainerSettings

    settings = TrainerSettings(port=0, service_token=TOKEN, home=tmp / "trainer", gpus=0)
    app = build_trainer(settings)
    weights = os.urandom(mb * 1024 * 1024)
    manifest = await app.store.publish(
        {"output/model.safetensors": weights, "train.py": b"print('train')\n", "MODEL_CARD.md": b"# card\n"}
    )
    server = await start_server(
        settings,
        [ServiceBinding(trainer_rpc.add_TrainerServiceServicer_to_server, app.servicer, SERVICE_NAME)],
        service_name="trainer",
    )
    client = GrpcTrainer(f"127.0.0.1:{server.port}", TOKEN)
    streamed, shared = [], []
    size = 0
    try:
        for _ in range(reps):
            started = time.perf_counter()
            archive = await receive_archive(
                manifest.artifact_id,
                client.read_artifact(manifest.artifact_id, timeout_s=120),
                spool_dir=tmp / "gateway",
            )
            streamed.append(time.perf_counter() - started)
            size = archive.size
            started = time.perf_counter()
            path, info = await build_archive(app.store, manifest.artifact_id, spool_dir=tmp / "direct")
            shared.append(time.perf_counter() - started)
            assert info.sha256 == archive.sha256
            archive.close()
            path.unlink()
    finally:
        await client.close()
        await server.stop(None)
        await app.close()
    return streamed, shared, size


def _line(what: str, streamed: list[float], shared: list[float], size: int) -> None:
    s, d = statistics.median(streamed), statistics.median(shared)
    mb = size / 1024 / 1024
    print(
        f"{what:<28} {mb:7.1f} MB   stream p50 {s * 1000:8.1f} ms ({mb / s:6.0f} MB/s)   "
        f"shared disk p50 {d * 1000:8.1f} ms ({mb / d:6.0f} MB/s)   ratio {s / d:5.2f}x"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    from zehanx_runtime.logging import configure_logging

    configure_logging("warning", json=True)
    with tempfile.TemporaryDirectory(prefix="zx-bench-transfer-") as tmp:
        streamed, shared, size = await _datasets(Path(tmp), args.mb, args.reps)
        _line("dataset split (train)", streamed, shared, size)
        streamed, shared, size = await _archives(Path(tmp), args.mb, args.reps)
        _line("model archive", streamed, shared, size)


if __name__ == "__main__":
    asyncio.run(main())
