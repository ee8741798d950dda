"""The local user's API key: made by ``zx up``, read by the commands that talk to the gateway.

``zx up`` makes a user named ``ZX_USER`` (default ``local``) and an API key for it the first time, and
keeps the key in ``ZX_HOME/api-key`` (mode 0600). A key that the database no longer knows (its data was
purged) is replaced. ``ZX_API_KEY`` in the environment takes precedence over the file.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from zehanx_gateway.admin import open_registry

from zehanx_cli.errors import LaunchError
from zehanx_cli.settings import LauncherSettings

DEFAULT_USER = "local"


def key_file(settings: LauncherSettings) -> Path:
    return settings.home / "api-key"


def read_api_key(settings: LauncherSettings) -> str:
    """The key to call the gateway with: ``ZX_API_KEY``, else the one ``zx up`` made."""
    configured = os.environ.get("ZX_API_KEY", "").strip()
    if configured:
        return configured
    path = key_file(settings)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        raise LaunchError(
            f"no API key: start the suite with `zx up` (it makes one in {path}) or set ZX_API_KEY"
        )
    return key


def ensure_local_key(settings: LauncherSettings, database_url: str) -> bool:
    """Make the local user's key unless the one in ZX_HOME/api-key still works. True when made."""
    path = key_file(settings)
    user = os.environ.get("ZX_USER", DEFAULT_USER).strip() or DEFAULT_USER

    async def run() -> str | None:
        async with open_registry(database_url) as admin:
            existing = path.read_text().strip() if path.exists() else ""
            return await admin.ensure_local_key(user, existing)

    try:
        token = asyncio.run(run())
    except Exception as exc:  # the suite runs; only the key could not be made: say why
        raise LaunchError(f"cannot make the local API key: {exc}") from exc
    if token is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    return True
