"""The edge's web serving (WebApp inside EdgeApp's routing), in process over httpx's ASGI transport: the
page and its files with a strict CSP, the app routes' fallback to index.html, /config.json in local and
Supabase mode, clear answers for a missing build, unknown files and paths outside web/dist; and the
build itself (scripts/build_web.sh --check: generated client, bundle, strict tsc).

The checks are sync tests that run their coroutine in a thread of its own: Playwright's sync API (the
session's browser in this folder) keeps an event loop running on the main thread."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from zehanx_gateway.edge.server import WebApp, content_security_policy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    root.mkdir()
    (root / "index.html").write_text('<!doctype html><script src="/app.js" defer></script>')
    (root / "app.js").write_text("console.log('app')")
    (root / "app.css").write_text("body{}")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def client(app: WebApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


def in_thread(check: Callable[[], Awaitable[None]]) -> None:
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, check()).result()  # type: ignore[arg-type]


def test_pages_and_files_carry_a_strict_csp_and_app_routes_fall_back_to_index(dist: Path) -> None:
    in_thread(lambda: _pages_and_files_carry_a_strict_csp_and_app_routes_fall_back_to_index(dist))


async def _pages_and_files_carry_a_strict_csp_and_app_routes_fall_back_to_index(dist: Path) -> None:
    async with client(WebApp(dist)) as http:
        for path in ("/", "/jobs/4b0f7a9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "/settings"):
            r = await http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
            assert "app.js" in r.text
            csp = r.headers["content-security-policy"]
            assert (
                "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            )
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
        js = await http.get("/app.js")
        assert js.headers["content-type"].startswith("text/javascript") and js.text == "console.log('app')"
        assert "content-security-policy" in js.headers
        assert (await http.get("/nope.js")).status_code == 404
        assert (await http.get("/../secret.txt")).status_code == 404
        assert (await http.get("/%2e%2e/secret.txt")).status_code == 404
        assert (await http.post("/")).status_code == 405
        head = await http.head("/")
        assert head.status_code == 200 and head.content == b""


def test_config_says_where_to_sign_in_and_the_csp_lets_the_page_reach_supabase(dist: Path) -> None:
    in_thread(lambda: _config_says_where_to_sign_in_and_the_csp_lets_the_page_reach_supabase(dist))


async def _config_says_where_to_sign_in_and_the_csp_lets_the_page_reach_supabase(dist: Path) -> None:
    async with client(WebApp(dist)) as http:
        r = await http.get("/config.json")
        assert r.json() == {"auth": {"mode": "local", "url": "/auth/v1", "anonKey": ""}}
        assert "connect-src 'self';" in r.headers["content-security-policy"]
    app = WebApp(dist, supabase_url="https://abc.supabase.co/", anon_key="anon-123")
    async with client(app) as http:
        r = await http.get("/config.json")
        assert r.json()["auth"] == {
            "mode": "supabase",
            "url": "https://abc.supabase.co/auth/v1",
            "anonKey": "anon-123",
        }
        assert (
            "connect-src 'self' https://abc.supabase.co;"
            in (await http.get("/")).headers["content-security-policy"]
        )
    assert content_security_policy().startswith("default-src 'self'")


def test_a_missing_build_answers_503_saying_to_run_make_setup(tmp_path: Path) -> None:
    in_thread(lambda: _a_missing_build_answers_503_saying_to_run_make_setup(tmp_path))


async def _a_missing_build_answers_503_saying_to_run_make_setup(tmp_path: Path) -> None:
    async with client(WebApp(tmp_path / "not-built")) as http:
        r = await http.get("/")
        assert r.status_code == 503 and "make setup" in r.text
        assert (await http.get("/config.json")).status_code == 200


def test_the_build_is_up_to_date_and_type_checks_strictly() -> None:
    done = subprocess.run(
        ["scripts/build_web.sh", "--check"], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tsc --noEmit (strict) passed" in done.stdout
    sources = "".join(p.read_text() for p in (REPO / "web" / "src").rglob("*.ts") if "gen" not in p.parts)
    assert "innerHTML" not in sources and "insertAdjacentHTML" not in sources and "eval(" not in sources
    assert "<script>" not in (REPO / "web" / "static" / "index.html").read_text()
