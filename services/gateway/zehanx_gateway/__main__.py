"""Entry point: ``zx-gateway`` / ``python -m zehanx_gateway``."""

from __future__ import annotations

from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx_runtime.placeholder import not_built_servicer
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_gateway.settings import GatewaySettings

SERVICE_NAME = "zehanx.gateway.v1.GatewayService"


async def _main() -> None:
    settings = GatewaySettings()
    # The gateway's job registry, auth and models API are issue #6; until it lands every RPC answers
    # UNIMPLEMENTED. The gateway is the public door: it checks users, not the internal service token.
    servicer = not_built_servicer(rpc.GatewayServiceServicer, SERVICE_NAME, "issue #6")
    binding = ServiceBinding(rpc.add_GatewayServiceServicer_to_server, servicer, SERVICE_NAME)
    await serve(settings, [binding], service_name="gateway", internal=False)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
