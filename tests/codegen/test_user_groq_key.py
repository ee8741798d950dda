"""A job owner's own Groq key on a codegen configured with the offline templates: that call is written
by Groq on the owner's key (a client of its own, at the configured base URL, closed after the call);
calls without a key stay on the templates. Groq is a local server answering with a recorded 401."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from zehanx_codegen.app import build_codegen
from zehanx_codegen.settings import CodegenSettings
from zehanx_runtime.errors import FailedPrecondition

USER_KEY = "gsk_owner_" + "Q7" * 20


@pytest.fixture
def groq_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(f"{self.path} {self.headers.get('Authorization')}")
            body = json.dumps(
                {
                    "error": {
                        "message": "Invalid API Key",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                }
            ).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_owners_key_writes_with_groq_even_on_the_template_backend(groq_server, penguins) -> None:
    base_url, seen = groq_server
    codegen = build_codegen(
        CodegenSettings(
            backend="template", groq_base_url=base_url, groq_max_retries=0, allow_pretrained_encoder=False
        )
    )
    plan = codegen.plan("predict the species of a penguin", penguins.profile)
    assert codegen.generate("predict the species of a penguin", plan, penguins.profile).backend == "template"
    assert seen == []
    with pytest.raises(FailedPrecondition) as refused:
        codegen.generate("predict the species of a penguin", plan, penguins.profile, groq_api_key=USER_KEY)
    assert "the job owner's own Groq key" in refused.value.message
    assert USER_KEY not in refused.value.message
    assert seen == [f"/openai/v1/chat/completions Bearer {USER_KEY}"]
