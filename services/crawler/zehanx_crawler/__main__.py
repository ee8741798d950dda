"""Entry point: ``zx-crawler`` / ``python -m zehanx_crawler``."""

from __future__ import annotations

from zehanx.crawler.v1 import crawler_service_pb2_grpc as rpc
from zehanx_runtime.placeholder import not_built_servicer
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_crawler.settings import CrawlerSettings

SERVICE_NAME = "zehanx.crawler.v1.CrawlerService"


async def _main() -> None:
    settings = CrawlerSettings()
    # The crawler capability is issue #5; until it lands every RPC answers UNIMPLEMENTED.
    servicer = not_built_servicer(rpc.CrawlerServiceServicer, SERVICE_NAME, "issue #5")
    binding = ServiceBinding(rpc.add_CrawlerServiceServicer_to_server, servicer, SERVICE_NAME)
    await serve(settings, [binding], service_name="crawler")


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
