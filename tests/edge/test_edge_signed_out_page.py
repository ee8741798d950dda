"""A signed-out visit to the dashboard, in Debian's Chromium against a real gateway and edge: the page
asks whether it has a session, learns it has none, and shows the sign-in form without a console error
or a failed request (its first refresh used to answer 400, which the browser logs as an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from edge_support import Edge

CHROMIUM = "/usr/bin/chromium"


async def test_a_cookie_refresh_without_a_cookie_is_no_session_and_an_api_refresh_without_a_token_is_400(
    edge: Edge,
) -> None:
    def refresh(headers: dict[str, str]) -> Any:
        return edge.http.post(
            "/auth/v1/token", params={"grant_type": "refresh_token"}, json={}, headers=headers
        )

    none = await refresh({"x-zx-session": "cookie"})
    assert (none.status_code, none.content, none.headers.get_list("set-cookie")) == (204, b"", [])
    refused = await refresh({})  # an API client (Supabase-shaped) must send its token
    assert refused.status_code == 400 and refused.json()["error_code"] == "invalid_credentials"


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: run make setup (scripts/install_browser.sh)"
)
async def test_a_signed_out_visit_shows_sign_in_without_a_console_error(edge: Edge) -> None:
    from playwright.async_api import async_playwright

    console: list[str] = []
    failed: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

            def answered(response: Any) -> None:
                if response.status >= 400:
                    failed.append(f"{response.status} {response.request.method} {response.url}")

            page.on("response", answered)
            refreshes: list[int] = []
            page.on(
                "response",
                lambda r: refreshes.append(r.status) if "grant_type=refresh_token" in r.url else None,
            )
            await page.goto(edge.edge.url + "/")
            await page.wait_for_url("**/signin*")
            await page.get_by_role("heading", name="Sign in").wait_for()
            await page.wait_for_load_state("networkidle")
        finally:
            await browser.close()
    assert refreshes == [204], "the page asked once whether it has a session, and had none"
    assert failed == []
    assert console == []
