"""One way to start a service: grpc.aio with health, reflection and the service interceptor.

On SIGTERM (or SIGINT) health goes NOT_SERVING at once, in-flight calls get ``grace_seconds`` to finish
(streams still open then are cancelled, so their ``finally`` blocks clean up), then ``on_shutdown`` runs
and the process exits.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from zehanx_runtime.interceptors import CallCheck, ServiceInterceptor
from zehanx_runtime.logging import configure_logging, get_logger
from zehanx_runtime.metrics import serve_metrics
from zehanx_runtime.settings import ServiceSettings
from zehanx_runtime.tracing import configure_tracing, exporting, shutdown_tracing


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to add it: ``(add_XServicer_to_server, servicer, "pkg.v1.XService")``."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    name: str


@dataclass
class RunningServer:
    """A started server: its port, its health servicer, and how to stop it."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str] = field(default_factory=list)

    async def stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _bindings(services: Sequence[ServiceBinding | tuple[Any, Any, str]]) -> list[ServiceBinding]:
    return [s if isinstance(s, ServiceBinding) else ServiceBinding(*s) for s in services]


async def start_server(
    settings: ServiceSettings,
    services: Sequence[ServiceBinding | tuple[Any, Any, str]],
    *,
    service_name: str,
    internal: bool = True,
    extra_check: CallCheck | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> RunningServer:
    """Start serving ``services`` on ``settings.host:settings.port`` (0 = any free port).

    ``credentials`` (``grpc.ssl_server_credentials``): serve TLS on that port instead of plaintext.
    """
    token = settings.service_token.get_secret_value() if settings.service_token else None
    if internal and not token and not settings.allow_no_token:
        raise RuntimeError(
            f"{service_name} is an internal service and needs a service token: set "
            f"{settings.model_config.get('env_prefix', 'ZX_')}SERVICE_TOKEN (zx up does this for you)"
        )
    bindings = _bindings(services)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(
                service_name=service_name,
                service_token=token if internal else None,
                extra_check=extra_check,
            ),
            *interceptors,
        ],
        options=options,
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.add(binding.servicer, server)
    names = [b.name for b in bindings]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{settings.host}:{settings.port}"
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"{service_name}: could not bind {settings.host}:{settings.port}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, port=port, health=health_servicer, service_names=names)


#: The collector's young-generation threshold once a service is up (CPython's default is 700).
GC_GEN0_THRESHOLD = 7000


def settle_gc() -> None:
    """Once a service is up: collect, move every object start-up left alive (modules, channels, pools:
    about 117,000 in the gateway) out of the cyclic collector's view (``gc.freeze``), and collect the
    young generation every 7000 net allocations instead of 700.

    A call allocates objects that outlive it for a while (with traces on, a span and a dozen objects
    of its own wait in the batch processor's queue), so with CPython's defaults the young generation
    filled every ~25 GetJobs and each full collection walked every start-up object again: in
    bench/bench_observability.py's GetJob (one process for client and server) 150-270 ms of collection
    per 4000 calls with traces on, 23-30 ms after this, and the on/off ratio went from 0.87 to 0.91-0.92.
    Garbage cycles are still collected, a little later; objects alive at start-up that become garbage
    later are not, which is why the freeze comes after start-up, not before.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)


async def serve(
    settings: ServiceSettings,
    services: Sequence[ServiceBinding | tuple[Any, Any, str]],
    *,
    service_name: str,
    internal: bool = True,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    extra_check: CallCheck | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> None:
    """Run a service until SIGTERM/SIGINT, then shut down gracefully (TLS with ``credentials``)."""
    configure_logging(settings.log_level, settings.log_json, service=service_name)
    configure_tracing(service_name)
    log = get_logger("zehanx.server")
    running = await start_server(
        settings,
        services,
        service_name=service_name,
        internal=internal,
        extra_check=extra_check,
        credentials=credentials,
    )
    metrics_server = None
    metrics_address = None
    if settings.metrics_port is not None:
        metrics_server, metrics_port = serve_metrics(settings.metrics_host, settings.metrics_port)
        metrics_address = f"{settings.metrics_host}:{metrics_port}"
    settle_gc()
    log.info(
        "serving",
        address=f"{settings.host}:{running.port}",
        services=running.service_names,
        tls=credentials is not None,
        metrics_address=metrics_address,
        traces="otlp" if exporting() else "not exported",
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down", grace_seconds=settings.grace_seconds)
    await running.stop(settings.grace_seconds)
    if on_shutdown is not None:
        await on_shutdown()
    if metrics_server is not None:
        metrics_server.shutdown()
    shutdown_tracing()
    log.info("stopped")


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Entry-point helper: run ``main`` and turn a start-up failure into a clear one-line exit."""
    try:
        asyncio.run(main())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
