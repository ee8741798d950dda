"""Support of the dashboard's browser tests: the whole suite (``zx up --detach``, every service a process,
the embedded PostgreSQL) with its web edge on a free port, a local HTTP server for data sources, and
Debian's Chromium driven by Playwright's sync API (never Playwright's own browser download: offline)."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import os
import random
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
for extra in (REPO / "tests" / "e2e", REPO / "tests" / "services"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from e2e_support import EXECUTOR_SLOTS, suite_env, suite_up  # noqa: E402
from support.sandbox import require_local_sandbox  # noqa: E402
from svc_harness import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SERVICE = "/zehanx.gateway.v1.GatewayService"
#: Sandbox uids 59000-59499 (by this process's id), apart from the e2e suite's (60000) and tests' (67000).
UID_BASE = 59000 + (os.getpid() % 100) * (EXECUTOR_SLOTS + 1)
WORK_DIR = f"/var/tmp/zx-web-suite-{UID_BASE}"
MARKUP = '<img src=x onerror="window.__zxPwned=1">'
PASSWORD = "correct horse battery staple"


@dataclass
class WebSuite:
    env: dict[str, str]
    url: str
    home: Path

    def jwt_secret(self) -> str:
        return (self.home / "jwt-secret").read_text().strip()

    def session(self, email: str, password: str) -> str:
        """An access token of the account (signed in through the edge without the cookie header)."""
        r = httpx.post(
            f"{self.url}/auth/v1/token?grant_type=password", json={"email": email, "password": password}
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def rpc(self, method: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        r = httpx.post(
            f"{self.url}{SERVICE}/{method}",
            json=body,
            headers={"authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert r.status_code == 200, (method, r.status_code, r.text)
        return r.json()

    def training_sequences(self, job_id: str, token: str) -> list[int]:
        """The sequence numbers of the job's stored training-metric events of full runs (not smoke)."""
        stored: list[int] = []
        page_token = ""
        while True:
            res = self.rpc(
                "ListJobEvents", {"jobId": job_id, "pageSize": 1000, "pageToken": page_token}, token
            )
            stored += [
                int(e["sequence"])
                for e in res.get("events", [])
                if "trainingMetrics" in e and not e["trainingMetrics"].get("smoke")
            ]
            page_token = res.get("nextPageToken", "")
            if not page_token:
                return stored

    def wait_job(self, job_id: str, token: str, predicate: Any, within: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            job = self.rpc("GetJob", {"jobId": job_id}, token)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job.get('state')} {job.get('stage')}: {job}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def web_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSuite]:
    """``zx up --detach`` with a temporary ZX_HOME, free ports and the edge on a known one."""
    if not (REPO / "web" / "dist" / "index.html").is_file():
        pytest.fail("web/dist is not built: run make setup (scripts/build_web.sh)")
    require_local_sandbox(WORK_DIR, UID_BASE, EXECUTOR_SLOTS)
    home = tmp_path_factory.mktemp("zx-web-home")
    edge_port = free_port()
    env = suite_env(
        home,
        WORK_DIR,
        UID_BASE,
        ZX_GATEWAY_EDGE_PORT=str(edge_port),
        # Every test signs up users of its own from 127.0.0.1: well over the default 10 per hour
        # per address (that limit is tested in tests/edge/test_edge_sessions.py).
        ZX_GATEWAY_SIGN_UP_MAX_PER_CLIENT="10000",
    )
    with suite_up(env):
        yield WebSuite(env, f"http://127.0.0.1:{edge_port}", home)


def tabular_csv(rows: int = 480, seed: int = 7, first_column: str = "temperature") -> bytes:
    """A small, learnable two-class table: the class follows the two numeric columns plus noise."""
    rng = random.Random(seed)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([first_column, "humidity", "outcome"])
    for _ in range(rows):
        t, h = rng.uniform(0, 40), rng.uniform(0, 100)
        label = "rain" if h * 0.4 - t * 0.5 + rng.gauss(0, 3) > 5 else "dry"
        w.writerow([f"{t:.2f}", f"{h:.1f}", label])
    return out.getvalue().encode()


@pytest.fixture(scope="session")
def data_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local HTTP server of the tests' data files (the crawler may reach it: private networks allowed)."""
    folder = tmp_path_factory.mktemp("web-data")
    (folder / "weather.csv").write_bytes(tabular_csv())
    (folder / "weather2.csv").write_bytes(tabular_csv(seed=11))
    (folder / "markup.csv").write_bytes(tabular_csv(seed=3, first_column=MARKUP))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def grey_png(pixels: list[list[int]], scale: int = 1) -> bytes:
    """A minimal 8-bit greyscale PNG of rows of 0..255 values, each pixel drawn as a scale x scale block."""
    rows = [[v for v in row for _ in range(scale)] for row in pixels for _ in range(scale)]
    height, width = len(rows), len(rows[0])
    raw = b"".join(b"\0" + bytes(row) for row in rows)  # filter type 0 (none) on every scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="session")
def web_browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run make setup (scripts/install_browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


#: Installed in every page before its own script: records the chart's point counts with the job's state
#: as they change, and any Content-Security-Policy violation.
RECORDER = """
window.__zxCounts = [];
window.__zxCsp = [];
document.addEventListener('securitypolicyviolation', e => window.__zxCsp.push(e.violatedDirective + ' ' + e.blockedURI));
new MutationObserver(() => {
  const chart = document.getElementById('chart');
  const state = document.getElementById('job-state');
  if (!chart) return;
  const n = Number(chart.dataset.points || 0);
  const last = window.__zxCounts[window.__zxCounts.length - 1];
  const s = state ? state.textContent : '';
  if (!last || last.points !== n || last.state !== s) window.__zxCounts.push({points: n, state: s, at: performance.now()});
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def new_page(browser: Any, **options: Any) -> Any:
    """A page in a context of its own (its own cookies), the recorder installed."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True, **options)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.add_init_script(RECORDER)
    return page


def email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


def no_csp_violations(page: Any) -> None:
    assert page.evaluate("window.__zxCsp") == []


def shot(page: Any, name: str) -> None:
    """Screenshots of the current page at desktop and phone width (then back to desktop)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def sign_up(page: Any, url: str, email: str, password: str) -> None:
    page.goto(f"{url}/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").click()
    page.get_by_role("heading", name="Train a model").wait_for()


def start_job(page: Any, prompt: str, source: str, epochs: int | None = None) -> str:
    """Fills the dashboard's form and trains; the new job's id (from the job page's URL)."""
    page.get_by_label("What should the model do?").fill(prompt)
    page.get_by_text("Data sources (optional)").click()
    page.get_by_label("URLs, one per line").fill(source)
    if epochs is not None:
        page.locator("summary", has_text="Options").click()
        page.get_by_label("Epochs").fill(str(epochs))
    page.get_by_role("button", name="Train").click()
    page.wait_for_url("**/jobs/*")
    return page.url.rsplit("/", 1)[-1]
