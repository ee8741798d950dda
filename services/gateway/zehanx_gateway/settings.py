"""Settings of the gateway (environment prefix ``ZX_GATEWAY_``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from zehanx_runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """The public door: where it listens, its database, how it authenticates, and the internal services."""

    model_config = SettingsConfigDict(env_prefix="ZX_GATEWAY_", extra="ignore", populate_by_name=True)

    port: int = Field(47101, ge=0, le=65535, description="Port of the public gateway API.")
    max_message_bytes: int = Field(
        33 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message the gateway receives or sends (its API and its calls to the "
        "internal services): UploadFile's largest file (32 MiB, the proto's rule) and room for the rest.",
    )
    database_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ZX_GATEWAY_DATABASE_URL", "ZX_DATABASE_URL"),
        description="PostgreSQL URL (the embedded one started by zx up, or any other, Supabase's included); "
        "ZX_DATABASE_URL is read too. Required: the gateway keeps every job and event there.",
    )
    database_pool_size: int = Field(10, ge=1, le=500, description="Most connections the gateway opens.")
    database_prepared_statements: bool = Field(
        True,
        description="Use server-side prepared statements. Off by itself behind a transaction-mode pooler "
        "(see ZX_GATEWAY_DATABASE_TRANSACTION_POOLER).",
    )
    database_transaction_pooler: bool | None = Field(
        None,
        description="The database URL is a transaction-mode pooler (Supabase's on port 6543): prepared "
        "statements and LISTEN are turned off and other replicas' events come from the poll. Unset: "
        "detected from the URL (port 6543).",
    )
    migration_database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL the migrations run on (e.g. Supabase's direct connection or session "
        "pooler on port 5432); unset: ZX_GATEWAY_DATABASE_URL. Migrations take a transaction-scoped lock, "
        "so either works.",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ZX_GATEWAY_JWT_SECRET", "SUPABASE_JWT_SECRET"),
        description="HS256 secret of Supabase Auth JWTs (the project's JWT secret, 32 bytes or more; "
        "SUPABASE_JWT_SECRET is read too). Never signs the edge's own sessions. Unset with no JWKS: only API "
        "keys and the edge's own sessions are accepted.",
    )
    jwt_jwks_url: str | None = Field(
        None,
        description="JWKS URL for asymmetric (RS256/ES256) JWTs, e.g. "
        "https://<ref>.supabase.co/auth/v1/.well-known/jwks.json.",
    )
    jwt_jwks_json: str | None = Field(None, description="A JWKS document itself, instead of a URL.")
    jwt_audience: str | None = Field(
        "authenticated", description="Required `aud` of JWTs (Supabase: authenticated); empty: not checked."
    )
    jwt_issuer: str | None = Field(
        None,
        description="Required `iss` of JWTs (Supabase: https://<ref>.supabase.co/auth/v1); unset: not checked.",
    )
    jwt_leeway_seconds: float = Field(
        30.0,
        ge=0,
        le=300,
        description="Clock skew allowed on `exp`/`nbf`/`iat`: a token issued by a clock this far ahead of "
        "the gateway's is still accepted.",
    )
    supabase_jwt_secret: SecretStr | None = Field(
        None,
        validation_alias="SUPABASE_JWT_SECRET",
        description="The Supabase project's JWT secret. Set (not empty): Supabase signs users in, so the "
        "edge's own email and password accounts and their sessions are off (its HS256 JWTs are verified "
        "with it unless ZX_GATEWAY_JWT_SECRET is set).",
    )
    recent_sign_in_seconds: float = Field(
        600.0,
        ge=0,
        le=30 * 86_400,
        description="How recent the sign-in behind a browser session (a JWT's auth_time, else its newest "
        "amr timestamp, else iat) must be for it to create an API key; an API key may always create keys.",
    )
    max_active_jobs_per_user: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Unfinished jobs a user may have; CreateJob beyond: RESOURCE_EXHAUSTED.",
    )
    max_jobs_per_user_per_minute: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Jobs a user may create in any 60 seconds (cancelled ones count); CreateJob beyond: "
        "RESOURCE_EXHAUSTED.",
    )
    max_jobs_per_user_per_day: int = Field(
        500,
        ge=1,
        le=10_000_000,
        description="Jobs a user may create in any 24 hours (cancelled ones count), so that creating and "
        "cancelling in a loop cannot fill the database; CreateJob beyond: RESOURCE_EXHAUSTED.",
    )
    max_job_memory_bytes: int = Field(
        8 * 1024**3,
        ge=64 * 1024**2,
        le=1024**4,
        description="Most memory a job may ask for (options.resources.max_memory_bytes); CreateJob beyond: "
        "INVALID_ARGUMENT. The trainer and executor lower requests to their own ceilings as well.",
    )
    artifact_dir: Path | None = Field(
        None,
        description="Folder of the local artifact store; default $ZX_HOME/artifacts (~/.zehanx/artifacts).",
    )
    watch_buffer: int = Field(
        1024,
        ge=16,
        le=1_000_000,
        description="Events buffered per WatchJob subscriber; one further behind re-reads from the database.",
    )
    event_batch_max: int = Field(
        1000, ge=1, le=100_000, description="Most events written in one transaction."
    )
    event_poll_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description="How often watched jobs are polled for events from other replicas, as a backstop to "
        "LISTEN/NOTIFY (0: never).",
    )
    event_listen: bool = Field(
        True,
        description="LISTEN for other replicas' events (off by itself behind a transaction-mode pooler).",
    )
    crawler_address: str = Field("127.0.0.1:47102", description="Address of the crawler service.")
    codegen_address: str = Field("127.0.0.1:47103", description="Address of the codegen service.")
    executor_address: str = Field("127.0.0.1:47104", description="Address of the executor service.")
    trainer_address: str = Field("127.0.0.1:47105", description="Address of the trainer service.")
    trainer_token: SecretStr | None = Field(
        None, description="Service token sent to the trainer; unset: this service's own service_token."
    )
    predict_timeout_seconds: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Longest a Predict may take at the trainer (model loading included).",
    )
    max_concurrent_predicts_per_user: int = Field(
        2,
        ge=1,
        le=1000,
        description="Predicts one user may have running at once on this replica (each holds a sandbox slot "
        "at the executor); beyond: RESOURCE_EXHAUSTED.",
    )
    predict_stream_in_flight: int = Field(
        2,
        ge=1,
        le=64,
        description="Chunks of one PredictStream running at once at the trainer (each takes one of the "
        "user's ZX_GATEWAY_MAX_CONCURRENT_PREDICTS_PER_USER while the stream lasts: as many as are free).",
    )
    predict_max_bytes: int = Field(
        1024**2,
        ge=1024,
        le=64 * 1024**2,
        description="Most bytes (binary encoding) of one Predict's instances together; beyond: "
        "INVALID_ARGUMENT.",
    )

    upload_dir: Path | None = Field(
        None,
        description="Folder of uploaded data files (<folder>/<user id>/<upload id>/<filename>); default "
        "$ZX_HOME/uploads. The crawler must be allowed to read it (zx up adds it to ZX_CRAWLER_LOCAL_ROOTS).",
    )
    upload_quota_bytes: int = Field(
        1024**3,
        ge=1,
        description="Most bytes of uploads one user may keep (uploads in progress count); UploadFile beyond "
        "it: RESOURCE_EXHAUSTED.",
    )
    max_concurrent_uploads_per_user: int = Field(
        2,
        ge=1,
        le=1000,
        description="UploadFile calls one user may have in progress at once (over all replicas); beyond: "
        "RESOURCE_EXHAUSTED.",
    )
    secrets_key: SecretStr | None = Field(
        None,
        description="Key-encryption key of the users' own provider keys (any long random string; an "
        "AES-256-GCM key is derived from it). Unset: read from $ZX_HOME/secrets-key, which zx up creates; "
        "with neither, SetProviderKey answers FAILED_PRECONDITION.",
    )

    tls_cert_file: Path | None = Field(
        None,
        description="Certificate chain (PEM) to serve TLS with on the public ports: the gRPC API and the "
        "web edge. Needs ZX_GATEWAY_TLS_KEY_FILE. Unset: plaintext (keep the gateway on loopback then).",
    )
    tls_key_file: Path | None = Field(None, description="Private key (PEM) of ZX_GATEWAY_TLS_CERT_FILE.")

    @field_validator("tls_cert_file", "tls_key_file", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        # An empty variable (ZX_GATEWAY_TLS_CERT_FILE=) means unset, not the current folder.
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return Path(value).expanduser() if isinstance(value, (str, Path)) else value

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both ZX_GATEWAY_TLS_CERT_FILE and ZX_GATEWAY_TLS_KEY_FILE, or neither")
        return self

    @model_validator(mode="after")
    def _one_jwks(self) -> GatewaySettings:
        if self.jwt_jwks_url and self.jwt_jwks_json:
            raise ValueError("set ZX_GATEWAY_JWT_JWKS_URL or ZX_GATEWAY_JWT_JWKS_JSON, not both")
        return self

    @property
    def supabase_mode(self) -> bool:
        """SUPABASE_JWT_SECRET is set: Supabase Auth signs users in, the gateway's own accounts are off."""
        secret = self.supabase_jwt_secret
        return secret is not None and bool(secret.get_secret_value().strip())

    @property
    def trainer_token_value(self) -> str | None:
        token = self.trainer_token or self.service_token
        return token.get_secret_value() if token else None

    @property
    def artifact_root(self) -> Path:
        if self.artifact_dir is not None:
            return self.artifact_dir.expanduser()
        return Path(os.environ.get("ZX_HOME", "~/.zehanx")).expanduser() / "artifacts"

    @property
    def zx_home(self) -> Path:
        return Path(os.environ.get("ZX_HOME", "~/.zehanx")).expanduser()

    @property
    def upload_root(self) -> Path:
        if self.upload_dir is not None:
            return self.upload_dir.expanduser()
        return self.zx_home / "uploads"

    def secrets_key_value(self) -> str | None:
        """ZX_GATEWAY_SECRETS_KEY, else the content of $ZX_HOME/secrets-key, else None."""
        if self.secrets_key is not None and self.secrets_key.get_secret_value().strip():
            return self.secrets_key.get_secret_value().strip()
        try:
            text = (self.zx_home / "secrets-key").read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return text or None
