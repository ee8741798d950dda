"""What the logs may carry: a logged exception keeps its traceback frames but never the frames' local
variables, which hold API keys, users' provider keys, passwords and tokens."""

from __future__ import annotations

import json

import pytest
from zehanx_runtime.logging import configure_logging, get_logger


def test_a_logged_exception_has_its_frames_and_none_of_their_locals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", json=True)
    try:

        def call_groq(api_key: str) -> None:
            token = "zx_" + api_key[::-1]  # noqa: F841 (a local that must not be logged)
            raise RuntimeError("the provider answered 500")

        try:
            call_groq("gsk_SECRET0123456789abcdef")
        except RuntimeError:
            get_logger("test").exception("call failed")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        configure_logging("warning", json=True)
    record = json.loads(line)
    assert record["event"] == "call failed"
    frames = record["exception"][0]["frames"]
    assert [f["name"] for f in frames][-1] == "call_groq", "the traceback is there"
    assert "the provider answered 500" in line
    assert "SECRET0123456789" not in line and "fedcba9876543210TERCES" not in line
    assert all(not f.get("locals") for f in frames)
