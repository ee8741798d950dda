"""``zx doctor``: the real command (a subprocess of the installed ``zx``) names each part's backend from
the environment ``zx up`` would hand each service, says what is wrong with the variable to set, and
never prints a secret. Offline: nothing here reaches a cloud service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from zehanx_executor.sandbox.probe import probe
from zehanx_executor.settings import ExecutorSettings

CLOUD_PREFIXES = ("ZX_", "GROQ_", "FIRECRAWL_", "E2B_", "SUPABASE_")
GROQ_KEY = "gsk_" + "S3cr3tGroqKeyNeverPrinted" * 2 + "Zq42"
E2B_KEY = "e2b_" + "0f" * 20
POOLER_URL = "postgresql://postgres.abcdefghij:Pa55word-never-printed@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"


def zx_doctor(home: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLOUD_PREFIXES)}
    env.update({"ZX_HOME": str(home), "COLUMNS": "200", **variables})
    return subprocess.run(
        [str(Path(sys.executable).with_name("zx")), "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def backends(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {b["part"]: b for b in json.loads(result.stdout)["backends"]}


def test_nothing_set_names_every_embedded_backend_and_checks_the_local_sandbox(tmp_path: Path) -> None:
    result = zx_doctor(tmp_path, "--json")
    found = backends(result)
    assert found["crawler"]["backend"].startswith("local")
    assert found["codegen"]["backend"].startswith("template")
    assert found["executor"]["backend"] == "local sandbox"
    assert found["trainer store"]["backend"] == "local folder"
    assert found["trainer store"]["found"] == [str(tmp_path / "artifacts")]
    assert found["gateway database"]["backend"].startswith("embedded PostgreSQL")
    assert found["auth"]["backend"].startswith("local accounts")
    # The executor's own start-up probe decides: exit 0 where this host can sandbox, else its reasons.
    settings = ExecutorSettings()
    caps = probe(
        work_dir=settings.work_dir,
        probe_uid=settings.uid_base + settings.max_concurrent,
        prepare_cgroups=False,
    )
    problems = [p["message"] for b in found.values() for p in b["problems"]]
    if caps.ok:
        assert result.returncode == 0, result.stdout + result.stderr
        assert problems == [] and json.loads(result.stdout)["ok"] is True
        assert "bwrap /" in found["executor"]["found"][0] and "root yes" in found["executor"]["found"][0]
    else:
        assert result.returncode == 1
        assert problems == [f"local sandbox: {m}" for m in caps.missing]
        assert all(p["variable"] for p in found["executor"]["problems"])  # names the way out (E2B)
    text = zx_doctor(tmp_path)
    assert text.returncode == result.returncode
    assert "executor: local sandbox" in text.stdout and "offline checks only" in text.stdout


def test_a_publishable_supabase_key_fails_naming_the_service_key_variable(tmp_path: Path) -> None:
    result = zx_doctor(
        tmp_path,
        SUPABASE_URL="https://abcdefghij.supabase.co",
        SUPABASE_SECRET_KEY="sb_publishable_" + "p" * 30,  # passed to the trainer by zx up
    )
    assert result.returncode == 1
    assert "trainer store: Supabase Storage" in result.stdout
    assert "publishable key" in result.stdout and "set ZX_TRAINER_SUPABASE_SERVICE_KEY" in result.stdout


def test_a_secret_supabase_key_is_accepted_with_its_kind(tmp_path: Path) -> None:
    secret = "sb_secret_" + "k" * 28 + "WXYZ"
    result = zx_doctor(
        tmp_path, "--json", SUPABASE_URL="https://abcdefghij.supabase.co", SUPABASE_SERVICE_ROLE_KEY=secret
    )
    trainer = backends(result)["trainer store"]
    assert trainer["problems"] == [] and "sb_secret_…WXYZ: secret" in trainer["found"][0]
    assert "created private if missing" in trainer["found"][0]
    assert secret not in result.stdout + result.stderr


def test_a_url_on_port_6543_is_reported_as_the_transaction_pooler(tmp_path: Path) -> None:
    result = zx_doctor(tmp_path, "--json", ZX_GATEWAY_DATABASE_URL=POOLER_URL)
    database = backends(result)["gateway database"]
    assert database["backend"] == "transaction pooler" and database["problems"] == []
    assert any("ZX_GATEWAY_MIGRATION_DATABASE_URL" in line for line in database["found"])
    assert "Pa55word-never-printed" not in result.stdout + result.stderr

    direct = POOLER_URL.replace(":6543/", ":5432/")
    result = zx_doctor(tmp_path, "--json", ZX_GATEWAY_DATABASE_URL=direct)
    assert backends(result)["gateway database"]["backend"] == "PostgreSQL URL"


def test_e2b_says_whether_the_template_is_set(tmp_path: Path) -> None:
    unset = zx_doctor(tmp_path, "--json", E2B_API_KEY=E2B_KEY)
    executor = backends(unset)["executor"]
    assert executor["backend"] == "E2B" and executor["problems"] == []
    assert any(
        "ZX_EXECUTOR_E2B_TEMPLATE is unset" in w and "zx e2b build-template" in w
        for w in executor["warnings"]
    )

    named = zx_doctor(tmp_path, "--json", E2B_API_KEY=E2B_KEY, ZX_EXECUTOR_E2B_TEMPLATE="my-torch")
    executor = backends(named)["executor"]
    assert executor["warnings"] == [] and "template 'my-torch'" in executor["found"][0]
    for result in (unset, named):
        assert E2B_KEY not in result.stdout + result.stderr

    forced = zx_doctor(tmp_path, ZX_EXECUTOR_BACKEND="e2b")
    assert forced.returncode == 1 and "set E2B_API_KEY" in forced.stdout


def test_a_groq_key_is_shown_as_a_hint_with_the_token_budget(tmp_path: Path) -> None:
    result = zx_doctor(tmp_path, ZX_CODEGEN_BACKEND="groq", ZX_CODEGEN_GROQ_API_KEY=GROQ_KEY)
    assert "codegen: Groq" in result.stdout and "gsk_…Zq42" in result.stdout
    assert "8000 tokens per minute" in result.stdout and "a reply gets at most" in result.stdout
    assert GROQ_KEY not in result.stdout + result.stderr
    json_result = zx_doctor(tmp_path, "--json", ZX_CODEGEN_BACKEND="groq", ZX_CODEGEN_GROQ_API_KEY=GROQ_KEY)
    assert GROQ_KEY not in json_result.stdout + json_result.stderr

    missing = zx_doctor(tmp_path, ZX_CODEGEN_BACKEND="groq")
    assert missing.returncode == 1 and "set ZX_CODEGEN_GROQ_API_KEY" in missing.stdout


def test_online_checks_fail_clearly_when_the_service_is_unreachable(tmp_path: Path) -> None:
    # Nothing listens on this port: the online check must say so, not hang or crash.
    result = zx_doctor(
        tmp_path,
        "--online",
        ZX_CODEGEN_BACKEND="groq",
        ZX_CODEGEN_GROQ_API_KEY=GROQ_KEY,
        ZX_CODEGEN_GROQ_BASE_URL="http://127.0.0.1:9",
    )
    assert result.returncode == 1
    assert "online: Groq is unreachable from here" in result.stdout
    assert GROQ_KEY not in result.stdout + result.stderr


def test_a_short_hs256_secret_is_a_problem_because_the_gateway_would_refuse_it(tmp_path: Path) -> None:
    result = zx_doctor(tmp_path, "--json", ZX_GATEWAY_JWT_SECRET="too-short-" + "x" * 10)
    assert result.returncode == 1
    problems = backends(result)["auth"]["problems"]
    assert any("shorter than 32 bytes" in p["message"] for p in problems), problems
    assert "too-short-" not in result.stdout + result.stderr


def test_online_checks_reach_each_backend_as_its_sdk_does_and_report_what_answered(tmp_path: Path) -> None:
    """--online against local stand-ins answering as the services document: each request goes to the
    path with the header its SDK uses, and a 200 (or Storage's 404 for a bucket made on first write) is
    reported as found, with no secret printed."""
    import http.server
    import threading

    firecrawl_key = "fc-" + "9" * 32
    supabase_key = "sb_secret_" + "k" * 30
    seen: list[tuple[str, str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("authorization", ""), self.headers.get("apikey", "")))
            if self.path == "/openai/v1/models":
                # GET /openai/v1/models, Bearer key (groq/resources/models.py): {"object":"list","data":[...]}
                body, status = (
                    b'{"object":"list","data":[{"id":"openai/gpt-oss-120b","object":"model"}]}',
                    200,
                )
            elif self.path == "/v1/team/credit-usage":
                # firecrawl/v1/client.py:796-800: {"success": true, "data": {"remaining_credits": N}}
                body, status = b'{"success":true,"data":{"remaining_credits":500}}', 200
            elif self.path == "/storage/v1/bucket/zehanx-artifacts":
                # storage3 get_bucket (storage3/_sync/bucket.py:72); a missing bucket is ERRORS.NoSuchBucket,
                # which the legacy renderer sends as HTTP 400 {"statusCode":"404","error":"Bucket not found"}:
                # here the bucket exists.
                body, status = b'{"id":"zehanx-artifacts","name":"zehanx-artifacts","public":false}', 200
            else:
                body, status = b"{}", 404
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = zx_doctor(
            tmp_path,
            "--online",
            "--json",
            ZX_CODEGEN_BACKEND="groq",
            ZX_CODEGEN_GROQ_API_KEY=GROQ_KEY,
            ZX_CODEGEN_GROQ_BASE_URL=base,
            FIRECRAWL_API_KEY=firecrawl_key,
            ZX_CRAWLER_FIRECRAWL_API_URL=base,
            SUPABASE_URL=base,
            SUPABASE_SECRET_KEY=supabase_key,
        )
    finally:
        server.shutdown()
    found = backends(result)
    assert "online: Groq answered HTTP 200" in found["codegen"]["found"], found["codegen"]
    assert "online: Firecrawl answered HTTP 200" in found["crawler"]["found"], found["crawler"]
    assert "online: Supabase Storage answered HTTP 200" in found["trainer store"]["found"], found[
        "trainer store"
    ]
    assert ("/openai/v1/models", f"Bearer {GROQ_KEY}", "") in seen
    assert ("/v1/team/credit-usage", f"Bearer {firecrawl_key}", "") in seen
    assert ("/storage/v1/bucket/zehanx-artifacts", "", supabase_key) in seen  # sb_secret_: apikey only
    for secret in (GROQ_KEY, firecrawl_key, supabase_key):
        assert secret not in result.stdout + result.stderr
