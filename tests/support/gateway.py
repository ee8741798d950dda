"""The gateway as ``zx-gateway`` starts it: its object graph and its public gRPC server (the runtime's
bootstrap, no service token, the authenticator's check) on the settings' port. Used by the gateway,
edge and TLS tests, each with its own settings and extras."""

from __future__ import annotations

from typing import Any

from zehanx_gateway.app import Gateway
from zehanx_gateway.settings import GatewaySettings
from zehanx_runtime.server import RunningServer, start_server


async def open_gateway(settings: GatewaySettings, **server_options: Any) -> tuple[Gateway, RunningServer]:
    """``server_options`` go to ``start_server`` (for example ``credentials`` for TLS)."""
    gateway = await Gateway.open(settings)
    server = await start_server(
        settings,
        [gateway.binding()],
        service_name="gateway",
        internal=False,
        extra_check=gateway.authenticator.check,
        **server_options,
    )
    return gateway, server
