"""Wiring: settings → the domain with its backends → the servicer."""

from __future__ import annotations

import groq

from zehanx_codegen.capabilities import InstalledPackages
from zehanx_codegen.generator import TemplateGenerator
from zehanx_codegen.groq_backend import GroqWriter
from zehanx_codegen.planner import Planner
from zehanx_codegen.service import Codegen
from zehanx_codegen.servicer import CodegenServicer
from zehanx_codegen.settings import CodegenSettings
from zehanx_codegen.validator import Validator

#: What a job can do when Groq's per-minute limit refuses the operator's key.
SERVICE_KEY_FALLBACK = (
    "to have the template writer write programs, set ZX_CODEGEN_BACKEND=template; or use a Groq plan with "
    "a higher tokens-per-minute limit and set ZX_CODEGEN_GROQ_TOKENS_PER_MINUTE to it"
)
#: ... and when it refuses a job owner's own key (which makes the job use Groq whatever the backend).
OWNER_KEY_FALLBACK = (
    "remove your Groq key (Settings, or DeleteProviderKey) so your jobs use the service's own writer "
    "(the template writer unless the operator chose Groq), or use a Groq plan with a higher "
    "tokens-per-minute limit"
)


def build_codegen(settings: CodegenSettings, *, groq_client: groq.Groq | None = None) -> Codegen:
    """The domain object. ``groq_client`` replaces the real client (tests pass a recorded transport)."""
    validator = Validator()
    writer = None
    if settings.backend == "groq":
        if groq_client is None:
            if settings.groq_api_key is None:
                raise RuntimeError("ZX_CODEGEN_BACKEND=groq needs ZX_CODEGEN_GROQ_API_KEY")
            groq_client = _client(settings, settings.groq_api_key.get_secret_value())
        writer = GroqWriter(
            groq_client,
            settings.groq_models,
            validator,
            max_completion_tokens=settings.groq_max_completion_tokens,
            tokens_per_minute=settings.groq_tokens_per_minute,
            reasoning_effort=settings.groq_reasoning_effort,
            fallback=SERVICE_KEY_FALLBACK,
        )
    base = groq_client

    def writer_for_key(api_key: str) -> GroqWriter:
        # A job owner's own key, for one call: the configured client (its transport, timeouts and
        # retries) with the key replaced, or a new client when the backend is the templates.
        client = base.with_options(api_key=api_key) if base is not None else _client(settings, api_key)
        writer = GroqWriter(
            client,
            settings.groq_models,
            validator,
            max_completion_tokens=settings.groq_max_completion_tokens,
            tokens_per_minute=settings.groq_user_key_tokens_per_minute,
            reasoning_effort=settings.groq_reasoning_effort,
            key_name="the job owner's own Groq key",
            fallback=OWNER_KEY_FALLBACK,
        )
        writer.owns_client = base is None  # a client of its own: closed after the call
        return writer

    return Codegen(
        Planner(InstalledPackages(allow_pretrained=settings.allow_pretrained_encoder)),
        TemplateGenerator(),
        validator,
        writer,
        time_budget_s=settings.time_budget_s,
        writer_for_key=writer_for_key,
    )


def _client(settings: CodegenSettings, api_key: str) -> groq.Groq:
    return groq.Groq(
        api_key=api_key,
        base_url=settings.groq_base_url,
        timeout=settings.groq_timeout_s,
        max_retries=settings.groq_max_retries,
    )


def build_servicer(settings: CodegenSettings, *, groq_client: groq.Groq | None = None) -> CodegenServicer:
    return CodegenServicer(build_codegen(settings, groq_client=groq_client))
