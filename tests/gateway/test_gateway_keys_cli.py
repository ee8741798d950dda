"""``zx keys create|list|revoke`` against a real database, and what a served gateway makes of its keys."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from gateway_support import Served, bearer
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx_runtime.status import error_info_of

ZX = str(Path(sys.executable).with_name("zx"))


async def zx_keys(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZX_")}
    env["ZX_GATEWAY_DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run, [ZX, "keys", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_a_key_made_with_zx_works_until_zx_revokes_it(served: Served, database_url: str) -> None:
    made = await zx_keys(database_url, "create", "--user", "carol", "--label", "laptop", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["key"].startswith(f"zx_{created['id']}_")
    auth = bearer(created["key"])
    await served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)

    listed = await zx_keys(database_url, "list", "--user", "carol", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["label"], r["revoke_time"]) for r in rows] == [(created["id"], "laptop", None)]
    assert created["key"] not in listed.stdout  # the secret is never shown again

    revoked = await zx_keys(database_url, "revoke", created["id"])
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await served.stub.ListJobs(pb.ListJobsRequest(), metadata=auth)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info_of(refused.value).reason == "API_KEY_REVOKED"


async def test_zx_keys_refuses_unknown_keys_and_users_clearly(database_url: str) -> None:
    unknown = await zx_keys(database_url, "revoke", "aaaaaaaaaaaaaaaa")
    assert unknown.returncode == 1 and "no API key" in unknown.stderr
    nobody = await zx_keys(database_url, "list", "--user", "nobody-here")
    assert nobody.returncode == 1 and "no user named" in nobody.stderr
