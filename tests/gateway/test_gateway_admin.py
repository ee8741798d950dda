"""The operators' facade (``zehanx_gateway.admin``) on a real database: ``zx up``'s local key is kept while
the gateway's own key check accepts it and replaced when it does not."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from zehanx_cli import account
from zehanx_cli.settings import LauncherSettings
from zehanx_gateway.admin import ApiKey, open_registry


def keys_of(database_url: str, user: str) -> list[ApiKey]:
    async def listed() -> list[ApiKey]:
        async with open_registry(database_url) as admin:
            return await admin.list_keys(user)

    return asyncio.run(listed())


def test_the_local_key_is_kept_while_it_works_and_replaced_when_it_does_not(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZX_USER", raising=False)
    settings = LauncherSettings(home=tmp_path)
    path = account.key_file(settings)
    assert account.ensure_local_key(settings, database_url) is True
    first = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert account.ensure_local_key(settings, database_url) is False
    assert path.read_text().strip() == first

    key_id = first.split("_")[1]
    path.write_text(f"zx_{key_id}_{'A' * 43}\n")  # its id, another secret: refused by the check
    assert account.ensure_local_key(settings, database_url) is True
    second = path.read_text().strip()
    assert second != first

    async def revoke() -> None:
        async with open_registry(database_url) as admin:
            await admin.revoke_key(second)

    asyncio.run(revoke())
    assert account.ensure_local_key(settings, database_url) is True
    third = path.read_text().strip()
    path.write_text("not a key\n")
    assert account.ensure_local_key(settings, database_url) is True
    fourth = path.read_text().strip()

    keys = keys_of(database_url, "local")
    assert [(k.id, k.label, k.revoke_time is not None) for k in keys] == [
        (token.split("_")[1], "made by zx up", token == second) for token in (first, second, third, fourth)
    ]
