"""Supabase mode in the browser: /config.json says Supabase, and the page signs in through Supabase Auth's
REST shape (recorded responses served by page.route: Supabase is unreachable here). The access token in
the recorded session is an HS256 JWT signed with the suite's JWT secret, so the real gateway accepts it;
the refresh token lives in sessionStorage (this tab only) and brings a session back after a reload."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from web_support import DESKTOP, RECORDER, WebSuite

pytestmark = pytest.mark.slow
SUPABASE = "https://demo-ref.supabase.co"
ANON_KEY = "recorded-anon-key"


def recorded_session(secret: str, user_id: str, email: str, refresh_token: str) -> dict[str, Any]:
    """The body Supabase Auth answers to /token (grant_type=password or refresh_token), as recorded."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "iat": now,
        "exp": now + 3600,
        "iss": f"{SUPABASE}/auth/v1",
        "session_id": str(uuid.uuid4()),
    }
    return {
        "access_token": jwt.encode(claims, secret, algorithm="HS256"),
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": now + 3600,
        "refresh_token": refresh_token,
        "user": {"id": user_id, "aud": "authenticated", "role": "authenticated", "email": email},
    }


def test_sign_in_through_supabase_auth_then_the_gateway_accepts_its_token(
    web_browser: Any, web_suite: WebSuite
) -> None:
    # The CSP the edge sends names the Supabase origin only when configured so; this suite runs local
    # accounts, so the context bypasses CSP for this one cross-origin fetch (the header is tested in
    # test_web_serving.py).
    context = web_browser.new_context(viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    page.add_init_script(RECORDER)
    secret = web_suite.jwt_secret()
    user_id, email = str(uuid.uuid4()), "sb-user@example.com"
    calls: list[tuple[str, dict[str, Any], str]] = []

    page.route(
        "**/config.json",
        lambda route: route.fulfill(
            json={"auth": {"mode": "supabase", "url": f"{SUPABASE}/auth/v1", "anonKey": ANON_KEY}}
        ),
    )

    def supabase(route: Any) -> None:
        request = route.request
        cors = {"access-control-allow-origin": "*", "access-control-allow-headers": "*"}
        if request.method == "OPTIONS":
            route.fulfill(status=204, headers=cors)
            return
        body = json.loads(request.post_data or "{}")
        calls.append((request.url, body, request.headers.get("apikey", "")))
        if "grant_type=password" in request.url and body.get("password") == "sb-password-1":
            route.fulfill(json=recorded_session(secret, user_id, email, "sb-refresh-1"), headers=cors)
        elif "grant_type=refresh_token" in request.url and body.get("refresh_token") == "sb-refresh-1":
            route.fulfill(json=recorded_session(secret, user_id, email, "sb-refresh-2"), headers=cors)
        else:
            route.fulfill(
                status=400,
                json={"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"},
                headers=cors,
            )

    page.route(f"{SUPABASE}/auth/v1/**", supabase)
    page.goto(web_suite.url + "/signin")
    page.get_by_text("Accounts are managed by Supabase Auth.").wait_for()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Invalid login credentials").wait_for()
    page.get_by_label("Password").fill("sb-password-1")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Train a model").wait_for()
    page.get_by_text("No jobs yet.").wait_for()  # ListJobs answered for the Supabase user
    assert all(apikey == ANON_KEY for _, _, apikey in calls)
    assert page.evaluate("sessionStorage.getItem('zx.supabase.refresh')") == "sb-refresh-1"

    page.reload()  # the access token was in memory only; Supabase's refresh token brings a new one
    page.get_by_role("heading", name="Train a model").wait_for()
    assert any("grant_type=refresh_token" in url for url, _, _ in calls)
    assert page.evaluate("sessionStorage.getItem('zx.supabase.refresh')") == "sb-refresh-2"
    context.close()
