"""Settings of the crawler service (environment prefix ``ZX_CRAWLER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from zehanx_runtime.settings import ServiceSettings


class CrawlerSettings(ServiceSettings):
    """Everything the crawler service reads from its environment, built once at start."""

    model_config = SettingsConfigDict(env_prefix="ZX_CRAWLER_", extra="ignore")

    port: int = Field(47102, ge=0, le=65535, description="Port of the crawler service.")
