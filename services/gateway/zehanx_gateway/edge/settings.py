"""Settings of the gateway's browser edge (environment prefix ``ZX_GATEWAY_``, like the gateway's).

A class of its own so that the gRPC API's settings stay the gateway's; both read the same prefix, so
the edge's variables are ``ZX_GATEWAY_EDGE_PORT``, ``ZX_GATEWAY_EDGE_HOST`` and ``ZX_GATEWAY_EDGE_ENABLED``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EDGE_PORT = 47100
#: The gateway's default gRPC port: beside it, the edge takes its own default.
DEFAULT_GATEWAY_PORT = 47101


class EdgeSettings(BaseSettings):
    """Where the Connect (HTTP/1.1) edge of the public API listens."""

    model_config = SettingsConfigDict(env_prefix="ZX_GATEWAY_", extra="ignore", populate_by_name=True)

    edge_enabled: bool = Field(
        True, description="Serve the public API over Connect (HTTP/1.1, JSON or binary) beside gRPC."
    )
    edge_host: str | None = Field(
        None, description="Address the edge binds; unset: the gateway's own host (ZX_GATEWAY_HOST)."
    )
    edge_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="HTTP port of the edge (0: a free one). Unset: 47100 while the gateway is on its default "
        "port 47101, else a free port (logged), so gateways started on other ports never fight over 47100.",
    )

    def port_for(self, gateway_port: int) -> int:
        """The port to bind beside a gateway on ``gateway_port`` (0: any free port)."""
        if self.edge_port is not None:
            return self.edge_port
        return DEFAULT_EDGE_PORT if gateway_port == DEFAULT_GATEWAY_PORT else 0

    session_seconds: int = Field(
        900,
        ge=60,
        le=86_400,
        description="Lifetime of the access JWT a sign-in gives (renewed with its refresh token).",
    )
    sign_in_max_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed sign-ins per email within the window before sign-in is refused (429).",
    )
    sign_in_max_failures_per_client: int = Field(
        50,
        ge=1,
        le=100_000,
        description="Failed sign-ins per client address within the window before it is refused.",
    )
    sign_in_window_seconds: float = Field(
        900.0, ge=1, le=86_400, description="Sliding window over which failed sign-ins are counted."
    )
