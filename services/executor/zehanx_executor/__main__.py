"""Entry point: ``zx-executor`` / ``python -m zehanx_executor``.

Starts only when the host can sandbox (or E2B is configured); otherwise it exits with a message that
names what is missing.
"""

from __future__ import annotations

from zehanx.executor.v1 import executor_service_pb2_grpc as rpc
from zehanx_runtime.logging import configure_logging
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_executor.app import build_executor
from zehanx_executor.sandbox.local import become_subreaper
from zehanx_executor.servicer import SERVICE_NAME, ExecutorServicer
from zehanx_executor.settings import ExecutorSettings


async def _main() -> None:
    settings = ExecutorSettings()
    configure_logging(settings.log_level, settings.log_json, service="executor")
    executor = await build_executor(settings)
    # From now on orphaned sandbox processes come to us and each run reaps its own at once (after the
    # host probe, whose own orphans are left to init).
    become_subreaper()
    binding = ServiceBinding(
        rpc.add_ExecutorServiceServicer_to_server, ExecutorServicer(executor), SERVICE_NAME
    )
    await serve(settings, [binding], service_name="executor", on_shutdown=executor.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
