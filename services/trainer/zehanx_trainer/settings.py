"""Settings of the trainer service (environment prefix ``ZX_TRAINER_``), built once at start."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from zehanx_runtime.settings import ServiceSettings

MiB = 1024 * 1024
GiB = 1024 * MiB


def _default_home() -> Path:
    return Path(os.environ.get("ZX_HOME") or Path.home() / ".zehanx")


class TrainerSettings(ServiceSettings):
    """Everything the trainer service reads from its environment. Domain code gets values from here."""

    model_config = SettingsConfigDict(env_prefix="ZX_TRAINER_", extra="ignore")

    port: int = Field(47105, ge=0, le=65535, description="Port of the trainer service.")
    home: Path = Field(
        default_factory=_default_home,
        validation_alias=AliasChoices("ZX_TRAINER_HOME", "ZX_HOME"),
        description="Local state folder (ZX_HOME, default ~/.zehanx).",
    )

    # The executor.
    executor_address: str = Field("127.0.0.1:47104", description="host:port of the executor service.")
    executor_token: SecretStr | None = Field(
        None, description="Service token sent to the executor; unset: this service's own service_token."
    )

    # The crawler, owner of the datasets.
    crawler_address: str = Field(
        "127.0.0.1:47102",
        description="host:port of the crawler service, which streams the split files of its datasets "
        "(zx-crawler: URIs) to the trainer.",
    )
    crawler_token: SecretStr | None = Field(
        None, description="Service token sent to the crawler; unset: this service's own service_token."
    )

    # Data and artifacts.
    dataset_roots: list[Path] = Field(
        default_factory=list,
        description="Folders whose files a caller may name by file:// URI as a dataset; empty (the "
        "default): none, the trainer reads datasets only from the crawler.",
    )
    artifact_dir: Path | None = Field(None, description="Local artifact store; unset: $ZX_HOME/artifacts.")
    max_dataset_bytes: int = Field(
        48 * MiB,
        ge=MiB,
        description="Largest split file staged into a sandbox. Files travel inside one Execute request, "
        "which the gRPC message limit (64 MiB by default) bounds.",
    )
    supabase_url: str | None = Field(
        None,
        validation_alias=AliasChoices("ZX_TRAINER_SUPABASE_URL", "SUPABASE_URL"),
        description="Supabase project URL; with a service key it selects Supabase Storage for artifacts.",
    )
    supabase_service_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "ZX_TRAINER_SUPABASE_SERVICE_KEY", "SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY"
        ),
        description="Supabase secret key (sb_secret_…, sent as apikey only) or legacy service_role JWT; "
        "server side only.",
    )
    supabase_bucket: str = Field(
        "zehanx-artifacts", min_length=3, max_length=63, description="Storage bucket for artifacts (private)."
    )
    supabase_create_bucket: bool = Field(
        True, description="Create the bucket, private, on the first write when it is missing."
    )

    # Runs.
    max_concurrent_runs: int = Field(
        2, ge=1, le=64, description="Training runs at once; more get RESOURCE_EXHAUSTED."
    )
    smoke_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Wall-clock limit of the smoke run (and of its predict check)."
    )
    smoke_predict_rows: int = Field(
        8, ge=1, le=1000, description="Validation rows predict.py answers in the smoke run."
    )
    default_training_s: float = Field(
        1800.0, gt=0, le=86400, description="Full-run budget when the request sets none."
    )
    max_training_s: float = Field(
        86400.0, gt=0, le=86400, description="Ceiling on a requested training budget."
    )
    training_grace_s: float = Field(
        60.0, ge=0, le=3600, description="Kill a full run this long after its budget (at least 10 % of it)."
    )
    eval_timeout_s: float = Field(
        600.0, gt=0, le=86400, description="Wall-clock limit of predict.py on the test split."
    )
    memory_bytes: int = Field(4 * GiB, ge=64 * MiB, description="Sandbox memory when the request sets none.")
    max_memory_bytes: int = Field(16 * GiB, ge=64 * MiB, description="Ceiling on requested sandbox memory.")
    max_processes: int = Field(
        512, ge=16, le=4096, description="Processes and threads per sandbox (torch and DataLoader use many)."
    )
    disk_bytes: int = Field(
        1 * GiB,
        ge=16 * MiB,
        description="Sandbox working folder (a tmpfs on the local executor: counts as memory).",
    )
    output_bytes: int = Field(64 * MiB, ge=1024, description="stdout + stderr bytes a run may write.")
    max_model_bytes: int = Field(
        1 * GiB, ge=MiB, description="Largest output/ content collected from a run (the model and its files)."
    )
    gpus: int | None = Field(
        None, ge=0, le=64, description="GPUs this host grants to runs; unset: counted from /dev/nvidia[0-9]*."
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="ZX_SEED when the plan names no seed.")
    log_lines_per_s: float = Field(
        50.0,
        gt=0,
        description="Program output lines and zxrt log records forwarded per second (burst 200); "
        "the rest are counted in one platform line.",
    )
    max_weights_header_bytes: int = Field(
        4 * MiB,
        ge=64 * 1024,
        le=100_000_000,
        description="Largest safetensors header (JSON) the trainer parses in a model.safetensors; real "
        "headers take about 100 bytes a tensor (a 7B model: ~30 KiB). 100 MB is safetensors' own cap.",
    )

    # Predictions.
    predict_timeout_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Wall-clock limit of one Predict in the sandbox: a one-shot predict.py run, a resident "
        "predictor's start (model loading included) or one of its calls.",
    )
    predict_cache_models: int = Field(
        8, ge=1, le=1024, description="Models kept staged in memory for Predict."
    )
    predict_cache_bytes: int = Field(2 * GiB, ge=MiB)
    predictors_max: int = Field(
        8,
        ge=1,
        le=1024,
        description="Resident predictors (one sandboxed process per model, model loaded) kept at once; "
        "beyond it the least recently used is ended.",
    )
    predictors_memory_bytes: int = Field(
        8 * GiB,
        ge=64 * MiB,
        description="Total of the resident predictors' sandbox memory limits; beyond it the least "
        "recently used is ended.",
    )
    predictor_memory_bytes: int = Field(
        2 * GiB,
        ge=64 * MiB,
        description="Sandbox memory limit of one resident predictor (what it reserves of the total).",
    )
    predictor_idle_s: float = Field(
        300.0, gt=0, le=86400, description="A resident predictor with no call for this long is ended."
    )
    predictor_life_s: float = Field(
        6 * 3600.0,
        ge=60,
        le=86400,
        description="Wall-clock life of a resident predictor's sandbox; the next call then starts a new one.",
    )

    @model_validator(mode="after")
    def _predictor_fits(self) -> TrainerSettings:
        if self.predictor_memory_bytes > self.predictors_memory_bytes:
            raise ValueError(
                "ZX_TRAINER_PREDICTOR_MEMORY_BYTES is above ZX_TRAINER_PREDICTORS_MEMORY_BYTES: "
                "no predictor could ever start"
            )
        return self

    @property
    def resolved_dataset_roots(self) -> list[Path]:
        return [p.resolve() for p in self.dataset_roots]

    @property
    def resolved_artifact_dir(self) -> Path:
        return self.artifact_dir or self.home / "artifacts"

    @property
    def resolved_gpus(self) -> int:
        if self.gpus is not None:
            return self.gpus
        return len([p for p in glob.glob("/dev/nvidia[0-9]*") if p[len("/dev/nvidia") :].isdigit()])

    @property
    def executor_token_value(self) -> str | None:
        token = self.executor_token or self.service_token
        return token.get_secret_value() if token else None

    @property
    def crawler_token_value(self) -> str | None:
        token = self.crawler_token or self.service_token
        return token.get_secret_value() if token else None

    @property
    def use_supabase(self) -> bool:
        return bool(
            self.supabase_url and self.supabase_service_key and self.supabase_service_key.get_secret_value()
        )
