"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` once, with its own ``ZX_<SERVICE>_`` prefix, builds it
once at start-up and passes it down. Domain code never reads ``os.environ``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Fields every gRPC service has. Subclasses set ``env_prefix="ZX_<SERVICE>_"``."""

    model_config = SettingsConfigDict(env_prefix="ZX_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to bind. Internal services stay on loopback.")
    port: int = Field(0, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    service_token: SecretStr | None = Field(
        None,
        description="Shared secret internal callers send as x-zx-service-token. Required for internal "
        "services unless allow_no_token is set.",
    )
    allow_no_token: bool = Field(
        False,
        description="Development only: let an internal service start without a service token (calls are "
        "then not authenticated). Never the default.",
    )
    grace_seconds: float = Field(5.0, ge=0, le=600, description="Grace for in-flight calls on SIGTERM.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_json: bool | None = Field(None, description="JSON logs; unset means JSON when stderr is not a TTY.")
    max_concurrent_rpcs: int | None = Field(
        None, ge=1, description="Beyond this many in-flight RPCs new ones get RESOURCE_EXHAUSTED."
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest gRPC message sent or received."
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint (0 picks a free one); unset: no endpoint. "
        "zx up assigns one per service.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the /metrics endpoint binds.")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
