"""Entry point: ``zx-gateway`` / ``python -m zehanx_gateway``."""

from __future__ import annotations

from zehanx_runtime.logging import configure_logging
from zehanx_runtime.server import run, serve

from zehanx_gateway.app import Gateway
from zehanx_gateway.settings import GatewaySettings


async def _main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_json, service="gateway")
    gateway = await Gateway.open(settings)
    # The gateway is the public door: it authenticates users (API keys, JWTs) on every call instead of
    # checking the internal service token.
    try:
        await serve(
            settings,
            [gateway.binding()],
            service_name="gateway",
            internal=False,
            on_shutdown=gateway.close,
            extra_check=gateway.authenticator.check,
        )
    except BaseException:
        await gateway.close()
        raise


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
