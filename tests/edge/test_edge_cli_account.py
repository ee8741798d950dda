"""``zx account password``: the CLI's ``local`` user gets an email and password, and signing in with them
over the edge shows that user's jobs (what ``make demo`` trained), not an empty new account."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from edge_support import Edge

PASSWORD = "correct horse battery staple"


async def zx_account(database_url: str, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env["ZX_GATEWAY_DATABASE_URL"] = database_url
    zx = str(Path(sys.executable).with_name("zx"))
    return await asyncio.to_thread(
        subprocess.run,
        [zx, "account", "password", "--password-stdin", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def sign_in(edge: Edge, email: str, password: str = PASSWORD) -> dict:
    answer = await edge.http.post(
        "/auth/v1/token", params={"grant_type": "password"}, json={"email": email, "password": password}
    )
    return {"status": answer.status_code, **answer.json()}


async def test_the_local_user_signs_in_to_the_dashboard_and_sees_its_jobs(
    edge: Edge, database_url: str
) -> None:
    local_key = await edge.api_key("local")  # what zx up makes
    job = await edge.call("CreateJob", {"job": {"prompt": "Classify handwritten digits"}}, local_key)

    done = await zx_account(database_url, "--email", "Me@Example.org", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert "me@example.org" in done.stderr and PASSWORD not in done.stdout + done.stderr

    session = await sign_in(edge, "me@example.org")
    assert session["status"] == 200, session
    listed = await edge.call("ListJobs", {}, session["access_token"])
    assert [j["id"] for j in listed["jobs"]] == [job["id"]], "the same user as the CLI's key"

    # Replacing the password signs the old sessions out (their refresh tokens stop working).
    again = await zx_account(database_url, "--email", "me@example.org", stdin="another password 42\n")
    assert again.returncode == 0, again.stderr
    renewed = await edge.http.post(
        "/auth/v1/token",
        params={"grant_type": "refresh_token"},
        json={"refresh_token": session["refresh_token"]},
    )
    assert renewed.status_code == 400
    assert (await sign_in(edge, "me@example.org"))["status"] == 400
    assert (await sign_in(edge, "me@example.org", "another password 42"))["status"] == 200


async def test_bad_input_and_unknown_users_are_refused_clearly(edge: Edge, database_url: str) -> None:
    await edge.api_key("local")
    await edge.http.post("/auth/v1/signup", json={"email": "taken@example.org", "password": PASSWORD})
    short = await zx_account(database_url, "--email", "me@example.org", stdin="short\n")
    assert short.returncode == 1 and "password: must be at least 8 characters" in short.stderr
    taken = await zx_account(database_url, "--email", "taken@example.org", stdin=PASSWORD + "\n")
    assert taken.returncode == 1 and "another user's account has this email" in taken.stderr
    nobody = await zx_account(
        database_url, "--user", "nobody", "--email", "n@example.org", stdin=PASSWORD + "\n"
    )
    assert nobody.returncode == 1 and "no user named 'nobody'" in nobody.stderr
