"""``zx keys create|list|revoke``: the gateway's API keys, managed straight in its database.

The database is the one ``ZX_GATEWAY_DATABASE_URL`` (or ``ZX_DATABASE_URL``) names, else the one the
local suite uses (``zx up``: its external URL, or the embedded PostgreSQL, which must be running). The
gateway's admin facade (``zehanx_gateway.admin``: its own migrations, store and key check) is used, so a
key made here works at once on every gateway replica, and a key revoked here stops working at once. A
key is shown once, when it is created; only its SHA-256 is stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from zehanx_gateway.admin import Admin, ApiKey, CreatedKey, configured_database_url, open_registry
from zehanx_runtime.errors import DomainError

from zehanx_cli.errors import LaunchError
from zehanx_cli.postgres import EmbeddedPostgres
from zehanx_cli.settings import LauncherSettings

T = TypeVar("T")

app = typer.Typer(help="API keys for the gateway: create, list, revoke.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def database_url() -> str:
    """The gateway's database URL, from the environment or the local suite."""
    try:
        configured = configured_database_url()
    except ValidationError as exc:
        raise LaunchError(f"invalid gateway settings: {exc}") from None
    if configured is not None:
        return configured

    launcher = LauncherSettings()
    if launcher.gateway_database_url is not None:
        return launcher.gateway_database_url.get_secret_value()
    postgres = EmbeddedPostgres(
        launcher.home, host=launcher.host, port=launcher.postgres_port, os_user=launcher.postgres_user
    )
    if not postgres.password_file.exists() or not postgres.ready():
        raise LaunchError(
            f"no database to keep keys in: the embedded PostgreSQL of {launcher.home} is not running. "
            "Start the suite with `zx up --detach`, or set ZX_GATEWAY_DATABASE_URL."
        )
    return postgres.url()


def with_admin(action: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``action`` on the gateway's database (:func:`database_url`); an error is printed, exit 1."""
    url = database_url()

    async def run() -> T:
        async with open_registry(url) as admin:
            return await action(admin)

    try:
        return asyncio.run(run())
    except (LaunchError, RuntimeError, DomainError) as exc:
        err_console.print(Text.assemble(("error:", "bold red"), f" {exc}"))
        raise typer.Exit(1) from None


@app.command()
def create(
    user: Annotated[str, typer.Option("--user", "-u", help="Owner of the key (made on first use).")],
    label: Annotated[str, typer.Option("--label", "-l", help="A note to recognise the key by.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Create an API key for USER and print it (once: it is not stored, only its hash)."""
    if not user.strip() or len(user) > 200:
        err_console.print("[bold red]error:[/] --user must be 1 to 200 characters")
        raise typer.Exit(2)
    if len(label) > 200:
        err_console.print("[bold red]error:[/] --label must be at most 200 characters")
        raise typer.Exit(2)

    async def action(admin: Admin) -> CreatedKey:
        return await admin.create_key(user.strip(), label)

    created = with_admin(action)
    key_id, user_id, token = created.key.id, str(created.key.user_id), created.token
    if as_json:
        print(json.dumps({"id": key_id, "user": user.strip(), "user_id": user_id, "key": token}))
        return
    console.print(Text.assemble("API key ", (key_id, "bold"), f" for {user.strip()} ({user_id}):"))
    print(token)
    err_console.print(
        "Keep it secret; it is shown only now. Send it as 'authorization: Bearer <key>'.", highlight=False
    )


@app.command("list")
def list_keys(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """List API keys (ids, owners, labels, when made and revoked; never the keys)."""

    async def action(admin: Admin) -> list[ApiKey]:
        return await admin.list_keys(user)

    keys = with_admin(action)
    if as_json:
        rows = [
            {
                "id": k.id,
                "user": k.user_name,
                "user_id": str(k.user_id),
                "label": k.label,
                "create_time": k.create_time.isoformat(),
                "revoke_time": k.revoke_time.isoformat() if k.revoke_time else None,
            }
            for k in keys
        ]
        print(json.dumps(rows))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "USER", "LABEL", "CREATED", "STATUS"):
        table.add_column(column)
    for k in keys:
        status = (
            Text(f"revoked {k.revoke_time:%Y-%m-%d %H:%M}", style="red")
            if k.revoke_time
            else Text("active", style="green")
        )
        # Labels and user names are the users' own text (CreateApiKey): cells of plain text, not markup.
        table.add_row(
            Text(k.id),
            Text(k.user_name or str(k.user_id)),
            Text(k.label),
            f"{k.create_time:%Y-%m-%d %H:%M}",
            status,
        )
    console.print(table)


@app.command()
def revoke(
    key: Annotated[str, typer.Argument(help="The key's id (as `zx keys list` shows it) or the key itself.")],
) -> None:
    """Revoke an API key: every gateway refuses it from the next call on."""

    async def action(admin: Admin) -> ApiKey:
        return await admin.revoke_key(key)

    revoked = with_admin(action)
    console.print(
        f"revoked {revoked.id} ({revoked.user_name or revoked.user_id})", highlight=False, markup=False
    )
