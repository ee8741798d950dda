"""Entry point: ``zx-crawler`` / ``python -m zehanx_crawler``."""

from __future__ import annotations

from zehanx.crawler.v1 import crawler_service_pb2_grpc as rpc
from zehanx_runtime.logging import configure_logging, get_logger
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_crawler.app import build
from zehanx_crawler.servicer import SERVICE_NAME
from zehanx_crawler.settings import CrawlerSettings


async def _main() -> None:
    settings = CrawlerSettings()
    configure_logging(settings.log_level, settings.log_json, service="crawler")
    app = build(settings)
    get_logger("zehanx.crawler").info(
        "crawler ready",
        datasets_dir=str(settings.datasets_dir),
        backend=app.backend_description,
        local_roots=[str(p) for p in settings.local_roots],
    )
    binding = ServiceBinding(rpc.add_CrawlerServiceServicer_to_server, app.servicer, SERVICE_NAME)
    await serve(settings, [binding], service_name="crawler", on_shutdown=app.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
