"""Entry point: ``zx-trainer`` / ``python -m zehanx_trainer``."""

from __future__ import annotations

from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
from zehanx_runtime.logging import configure_logging, get_logger
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_trainer.app import build
from zehanx_trainer.servicer import SERVICE_NAME
from zehanx_trainer.settings import TrainerSettings


async def _main() -> None:
    settings = TrainerSettings()
    configure_logging(settings.log_level, settings.log_json, service="trainer")
    app = build(settings)
    get_logger("zehanx.trainer").info(
        "trainer ready",
        executor=settings.executor_address,
        artifact_store=app.store_description,
        gpus=app.trainer.config.gpus,
    )
    binding = ServiceBinding(rpc.add_TrainerServiceServicer_to_server, app.servicer, SERVICE_NAME)
    await serve(settings, [binding], service_name="trainer", on_shutdown=app.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
