"""Entry point: ``zx-trainer`` / ``python -m zehanx_trainer``."""

from __future__ import annotations

from zehanx.trainer.v1 import trainer_service_pb2_grpc as rpc
from zehanx_runtime.placeholder import not_built_servicer
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_trainer.settings import TrainerSettings

SERVICE_NAME = "zehanx.trainer.v1.TrainerService"


async def _main() -> None:
    settings = TrainerSettings()
    # The trainer capability is issue #3; until it lands every RPC answers UNIMPLEMENTED.
    servicer = not_built_servicer(rpc.TrainerServiceServicer, SERVICE_NAME, "issue #3")
    binding = ServiceBinding(rpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)
    await serve(settings, [binding], service_name="trainer")


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
