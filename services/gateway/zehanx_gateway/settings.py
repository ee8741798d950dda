"""Settings of the gateway (environment prefix ``ZX_GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from zehanx_runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """The public door: where it listens, its database, and the internal services it calls."""

    model_config = SettingsConfigDict(env_prefix="ZX_GATEWAY_", extra="ignore")

    port: int = Field(47101, ge=0, le=65535, description="Port of the public gateway API.")
    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL (the embedded one started by zx up, or any other, Supabase's included)."
    )
    crawler_address: str = Field("127.0.0.1:47102", description="Address of the crawler service.")
    codegen_address: str = Field("127.0.0.1:47103", description="Address of the codegen service.")
    executor_address: str = Field("127.0.0.1:47104", description="Address of the executor service.")
    trainer_address: str = Field("127.0.0.1:47105", description="Address of the trainer service.")
