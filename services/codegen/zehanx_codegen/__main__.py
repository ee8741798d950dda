"""Entry point: ``zx-codegen`` / ``python -m zehanx_codegen``."""

from __future__ import annotations

from zehanx.codegen.v1 import codegen_service_pb2_grpc as rpc
from zehanx_runtime.server import ServiceBinding, run, serve

from zehanx_codegen.app import build_servicer
from zehanx_codegen.servicer import SERVICE_NAME
from zehanx_codegen.settings import CodegenSettings


async def _main() -> None:
    settings = CodegenSettings()
    servicer = build_servicer(settings)
    binding = ServiceBinding(rpc.add_CodegenServiceServicer_to_server, servicer, SERVICE_NAME)
    await serve(settings, [binding], service_name="codegen")


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
