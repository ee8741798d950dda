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

from zehanx_gateway.accounts import AccountService, SessionConfig
from zehanx_gateway.edge.auth_routes import AuthRoutes
from zehanx_gateway.edge.connect import BodyLimits, ConnectAdapter, ConnectService
from zehanx_gateway.edge.server import EdgeApp, RunningEdge, WebApp, start_edge
from zehanx_gateway.edge.settings import EdgeSettings
from zehanx_gateway.store.accounts import PostgresAccountStore

if TYPE_CHECKING:
    from zehanx_gateway.app import Gateway

__all__ = ["EdgeSettings", "RunningEdge", "edge_app", "serve_edge"]

SERVICE = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"]


def edge_app(gateway: Gateway, settings: EdgeSettings | None = None) -> EdgeApp:
    """The edge's ASGI application over ``gateway``'s servicer and authenticator, and its accounts."""
    settings = settings or EdgeSettings()
    limits = BodyLimits.of_service(
        SERVICE,
        default_bytes=settings.edge_max_request_bytes,
        max_compression_ratio=settings.edge_max_compression_ratio,
    )
    adapter = ConnectAdapter(
        SERVICE, gateway.servicer, check=gateway.authenticator.check, service_name="gateway", limits=limits
    )
    service = ConnectService(adapter)
    web = WebApp(
        settings.web_dir,
        supabase_url=settings.edge_supabase_url,
        anon_key=settings.edge_supabase_anon_key.get_secret_value(),
    )
    return EdgeApp(service, auth_routes(gateway, settings), web)


def auth_routes(gateway: Gateway, settings: EdgeSettings) -> AuthRoutes:
    """The edge's own email and password accounts, signing sessions with the key the gateway generated
    (``gateway.session_key``; never a configured secret), which its JWT path verifies. Off in Supabase
    mode (ZX_GATEWAY_EDGE_SUPABASE_URL or SUPABASE_JWT_SECRET set): Supabase Auth signs users in then,
    and a second, local way to get an account would bypass its rules (sign-ups off, confirmed emails)."""
    trusted, cookie_seconds = settings.trusted_proxies, settings.session_lifetime_seconds
    if settings.edge_supabase_url or gateway.settings.supabase_mode or gateway.session_key is None:
        reason = (
            "this gateway signs users in through Supabase Auth (ZX_GATEWAY_EDGE_SUPABASE_URL or "
            "SUPABASE_JWT_SECRET is set), so its own email and password accounts are off: sign in with Supabase"
        )
        return AuthRoutes(
            None, disabled_reason=reason, trusted_proxies=trusted, cookie_seconds=cookie_seconds
        )
    config = SessionConfig(
        secret=gateway.session_key,
        access_seconds=settings.session_seconds,
        lifetime_seconds=settings.session_lifetime_seconds,
        idle_seconds=settings.session_idle_seconds,
        max_failures_per_email=settings.sign_in_max_failures,
        max_failures_per_client=settings.sign_in_max_failures_per_client,
        max_failures_per_email_total=settings.sign_in_max_failures_per_email,
        failure_window_seconds=settings.sign_in_window_seconds,
        max_sign_ups_per_client=settings.sign_up_max_per_client,
        sign_up_window_seconds=settings.sign_up_window_seconds,
    )
    accounts = AccountService(PostgresAccountStore(gateway.pool), config)
    return AuthRoutes(accounts, trusted_proxies=trusted, cookie_seconds=cookie_seconds)


async def serve_edge(gateway: Gateway, settings: EdgeSettings) -> RunningEdge:
    """Start the edge of ``gateway`` on ``settings`` (host defaults to the gateway's own)."""
    host = settings.edge_host or gateway.settings.host
    return await start_edge(
        edge_app(gateway, settings),
        host=host,
        port=settings.port_for(gateway.settings.port),
        grace=gateway.settings.grace_seconds,
        ssl_certfile=gateway.settings.tls_cert_file,
        ssl_keyfile=gateway.settings.tls_key_file,
    )
