"""Settings of the gateway's job workers (environment prefix ``ZX_GATEWAY_``, like the gateway's).

A class of their own so that the API settings stay the gateway's; both read the same prefix.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestratorSettings(BaseSettings):
    """How many jobs a gateway runs, its leases, and how long it waits for the internal services."""

    model_config = SettingsConfigDict(env_prefix="ZX_GATEWAY_", extra="ignore", populate_by_name=True)

    workers: int = Field(
        2, ge=0, le=256, description="Jobs this gateway runs at once (0: serve the API only, run no jobs)."
    )
    lease_seconds: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="A worker's lease on a job; when it is not renewed in time (the gateway died) another "
        "worker takes the job over.",
    )
    claim_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="How often an idle worker looks for queued jobs and expired leases."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Times a job is taken up after its worker died before it FAILS with WORKER_LOST.",
    )
    service_retry_seconds: float = Field(
        120.0,
        ge=0,
        le=3600,
        description="How long a job waits for an unreachable (restarting) crawler, codegen or trainer "
        "before it fails with SERVICE_UNAVAILABLE.",
    )
    node_lost_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Times the training run starts again from its start (on another node) after the "
        "trainer answers NODE_LOST (its Ray node or worker died mid-run) before the job FAILS with "
        "NODE_LOST.",
    )
    crawl_timeout_seconds: float = Field(
        900.0, gt=0, le=86400, description="Deadline of one BuildDataset call."
    )
    codegen_timeout_seconds: float = Field(
        300.0, gt=0, le=3600, description="Deadline of one PlanTask, GenerateProgram or RepairProgram call."
    )
    training_margin_seconds: float = Field(
        900.0,
        gt=0,
        le=86400,
        description="Deadline of one Train call beyond its training budget (staging, smoke run, "
        "evaluation, storing).",
    )
    default_training_seconds: float = Field(
        1800.0, gt=0, le=86400, description="Training budget of a job whose options set none."
    )
    test_break_programs: int = Field(
        0,
        ge=0,
        le=10,
        description="TESTS ONLY: break this many programs in a row (the generated one, then each repair) "
        "by making their train.py raise at start, to exercise the repair loop. Never set in production.",
    )
