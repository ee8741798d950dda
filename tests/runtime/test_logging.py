"""What the logs may carry: a logged exception keeps its traceback frames but never the frames' local
variables, which hold API keys, users' provider keys, passwords and tokens."""

from __future__ import annotations

import json
import uuid

import pytest
from zehanx_runtime.logging import configure_logging, get_logger


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "console"])
def test_a_logged_exception_has_its_frames_and_none_of_their_locals(
    capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    configure_logging("info", json=as_json)
    secret = "gsk_" + uuid.uuid4().hex  # made at run time: the console shows source lines around a frame
    try:

        def call_groq(api_key: str) -> None:
            token = "zx_" + api_key[::-1]  # noqa: F841 (a local that must not be logged)
            raise RuntimeError("the provider answered 500")

        try:
            call_groq(secret)
        except RuntimeError:
            get_logger("test").exception("call failed")
        out = capsys.readouterr().err
    finally:
        configure_logging("warning", json=True)
    assert secret not in out and secret[::-1] not in out and secret[4:20] not in out
    assert "the provider answered 500" in out and "call_groq" in out, "the traceback is there"
    if not as_json:
        return
    line = out.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "call failed"
    frames = record["exception"][0]["frames"]
    assert [f["name"] for f in frames][-1] == "call_groq", "the traceback is there"
    assert "the provider answered 500" in line
    assert all(not f.get("locals") for f in frames)
