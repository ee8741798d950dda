"""``zx e2b build-template``: build the E2B template Zehanx's programs need, on your E2B account.

E2B's default template has neither torch nor safetensors and its sandboxes have no internet, so the
executor's E2B backend needs a template of its own (defined in
``zehanx_executor/sandbox/e2b_template.py``: CPU torch, safetensors, numpy, tokenizers and the packaged
text encoder). This command builds it through the E2B SDK's template build API and waits until it is
ready, printing E2B's build log; then ``ZX_EXECUTOR_E2B_TEMPLATE`` names it (its default is the name
built here). The API key is ``E2B_API_KEY`` (or ``ZX_EXECUTOR_E2B_API_KEY``), the domain
``ZX_EXECUTOR_E2B_DOMAIN``, as the executor reads them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
import typer
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.text import Text
from zehanx_executor.sandbox import e2b_template

app = typer.Typer(help="The E2B sandbox backend: build its template.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


class E2BCliSettings(BaseSettings):
    """The executor's E2B account settings (the same variables the executor reads)."""

    model_config = SettingsConfigDict(env_prefix="ZX_EXECUTOR_", extra="ignore")

    e2b_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ZX_EXECUTOR_E2B_API_KEY", "E2B_API_KEY")
    )
    e2b_domain: str | None = None


def _fail(message: str) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), f" {message}"))
    raise typer.Exit(1)


@app.command("build-template")
def build_template(
    name: Annotated[
        str, typer.Option(help="Template name; ZX_EXECUTOR_E2B_TEMPLATE must name it.")
    ] = e2b_template.TEMPLATE_NAME,
    cpus: Annotated[int, typer.Option(min=1, help="vCPUs of each sandbox (within your plan).")] = (
        e2b_template.DEFAULT_CPU_COUNT
    ),
    memory_mb: Annotated[int, typer.Option(min=128, help="Memory of each sandbox in MiB.")] = (
        e2b_template.DEFAULT_MEMORY_MB
    ),
    skip_cache: Annotated[bool, typer.Option(help="Rebuild every layer.")] = False,
) -> None:
    """Build the template (CPU torch, safetensors, numpy, ...) on E2B and wait until it is ready."""
    settings = E2BCliSettings()
    key = settings.e2b_api_key.get_secret_value() if settings.e2b_api_key else ""
    if not key:
        _fail("no E2B API key: set E2B_API_KEY (or ZX_EXECUTOR_E2B_API_KEY)")
    from e2b.exceptions import (
        AuthenticationException,
        BuildException,
        SandboxException,
        ServiceBusyException,
    )

    def show(line: str) -> None:
        console.print(Text(line))

    try:
        built = asyncio.run(
            e2b_template.build(
                name,
                api_key=key,
                domain=settings.e2b_domain,
                cpu_count=cpus,
                memory_mb=memory_mb,
                skip_cache=skip_cache,
                on_log=show,
            )
        )
    except AuthenticationException as exc:
        _fail(f"E2B refused the API key: {exc}")
    except (BuildException, SandboxException, ServiceBusyException) as exc:
        _fail(f"the E2B template build failed: {exc}")
    except (httpx.TransportError, OSError) as exc:
        _fail(f"E2B is unreachable: {exc}")
    console.print(
        Text(
            f"built E2B template {built.name!r} (id {built.template_id}, build {built.build_id}); "
            f"set {e2b_template.TEMPLATE_SETTING}={built.name} for the executor"
            + (" (the default)" if built.name == e2b_template.TEMPLATE_NAME else "")
        )
    )
