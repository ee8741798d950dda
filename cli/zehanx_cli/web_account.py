"""``zx account password``: sign in to the dashboard as a user the CLI already has.

``zx up`` makes the ``local`` user and its API key, so the jobs ``zx train`` and ``make demo`` start
belong to ``local``. Someone who then signs up in the browser is a new, empty user. This command gives
an existing user an email and password instead (or replaces them), so signing in to the dashboard with
them shows that user's jobs, models and datasets. Works on the database ``zx keys`` uses.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from zehanx_gateway.admin import Admin

from zehanx_cli.account import DEFAULT_USER
from zehanx_cli.keys import with_admin

app = typer.Typer(help="Dashboard sign-in for users the CLI knows.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@app.command()
def password(
    email: Annotated[str, typer.Option("--email", "-e", help="The email to sign in with.")],
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="The user (default: ZX_USER, else local).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set (or replace) the email and password of USER, to sign in to the dashboard as that user."""
    name = (user or os.environ.get("ZX_USER", "") or DEFAULT_USER).strip()
    if password_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        secret = typer.prompt("Password (8 characters or more)", hide_input=True, confirmation_prompt=True)

    async def action(admin: Admin) -> str:
        return await admin.set_password(name, email, secret)  # NOT_FOUND: only users that exist

    stored = with_admin(action)
    console.print(
        f"{name} signs in to the dashboard as {stored} (their other dashboard sessions were signed out).",
        highlight=False,
        markup=False,
    )
