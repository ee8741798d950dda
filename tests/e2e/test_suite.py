"""The product as a user meets it: `zx up --detach` (every service a process, the embedded PostgreSQL),
then `zx train`, `zx download`, `zx predict` with the API key `zx up` made.

The source is ../shared/data/sentiment_labelled_sentences served over HTTP on localhost (the crawler
is told it may reach private addresses); the model must beat the classical baseline that
../shared/data/README.md lists for it (10-fold CV logistic regression, accuracy 0.838).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import EXECUTOR_WORK_DIR, REPO, SHARED
from svc_harness import free_port

pytestmark = pytest.mark.slow
ZX = [sys.executable, "-m", "zehanx_cli.main"]
SENTIMENT_BASELINE = 0.838  # ../shared/data/README.md: sentiment_labelled_sentences, 10-fold CV LR


@pytest.fixture(scope="module")
def data_server() -> Iterator[str]:
    folder = SHARED / "data"
    if not (folder / "sentiment_labelled_sentences").is_dir():
        pytest.skip(f"the shared data is not at {folder}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from zehanx_executor.sandbox.probe import probe

    caps = probe(work_dir=Path(EXECUTOR_WORK_DIR + "-suite"), probe_uid=60500 + 4)
    if not caps.ok:
        pytest.skip("this host cannot run the executor's local sandbox: " + "; ".join(caps.missing))
    home = tmp_path_factory.mktemp("zx-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env.update(
        {
            "ZX_HOME": str(home),
            **{
                f"ZX_{name.upper()}_PORT": str(free_port())
                for name in ("gateway", "crawler", "codegen", "executor", "trainer", "postgres")
            },
            "ZX_EXECUTOR_WORK_DIR": EXECUTOR_WORK_DIR + "-suite",
            "ZX_EXECUTOR_UID_BASE": "60500",
            "ZX_EXECUTOR_MAX_CONCURRENT": "4",
            "ZX_CRAWLER_ALLOW_PRIVATE_NETWORKS": "true",
            "COLUMNS": "160",
        }
    )
    up = subprocess.run(
        [*ZX, "up", "--detach"], env=env, cwd=REPO, capture_output=True, text=True, timeout=240
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        key = home / "api-key"
        assert key.stat().st_mode & 0o777 == 0o600, "the API key zx up made is private"
        yield env
    finally:
        subprocess.run([*ZX, "down", "--purge"], env=env, cwd=REPO, capture_output=True, timeout=120)


def zx(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZX, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_a_prompt_with_a_local_server_source_trains_a_model_that_beats_the_baseline_and_downloads_and_predicts(
    suite: dict[str, str], data_server: str, tmp_path: Path
) -> None:
    source = f"{data_server}/sentiment_labelled_sentences/"
    trained = zx(suite, "train", "Create a sentiment analysis model", "--source", source, timeout=290)
    assert trained.returncode == 0, trained.stdout[-4000:] + trained.stderr[-2000:]
    for stage in ("CRAWLING", "GENERATING", "TRAINING", "EVALUATING", "PUBLISHING", "SUCCEEDED"):
        assert stage in trained.stdout
    assert "Held-out test split" in trained.stdout

    models = json.loads(zx(suite, "models", "--json").stdout)
    assert len(models) == 1
    model = models[0]
    accuracy = model["heldOutMetrics"]["values"]["accuracy"]
    baseline = model["baselineMetrics"]["values"]["accuracy"]
    print(
        f"held-out accuracy {accuracy:.4f}; majority baseline {baseline:.4f}; README baseline {SENTIMENT_BASELINE}"
    )
    assert accuracy > baseline
    assert accuracy > SENTIMENT_BASELINE, (
        f"held-out accuracy {accuracy:.4f} does not beat {SENTIMENT_BASELINE}"
    )

    out = tmp_path / "model"
    downloaded = zx(suite, "download", model["id"], "-o", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    assert "verified sha256 " + model["archiveSha256"] in downloaded.stdout.replace("\n", " ")
    assert (out / "MODEL_CARD.md").is_file() and (out / "train.py").is_file()

    predicted = zx(
        suite, "predict", model["id"], "I loved it, a wonderful film", "Terrible, a waste of money"
    )
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines() if line.strip()]
    assert len(rows) == 2 and all(r["prediction"] is not None for r in rows)
