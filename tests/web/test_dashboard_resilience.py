"""The dashboard when things go wrong, in Debian's Chromium against the real suite (zx up --detach):

- the gateway process dies (SIGKILL) while a job trains: the page says plainly that the gateway is not
  reachable, and when ``zx up`` brings the gateway back the same page (no reload) resumes watching from
  the last sequence it applied: the chart ends with exactly the job's stored training-metric events,
  each once, though the job was taken up again by the restarted gateway;
- the session dies for real (the refresh cookie gone, the gateway refusing an expired token): the next
  call sends the user to sign in, and the prompt they had typed is still there once they are back.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import jwt
import pytest
from e2e_support import zx
from web_support import (
    PASSWORD,
    SERVICE,
    WebSuite,
    email,
    new_page,
    no_csp_violations,
    shot,
    sign_up,
    start_job,
)

pytestmark = pytest.mark.slow
ENDED = "() => ['SUCCEEDED','FAILED','CANCELLED'].includes(document.getElementById('job-state')?.textContent)"


def gateway_pid(suite: WebSuite) -> int:
    """The gateway's pid as `zx up` recorded it in $ZX_HOME/run/state.json."""
    state = json.loads((suite.home / "run" / "state.json").read_text())
    return next(int(r["pid"]) for r in state["records"] if r["name"] == "gateway")


def test_a_killed_gateway_shows_the_banner_and_the_same_page_resumes_the_chart_without_gap_or_duplicate(
    web_browser: Any, web_suite: WebSuite, data_server: str
) -> None:
    page = new_page(web_browser)
    address = email()
    sign_up(page, web_suite.url, address, PASSWORD)
    token = web_suite.session(address, PASSWORD)
    job_id = start_job(
        page,
        "Predict the outcome, rain or dry, from temperature and humidity",
        f"{data_server}/weather.csv",
        epochs=300,
    )
    # A few points in, mid-run (300 epochs of this table train for well over the time this takes).
    page.wait_for_function(
        "() => (window.__zxCounts || []).some(c => c.points >= 3 && c.state === 'RUNNING')", timeout=180_000
    )
    page.evaluate("window.__zxSamePage = true")  # gone if anything reloads the page
    assert page.locator("#job-stage").text_content() == "· TRAINING"

    gateway = gateway_pid(web_suite)
    os.kill(gateway, signal.SIGKILL)
    banner = page.locator("#banner")
    banner.wait_for(state="visible", timeout=30_000)
    assert "gateway is not reachable" in banner.text_content()
    page.wait_for_function("() => document.getElementById('chart').dataset.watch === 'reconnecting'")
    points_while_down = int(page.locator("#chart").get_attribute("data-points"))
    with pytest.raises(httpx.TransportError):
        httpx.get(web_suite.url + "/config.json", timeout=5)  # really down, not just slow
    shot(page, "job-gateway-down")

    up = zx(web_suite.env, "up", "--detach", timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "gateway" in up.stdout and "starting it again" in up.stdout, up.stdout
    banner.wait_for(state="hidden", timeout=60_000)
    page.wait_for_function(ENDED, timeout=300_000)
    assert page.evaluate("window.__zxSamePage") is True, "the page was reloaded"
    assert page.locator("#job-state").text_content() == "SUCCEEDED", page.locator("#job-error").text_content()

    job = web_suite.rpc("GetJob", {"jobId": job_id}, token)
    assert job["attempt"] == 2, "the restarted gateway took the job over after the lease expired"
    shown = [int(s) for s in page.locator("#chart").get_attribute("data-sequences").split(",")]
    stored = web_suite.training_sequences(job_id, token)
    assert shown == stored, (shown, stored)
    assert len(set(shown)) == len(shown) == int(page.locator("#chart").get_attribute("data-points"))
    assert len(shown) > points_while_down, "the chart gained the resumed run's points"
    print(f"chart: {points_while_down} points when the gateway died, {len(shown)} at the end")
    no_csp_violations(page)


def expired_token(suite: WebSuite, token: str) -> str:
    """The same user's token, expired a minute ago: as the identity provider's (HS256 with the suite's
    ZX_GATEWAY_JWT_SECRET, ``aud`` authenticated), since the dashboard's own sessions are signed with a
    key only the gateway holds."""
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(time.time())
    claims.pop("iss", None)
    claims.update(aud="authenticated", iat=now - 960, exp=now - 60)
    return jwt.encode(claims, suite.jwt_secret(), algorithm="HS256")


def test_an_expired_session_goes_to_sign_in_and_the_typed_prompt_survives(
    web_browser: Any, web_suite: WebSuite
) -> None:
    page = new_page(web_browser)
    address = email()
    sign_up(page, web_suite.url, address, PASSWORD)
    prompt = "Tell apart spam and ham text messages <keep this typed>"
    page.get_by_label("What should the model do?").fill(prompt)

    token = web_suite.session(address, PASSWORD)
    expired = expired_token(web_suite, token)
    refused = httpx.post(
        f"{web_suite.url}{SERVICE}/ListJobs", json={}, headers={"authorization": f"Bearer {expired}"}
    )
    assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated", refused.text
    assert "expired" in refused.json()["message"]

    # The session dies for real: no refresh cookie, and every API call carries the expired token.
    page.context.clear_cookies()
    answers: list[int] = []

    def with_expired_token(route: Any) -> None:
        route.continue_(headers={**route.request.headers, "authorization": f"Bearer {expired}"})

    page.route(f"**{SERVICE}/**", with_expired_token)
    page.on("response", lambda r: answers.append(r.status) if SERVICE in r.url else None)
    page.get_by_role("button", name="Train").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    assert "/signin?next=" in page.url
    assert 401 in answers, answers  # the gateway itself refused the token
    page.unroute(f"**{SERVICE}/**")

    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Train a model").wait_for()
    assert page.get_by_label("What should the model do?").input_value() == prompt
    assert web_suite.rpc("ListJobs", {}, token).get("jobs", []) == [], (
        "no job was created by the refused call"
    )
    no_csp_violations(page)


def test_after_an_expired_session_another_user_does_not_get_the_typed_prompt(
    web_browser: Any, web_suite: WebSuite
) -> None:
    page = new_page(web_browser)
    first, second = email(), email()
    sign_up(page, web_suite.url, first, PASSWORD)
    page.get_by_label("What should the model do?").fill("Predict churn from our private CRM export")
    expired = expired_token(web_suite, web_suite.session(first, PASSWORD))
    page.context.clear_cookies()
    page.route(
        f"**{SERVICE}/**",
        lambda route: route.continue_(
            headers={**route.request.headers, "authorization": f"Bearer {expired}"}
        ),
    )
    page.get_by_role("button", name="Train").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    page.unroute(f"**{SERVICE}/**")

    assert "private CRM" in (page.evaluate("sessionStorage.getItem('zx.draft')") or "")

    # Someone else signs in on this tab: the first user's draft is not theirs to see.
    sign_up(page, web_suite.url, second, PASSWORD)
    assert page.get_by_label("What should the model do?").input_value() == ""
    assert page.evaluate("sessionStorage.getItem('zx.draft')") is None
    no_csp_violations(page)
