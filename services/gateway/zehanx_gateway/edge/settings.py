"""Settings of the gateway's browser edge (environment prefix ``ZX_GATEWAY_``, like the gateway's).

A class of its own so that the gRPC API's settings stay the gateway's; both read the same prefix, so
the edge's variables are ``ZX_GATEWAY_EDGE_PORT``, ``ZX_GATEWAY_EDGE_HOST``, ``ZX_GATEWAY_EDGE_ENABLED``, the web
app's ``ZX_GATEWAY_EDGE_WEB_DIR``, ``ZX_GATEWAY_EDGE_SUPABASE_URL`` and ``ZX_GATEWAY_EDGE_SUPABASE_ANON_KEY``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EDGE_PORT = 47100
#: The built dashboard in this checkout: <repo>/web/dist (scripts/build_web.sh, run by make setup).
DEFAULT_WEB_DIR = Path(__file__).resolve().parents[4] / "web" / "dist"
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

    edge_max_request_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest Connect request body, and largest message once decompressed, of every method "
        "but UploadFile, which gets room for its file on top (the proto's 32 MiB, base64 in JSON). "
        "Larger: RESOURCE_EXHAUSTED, refused before the body is read when Content-Length says so.",
    )
    edge_max_compression_ratio: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Most a gzip'd Connect request may expand (decompressed bytes per compressed byte); "
        "beyond: RESOURCE_EXHAUSTED, without decompressing the rest.",
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
    session_lifetime_seconds: int = Field(
        30 * 86_400,
        ge=300,
        le=365 * 86_400,
        description="Longest a signed-in session lasts, however often it is renewed (then: sign in again); "
        "also the refresh cookie's Max-Age.",
    )
    session_idle_seconds: int = Field(
        7 * 86_400,
        ge=300,
        le=365 * 86_400,
        description="A session not renewed for this long ends (its refresh token is refused).",
    )
    sign_in_max_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed sign-ins per email from one client (an IPv4 address or IPv6 /64) within the "
        "window before sign-in to that email is refused from there (429), even with the right password.",
    )
    sign_in_max_failures_per_email: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Failed sign-ins per email from all clients together within the window before sign-in "
        "to it is refused (429), except from clients that signed in to it before (so nobody can lock its "
        "owner out).",
    )
    sign_in_max_failures_per_client: int = Field(
        50,
        ge=1,
        le=100_000,
        description="Failed sign-ins per client (an IPv4 address or IPv6 /64) within the window before it "
        "is refused.",
    )
    sign_in_window_seconds: float = Field(
        900.0, ge=1, le=86_400, description="Sliding window over which failed sign-ins are counted."
    )
    sign_up_max_per_client: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Sign-ups per client (an IPv4 address or IPv6 /64) within the window before sign-up is "
        "refused (429).",
    )
    sign_up_window_seconds: float = Field(
        3600.0, ge=1, le=7 * 86_400, description="Sliding window over which sign-ups are counted."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDRs of reverse proxies in front of the edge (a JSON list, e.g. "
        '["10.0.0.0/8"]). Only from these is X-Forwarded-For believed (for per-client limits) and '
        "X-Forwarded-Proto (for Secure cookies). Empty: the TCP peer is the client.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    edge_web_dir: Path | None = Field(
        None,
        description="Folder of the built web dashboard the edge serves at /. Unset: web/dist of this "
        "checkout, built by make setup. Missing: / answers 503 saying to run make setup.",
    )

    @property
    def web_dir(self) -> Path:
        """The dashboard folder to serve (the setting, or this checkout's web/dist)."""
        return self.edge_web_dir or DEFAULT_WEB_DIR

    edge_supabase_url: str = Field(
        "",
        description="Supabase project URL (https://<ref>.supabase.co): the web page then signs in through "
        "Supabase Auth there instead of the edge's own /auth/v1 accounts. Empty: local accounts.",
    )
    edge_supabase_anon_key: SecretStr = Field(
        SecretStr(""),
        description="Supabase's public anon key the page sends as `apikey` to Supabase Auth (public by "
        "design, kept out of logs all the same). Needed with ZX_GATEWAY_EDGE_SUPABASE_URL.",
    )

    @field_validator("edge_supabase_url")
    @classmethod
    def _https_origin(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL such as https://<ref>.supabase.co")
        return value
