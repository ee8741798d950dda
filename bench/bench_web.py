"""Web dashboard benchmark: what the browser gets, measured in Debian's Chromium against a real gateway.

    .venv/bin/python bench/bench_web.py [--events 5000] [--loads 5]

1. Bundle: web/dist's script and stylesheet, raw and gzip -9 (target: ≤ 150 kB gzip in all).
2. WatchJob events per second a browser page receives through the Connect edge (connect-web and the
   generated client, the dashboard's own stack, counting every message in the page), against the same
   stream through the gRPC port (grpc.aio) in the same run: a SUCCEEDED job with ``--events`` stored
   log events replayed from sequence 0, best of 3 per door.
3. Page load to the first chart point: the dashboard's job page of a RUNNING job whose training metrics
   are stored, signed in, from navigation start to the first point drawn in the chart (median of
   ``--loads`` fresh loads).

The gateway (embedded PostgreSQL, gRPC server, edge) and the browser driver share this process's event
loop; the events are real rows of the real store, published through the gateway's own job service.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
from playwright.async_api import async_playwright
from zehanx.common.v1 import metrics_pb2
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx.gateway.v1 import job_event_pb2
from zehanx_gateway.app import Gateway
from zehanx_gateway.auth import new_api_key
from zehanx_runtime.logging import configure_logging

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_edge import log_event, watch_grpc  # noqa: E402
from served_gateway import served_gateway, stored_job  # noqa: E402

DIST = REPO / "web" / "dist"
CHROMIUM = "/usr/bin/chromium"
BUNDLE_TARGET_GZIP = 150_000
PASSWORD = "bench password 1234"


def bundle_sizes() -> None:
    if not (DIST / "app.js").is_file():
        raise SystemExit(f"{DIST / 'app.js'} is missing: run make setup (scripts/build_web.sh)")
    total_raw = total_gzip = 0
    print("Bundle (web/dist):")
    for path in sorted([*DIST.glob("*.js"), *DIST.glob("*.css"), *DIST.glob("*.html")]):
        data = path.read_bytes()
        packed = len(gzip.compress(data, compresslevel=9))
        total_raw += len(data)
        total_gzip += packed
        print(f"  {path.name:<12} {len(data):>9,} B raw {packed:>9,} B gzip")
    verdict = "met" if total_gzip <= BUNDLE_TARGET_GZIP else "MISSED"
    print(f"  {'all':<12} {total_raw:>9,} B raw {total_gzip:>9,} B gzip   target ≤ 150 kB gzip: {verdict}")


def bench_page_script(tmp: Path) -> str:
    """bench/web/watch_bench.ts bundled by esbuild (with the dashboard's generated client)."""
    out = tmp / "watch_bench.js"
    subprocess.run(
        [
            str(REPO / "node_modules" / ".bin" / "esbuild"),
            str(REPO / "bench" / "web" / "watch_bench.ts"),
            "--bundle",
            "--format=iife",
            "--target=es2020",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        check=True,
        cwd=REPO,
    )
    return out.read_text()


def metrics_event(step: int, loss: float) -> job_event_pb2.JobEvent:
    return job_event_pb2.JobEvent(
        training_metrics=metrics_pb2.TrainingMetrics(step=step, epoch=1, loss=loss, samples_per_second=100.0)
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=True)
    bundle_sizes()
    with tempfile.TemporaryDirectory(prefix="zx-bench-web-") as tmp_name:
        tmp = Path(tmp_name)
        script = bench_page_script(tmp)
        async with served_gateway(tmp, edge=True, jwt_secret="bench-secret-" + "x" * 40) as served:
            assert served.edge is not None
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{served.server.port}")
            try:
                await run(args, served.gateway, rpc.GatewayServiceStub(channel), served.edge.url, script)
            finally:
                await channel.close()


async def run(args: argparse.Namespace, gateway: Gateway, stub: Any, url: str, script: str) -> None:
    user_id = await gateway.registry.user_by_name("bench", create=True)
    key = new_api_key()
    await gateway.registry.add_api_key(user_id, key.key_id, key.secret_sha256, "bench")
    auth = (("authorization", f"Bearer {key.token}"),)
    replay_id = await stored_job(gateway, stub, auth, [log_event(n) for n in range(args.events)], end=True)

    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context()
            page = await context.new_page()

            async def bench_files(route: Any) -> None:
                if route.request.url.endswith(".js"):
                    await route.fulfill(body=script, content_type="text/javascript")
                else:
                    html = '<!doctype html><meta charset="utf-8"><script src="watch_bench.js"></script>'
                    await route.fulfill(body=html, content_type="text/html")

            await page.route(f"{url}/__bench__/**", bench_files)
            await page.goto(f"{url}/__bench__/index.html")
            page_rates, grpc_rates = [], []
            for _ in range(3):
                result = await page.evaluate(
                    "([j, t]) => window.__zxBenchWatch(j, t)", [replay_id, key.token]
                )
                if result.get("error") or result["events"] < args.events:
                    raise SystemExit(f"the page's WatchJob failed: {result}")
                page_rates.append(result["events"] / (result["ms"] / 1000))
                count, seconds = await watch_grpc(stub, replay_id, auth)
                grpc_rates.append(count / seconds)
            best_page, best_grpc = max(page_rates), max(grpc_rates)
            print(f"WatchJob replay of {args.events} events, best of 3 (events/s):")
            print(f"  gRPC port (grpc.aio)               {best_grpc:10.0f}")
            print(
                f"  browser page via the Connect edge  {best_page:10.0f}   ratio page/gRPC {best_page / best_grpc:.2f}"
            )
            await context.close()
            await first_chart_point(args, gateway, stub, auth, browser, url)
        finally:
            await browser.close()


#: Installed before the page's own script: the time (ms since navigation start) the chart first
#: showed a point, read from the job page's ``#chart[data-points]``.
FIRST_POINT_PROBE = """
window.__zxFirstPoint = null;
new MutationObserver((_, observer) => {
  const chart = document.getElementById("chart");
  if (chart && Number(chart.dataset.points || "0") > 0) {
    window.__zxFirstPoint = performance.now();
    observer.disconnect();
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-points"] });
"""


async def first_chart_point(
    args: argparse.Namespace, gateway: Gateway, stub: Any, auth: Any, browser: Any, url: str
) -> None:
    context = await browser.new_context()
    try:
        # Signed in as the dashboard signs in: a cookie session (the refresh token in the context's jar).
        answer = await context.request.post(
            f"{url}/auth/v1/signup",
            data={"email": "bench@example.org", "password": PASSWORD},
            headers={"x-zx-session": "cookie"},
        )
        if not answer.ok:
            raise SystemExit(f"sign-up failed: {answer.status} {await answer.text()}")
        token = (await answer.json())["access_token"]
        owner = (("authorization", f"Bearer {token}"),)
        events = [metrics_event(step, 2.0 / (1 + step)) for step in range(1, 51)]
        job_id = await stored_job(gateway, stub, owner, events, end=False)
        await context.add_init_script(FIRST_POINT_PROBE)
        times = []
        for _ in range(args.loads):
            page = await context.new_page()
            await page.goto(f"{url}/jobs/{job_id}")
            # Polled from outside: the page's CSP (no eval) refuses wait_for_function's predicate.
            first = None
            for _ in range(600):
                first = await page.evaluate("window.__zxFirstPoint")
                if first is not None:
                    break
                await asyncio.sleep(0.05)
            if first is None:
                raise SystemExit("the job page drew no chart point within 30 s")
            times.append(first)
            await page.close()
        print(f"Page load to the first chart point of a running job ({args.loads} fresh loads, ms):")
        print(
            f"  median {statistics.median(times):7.0f}   min {min(times):7.0f}   max {max(times):7.0f}"
            "   (navigation start → the point drawn; session restore, WatchJob and rendering included)"
        )
    finally:
        await context.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
