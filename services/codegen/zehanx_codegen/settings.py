"""Settings of the codegen service (environment prefix ``ZX_CODEGEN_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zehanx_runtime.settings import ServiceSettings


class CodegenSettings(ServiceSettings):
    """Everything the codegen service reads from its environment, built once at start."""

    model_config = SettingsConfigDict(env_prefix="ZX_CODEGEN_", extra="ignore")

    port: int = Field(47103, ge=0, le=65535, description="Port of the codegen service.")
