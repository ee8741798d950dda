"""Settings of the trainer service (environment prefix ``ZX_TRAINER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zehanx_runtime.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Everything the trainer service reads from its environment, built once at start."""

    model_config = SettingsConfigDict(env_prefix="ZX_TRAINER_", extra="ignore")

    port: int = Field(47105, ge=0, le=65535, description="Port of the trainer service.")
