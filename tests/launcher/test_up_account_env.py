"""What zx up gives the gateway and the crawler for the dashboard's account data: a secrets key that
seals users' provider keys (made once in ZX_HOME, mode 0600, like jwt-secret); and no service gets
another's folder (uploads and datasets travel as gRPC streams)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
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


def test_no_service_is_handed_another_services_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads reach the crawler as a stream (PutSourceFile) and datasets reach the trainer as a stream
    (ReadDatasetFile): zx up gives the crawler no gateway folder and the trainer no crawler folder, only
    the crawler's address."""
    for name in ("ZX_CRAWLER_LOCAL_ROOTS", "ZX_TRAINER_DATASET_ROOTS", "ZX_GATEWAY_UPLOAD_DIR"):
        monkeypatch.delenv(name, raising=False)
    suite = _suite(tmp_path)
    crawler = suite._child_env("crawler", "token", None)
    trainer = suite._child_env("trainer", "token", None)
    assert "ZX_CRAWLER_LOCAL_ROOTS" not in crawler
    assert "ZX_TRAINER_DATASET_ROOTS" not in trainer
    assert trainer["ZX_TRAINER_CRAWLER_ADDRESS"] == suite.settings.address("crawler")
    monkeypatch.setenv("ZX_CRAWLER_LOCAL_ROOTS", json.dumps(["/srv/data"]))  # the operator's own: kept as is
    assert json.loads(suite._child_env("crawler", "token", None)["ZX_CRAWLER_LOCAL_ROOTS"]) == ["/srv/data"]
