"""Settings of the codegen service (environment prefix ``ZX_CODEGEN_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from zehanx_runtime.settings import ServiceSettings


class CodegenSettings(ServiceSettings):
    """Everything the codegen service reads from its environment, built once at start."""

    model_config = SettingsConfigDict(env_prefix="ZX_CODEGEN_", extra="ignore")

    port: int = Field(47103, ge=0, le=65535, description="Port of the codegen service.")
    backend: Literal["template", "groq"] = Field(
        "template", description="Who writes programs: the offline templates, or Groq (needs groq_api_key)."
    )
    groq_api_key: SecretStr | None = Field(None, description="Groq API key (backend=groq).")
    groq_models: list[str] = Field(
        default_factory=lambda: ["openai/gpt-oss-120b", "openai/gpt-oss-20b"],
        description="Groq models to try, first choice first (JSON list). mixtral-8x7b-32768 and the "
        "Llama 3.x models are retired.",
    )
    groq_base_url: str | None = Field(None, description="Groq API base URL (unset: the SDK's default).")
    groq_timeout_s: float = Field(120.0, gt=0, le=600, description="Timeout of one Groq request.")
    groq_max_retries: int = Field(
        2,
        ge=0,
        le=4,
        description="SDK retries on 408/409/429/5xx and connection errors. A 429 waits its retry-after "
        "(the SDK honours up to 60 s), so a rate-limited call waits at most this many minutes before "
        "the job is told why.",
    )
    groq_max_completion_tokens: int = Field(
        16_384,
        ge=1024,
        le=65_536,
        description="Longest reply; lowered per call to fit the tokens-per-minute limit. Groq caps "
        "gpt-oss at 65,536.",
    )
    groq_tokens_per_minute: int = Field(
        8_000,
        ge=2_048,
        le=100_000_000,
        description="Tokens per minute the Groq key's plan allows on the models (Free plan: 8000 on "
        "gpt-oss). Groq counts the prompt plus the requested completion against it, so each request's "
        "completion is sized to fit; raise it to the plan's limit on a paid plan.",
    )
    groq_user_key_tokens_per_minute: int = Field(
        8_000,
        ge=2_048,
        le=100_000_000,
        description="The same limit, assumed for a job owner's own Groq key (Free plan unless your users "
        "bring paid keys).",
    )
    groq_reasoning_effort: Literal["low", "medium", "high"] | None = Field(
        "low",
        description="reasoning_effort sent to gpt-oss models (less reasoning leaves more of the "
        "per-minute budget for the program); unset: the model's default.",
    )
    time_budget_s: float = Field(
        180.0, gt=0, le=86_400, description="Seconds a full training run may take; plans are sized to fit."
    )
    allow_pretrained_encoder: bool = Field(
        True, description="Plan a packaged sentence encoder for text when it is installed."
    )
