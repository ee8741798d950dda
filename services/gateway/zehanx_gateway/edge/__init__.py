"""The gateway's browser edge: the public GatewayService over the Connect protocol (HTTP/1.1).

Same process, same servicer, same authenticator and validation as the gRPC port: a browser, curl or any
Connect client calls ``POST http://<host>:47100/zehanx.gateway.v1.GatewayService/<Method>`` with JSON
(``application/json``) or binary (``application/proto``) bodies; server streams (WatchJob,
DownloadModel) use Connect's enveloped streaming (``application/connect+json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zehanx.gateway.v1 import gateway_service_pb2

from zehanx_gateway.edge.connect import ConnectAdapter, ConnectService
from zehanx_gateway.edge.server import EdgeApp, RunningEdge, start_edge
from zehanx_gateway.edge.settings import EdgeSettings

if TYPE_CHECKING:
    from zehanx_gateway.app import Gateway

__all__ = ["EdgeSettings", "RunningEdge", "edge_app", "serve_edge"]

SERVICE = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"]


def edge_app(gateway: Gateway) -> EdgeApp:
    """The edge's ASGI application over ``gateway``'s servicer and authenticator."""
    adapter = ConnectAdapter(
        SERVICE, gateway.servicer, check=gateway.authenticator.check, service_name="gateway"
    )
    return EdgeApp(ConnectService(adapter, read_max_bytes=gateway.settings.max_message_bytes))


async def serve_edge(gateway: Gateway, settings: EdgeSettings) -> RunningEdge:
    """Start the edge of ``gateway`` on ``settings`` (host defaults to the gateway's own)."""
    host = settings.edge_host or gateway.settings.host
    return await start_edge(
        edge_app(gateway),
        host=host,
        port=settings.port_for(gateway.settings.port),
        grace=gateway.settings.grace_seconds,
    )
