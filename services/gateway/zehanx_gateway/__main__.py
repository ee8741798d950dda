"""Entry point: ``zx-gateway`` / ``python -m zehanx_gateway``."""

from __future__ import annotations

import asyncio

from zehanx_runtime.logging import configure_logging, get_logger
from zehanx_runtime.server import run, serve

from zehanx_gateway.app import Gateway, server_credentials
from zehanx_gateway.edge import EdgeSettings, serve_edge
from zehanx_gateway.metrics import refresh_job_gauges
from zehanx_gateway.orchestrator.runner import start_workers
from zehanx_gateway.orchestrator.settings import OrchestratorSettings
from zehanx_gateway.settings import GatewaySettings


async def _main() -> None:
    settings = GatewaySettings()
    worker_settings = OrchestratorSettings()
    configure_logging(settings.log_level, settings.log_json, service="gateway")
    edge_settings = EdgeSettings()
    credentials = server_credentials(settings)  # TLS files unreadable: fail before anything starts
    gateway = await Gateway.open(settings)
    # The browser edge: the same servicer and authenticator over Connect (HTTP/1.1) on its own port.
    try:
        edge = await serve_edge(gateway, edge_settings) if edge_settings.edge_enabled else None
    except BaseException:
        await gateway.close()
        raise
    if edge is not None:
        get_logger("zehanx.edge").info("edge serving", url=edge.url, protocols=["connect", "grpc-web"])
    # The job workers run in the serving process (not inside Gateway.open, so that tests of the API
    # alone see their jobs stay QUEUED); ZX_GATEWAY_WORKERS=0 serves the API without running jobs.
    workers = start_workers(gateway, worker_settings)
    # Jobs by state and the queue's age, read from PostgreSQL for /metrics while a metrics port is set.
    gauges = (
        asyncio.create_task(refresh_job_gauges(gateway.registry), name="zx-job-gauges")
        if settings.metrics_port is not None
        else None
    )

    async def shutdown() -> None:
        if gauges is not None:
            gauges.cancel()
        if edge is not None:
            await edge.stop(settings.grace_seconds)
        await workers.close()
        await gateway.close()

    # The gateway is the public door: it authenticates users (API keys, JWTs) on every call instead of
    # checking the internal service token.
    try:
        await serve(
            settings,
            [gateway.binding()],
            service_name="gateway",
            internal=False,
            on_shutdown=shutdown,
            extra_check=gateway.authenticator.check,
            credentials=credentials,
        )
    except BaseException:
        await shutdown()
        raise


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
