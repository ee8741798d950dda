"""Entry point: ``zx-codegen`` / ``python -m zehanx_codegen``."""

from __future__ import annotations

from zehanx.codegen.v1 import codegen_service_pb2_grpc as rpc
from zehanx_runtime.placeholder import not_built_servicer
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_codegen.settings import CodegenSettings

SERVICE_NAME = "zehanx.codegen.v1.CodegenService"


async def _main() -> None:
    settings = CodegenSettings()
    # The codegen capability is issue #4; until it lands every RPC answers UNIMPLEMENTED.
    servicer = not_built_servicer(rpc.CodegenServiceServicer, SERVICE_NAME, "issue #4")
    binding = ServiceBinding(rpc.add_CodegenServiceServicer_to_server, servicer, SERVICE_NAME)
    await serve(settings, [binding], service_name="codegen")


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
