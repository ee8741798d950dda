"""What zx up gives the gateway and the crawler for the dashboard's account data: a secrets key that
seals users' provider keys (made once in ZX_HOME, mode 0600, like jwt-secret), and the gateway's upload
folder among the folders the crawler may read (added to the operator's own ZX_CRAWLER_LOCAL_ROOTS)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from zehanx_cli.errors import LaunchError
from zehanx_cli.settings import LauncherSettings
from zehanx_cli.suite import Suite


def _suite(home: Path) -> Suite:
    return Suite(LauncherSettings(home=home), say=lambda _line: None)


def test_the_gateway_gets_a_secrets_key_made_once_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZX_GATEWAY_SECRETS_KEY", raising=False)
    suite = _suite(tmp_path)
    first = suite._child_env("gateway", "token", None)["ZX_GATEWAY_SECRETS_KEY"]
    key_file = tmp_path / "secrets-key"
    assert key_file.read_text().strip() == first and len(first) >= 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert suite._child_env("gateway", "token", None)["ZX_GATEWAY_SECRETS_KEY"] == first  # kept, not remade
    assert "ZX_GATEWAY_SECRETS_KEY" not in suite._child_env("crawler", "token", None)
    monkeypatch.setenv("ZX_GATEWAY_SECRETS_KEY", "the-operators-own-key-0123456789")
    assert (
        suite._child_env("gateway", "token", None)["ZX_GATEWAY_SECRETS_KEY"]
        == "the-operators-own-key-0123456789"
    )


def test_the_crawler_may_read_the_upload_folder_besides_the_operators_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZX_GATEWAY_UPLOAD_DIR", raising=False)
    monkeypatch.delenv("ZX_CRAWLER_LOCAL_ROOTS", raising=False)
    suite = _suite(tmp_path)
    assert json.loads(suite._child_env("crawler", "token", None)["ZX_CRAWLER_LOCAL_ROOTS"]) == [
        str(tmp_path / "uploads")
    ]
    monkeypatch.setenv("ZX_CRAWLER_LOCAL_ROOTS", json.dumps(["/srv/data"]))
    monkeypatch.setenv("ZX_GATEWAY_UPLOAD_DIR", str(tmp_path / "elsewhere"))
    assert json.loads(suite._child_env("crawler", "token", None)["ZX_CRAWLER_LOCAL_ROOTS"]) == [
        "/srv/data",
        str(tmp_path / "elsewhere"),
    ]
    monkeypatch.setenv("ZX_CRAWLER_LOCAL_ROOTS", "/srv/data")  # not JSON: said plainly, not guessed
    with pytest.raises(LaunchError, match="JSON list"):
        suite._child_env("crawler", "token", None)
