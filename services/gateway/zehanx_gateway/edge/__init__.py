"""The gateway's browser edge: the public GatewayService over the Connect protocol (HTTP/1.1).

Same process, same servicer, same authenticator and validation as the gRPC port: a browser, curl or any
Connect client calls ``POST http://<host>:47100/zehanx.gateway.v1.GatewayService/<Method>`` with JSON
(``application/json``) or binary (``application/proto``) bodies; server streams (WatchJob,
DownloadModel) use Connect's enveloped streaming (``application/connect+json``). Every other GET is the
web dashboard (``web/dist``) and its ``/config.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zehanx.gateway.v1 import gateway_service_pb2

from zehanx_gateway.accounts import AccountService, PostgresAccountStore, SessionConfig
from zehanx_gateway.edge.auth_routes import AuthRoutes
from zehanx_gateway.edge.connect import ConnectAdapter, ConnectService
from zehanx_gateway.edge.server import EdgeApp, RunningEdge, WebApp, start_edge
from zehanx_gateway.edge.settings import EdgeSettings

if TYPE_CHECKING:
    from zehanx_gateway.app import Gateway

__all__ = ["EdgeSettings", "RunningEdge", "edge_app", "serve_edge"]

SERVICE = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"]


def edge_app(gateway: Gateway, settings: EdgeSettings | None = None) -> EdgeApp:
    """The edge's ASGI application over ``gateway``'s servicer and authenticator, and its accounts."""
    settings = settings or EdgeSettings()
    adapter = ConnectAdapter(
        SERVICE, gateway.servicer, check=gateway.authenticator.check, service_name="gateway"
    )
    service = ConnectService(adapter, read_max_bytes=gateway.settings.max_message_bytes)
    web = WebApp(
        settings.web_dir,
        supabase_url=settings.edge_supabase_url,
        anon_key=settings.edge_supabase_anon_key.get_secret_value(),
    )
    return EdgeApp(service, auth_routes(gateway, settings), web)


def auth_routes(gateway: Gateway, settings: EdgeSettings) -> AuthRoutes:
    """Accounts signing sessions with the gateway's JWT secret, so its JWT path verifies them."""
    audience = gateway.settings.jwt_audience or "authenticated"
    secret = gateway.settings.jwt_secret.get_secret_value() if gateway.settings.jwt_secret else ""
    if len(secret) < 32:
        reason = (
            "email and password accounts need the gateway's JWT secret to sign sessions: set "
            "ZX_GATEWAY_JWT_SECRET (32 characters or more)"
        )
        return AuthRoutes(
            None, audience=audience, disabled_reason=reason, trusted_proxies=settings.trusted_proxies
        )
    config = SessionConfig(
        secret=secret,
        audience=audience,
        issuer=gateway.settings.jwt_issuer or None,
        access_seconds=settings.session_seconds,
        max_failures_per_email=settings.sign_in_max_failures,
        max_failures_per_client=settings.sign_in_max_failures_per_client,
        failure_window_seconds=settings.sign_in_window_seconds,
        max_sign_ups_per_client=settings.sign_up_max_per_client,
        sign_up_window_seconds=settings.sign_up_window_seconds,
    )
    return AuthRoutes(
        AccountService(PostgresAccountStore(gateway.pool), config),
        audience=audience,
        trusted_proxies=settings.trusted_proxies,
    )


async def serve_edge(gateway: Gateway, settings: EdgeSettings) -> RunningEdge:
    """Start the edge of ``gateway`` on ``settings`` (host defaults to the gateway's own)."""
    host = settings.edge_host or gateway.settings.host
    return await start_edge(
        edge_app(gateway, settings),
        host=host,
        port=settings.port_for(gateway.settings.port),
        grace=gateway.settings.grace_seconds,
    )
