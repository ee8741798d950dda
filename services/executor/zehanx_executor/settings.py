"""Settings of the executor service (environment prefix ``ZX_EXECUTOR_``), built once at start."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from zehanx_runtime.settings import ServiceSettings

MiB = 1024 * 1024
GiB = 1024 * MiB


class ExecutorSettings(ServiceSettings):
    """Everything the executor reads from its environment. Domain code gets values from here."""

    model_config = SettingsConfigDict(env_prefix="ZX_EXECUTOR_", extra="ignore")

    port: int = Field(47104, ge=0, le=65535, description="Port of the executor service.")

    # Which backend runs programs.
    backend: Literal["auto", "local", "e2b"] = Field(
        "auto", description="auto: E2B when an E2B API key is set, else the local sandbox."
    )
    unsafe_dev_no_sandbox: bool = Field(
        False,
        description="DEVELOPMENT ONLY, UNSAFE: run programs as plain processes with no isolation at all. "
        "Never the default; only for hosts that cannot sandbox, with code you wrote yourself.",
    )

    # Slots: how many programs run at once, and how many may wait for one.
    max_concurrent: int = Field(
        8,
        ge=1,
        le=256,
        description="Programs running at once. 8 on a 2-core, 24 GiB host: jobs share the cores (they slow "
        "down, they do not fail) and 8 x the default 2 GiB memory limit stays under the host's RAM.",
    )
    max_queue: int = Field(
        16,
        ge=0,
        le=10_000,
        description="Executions that may wait for a slot; beyond "
        "that Execute answers RESOURCE_EXHAUSTED at once.",
    )
    queue_timeout_s: float = Field(
        300.0, gt=0, le=86_400, description="Longest wait for a slot before RESOURCE_EXHAUSTED."
    )

    # The local sandbox.
    work_dir: Path = Field(
        Path("/var/lib/zehanx/executor"),
        description="Job folders (one tmpfs each) and stage mount points. Every parent must be searchable "
        "by other users (o+x) so the unprivileged sandbox uids can reach their job folder.",
    )
    uid_base: int = Field(
        62000,
        ge=1000,
        le=2**31 - 70_000,
        description="Slot n runs as uid/gid uid_base + n (no /etc/passwd entry needed). Keep the range "
        "[uid_base, uid_base + max_concurrent] unused on the host and distinct per executor.",
    )
    python_roots: list[Path] = Field(
        default_factory=list,
        description="Folders bound read-only at their own paths so sandboxed programs find Python and its "
        "packages. Empty: the executor's own interpreter (sys.prefix and sys.base_prefix).",
    )
    runtime_dir: Path | None = Field(
        None, description="Optional read-only folder at /zx/runtime in the sandbox."
    )
    extra_ro_binds: list[Path] = Field(
        default_factory=list,
        description="More host folders bound read-only at their own paths (e.g. CUDA libraries outside /usr).",
    )
    env_allowlist: list[str] = Field(
        default_factory=lambda: [
            "ZX_*",
            "PYTHONHASHSEED",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "TOKENIZERS_PARALLELISM",
            "CUBLAS_WORKSPACE_CONFIG",
        ],
        description="Environment variable names (fnmatch patterns) a request may set for its program. "
        "Names that look like secrets (KEY, TOKEN, SECRET, PASSWORD, ...) are refused regardless.",
    )

    # Limits: defaults for unset request fields, and ceilings that lower what a request asks.
    default_wall_s: float = Field(600.0, gt=0, le=86_400)
    max_wall_s: float = Field(86_400.0, gt=0, le=86_400)
    max_cpu_s: float = Field(86_400.0 * 16, gt=0)
    default_memory_bytes: int = Field(2 * GiB, ge=16 * MiB)
    max_memory_bytes: int = Field(16 * GiB, ge=16 * MiB)
    default_processes: int = Field(64, ge=1, le=4096)
    max_processes: int = Field(1024, ge=1, le=4096)
    default_disk_bytes: int = Field(
        512 * MiB,
        ge=MiB,
        description="Job folder size. It is a tmpfs: its pages live in RAM and count against the job's "
        "memory limit.",
    )
    max_disk_bytes: int = Field(8 * GiB, ge=MiB)
    default_output_bytes: int = Field(10 * MiB, ge=1024)
    max_output_bytes: int = Field(1 * GiB, ge=1024)
    default_file_size_bytes: int = Field(512 * MiB, ge=1024)
    max_file_size_bytes: int = Field(8 * GiB, ge=1024)
    default_collect_bytes: int = Field(256 * MiB, ge=0)
    max_collect_bytes: int = Field(1 * GiB, ge=0)
    open_files: int = Field(1024, ge=16, le=1 << 20, description="RLIMIT_NOFILE of sandboxed programs.")
    tmp_bytes: int = Field(64 * MiB, ge=MiB, description="Size of the sandbox's private /tmp.")

    # E2B.
    e2b_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ZX_EXECUTOR_E2B_API_KEY", "E2B_API_KEY"),
        description="E2B API key (E2B_API_KEY is read too); set, it selects the E2B backend under auto.",
    )
    e2b_template: str | None = Field(None, description="E2B template; unset: code-interpreter-v1.")
    e2b_domain: str | None = Field(None, description="E2B domain; unset: the SDK's default.")
    e2b_request_timeout_s: float = Field(60.0, gt=0, le=600, description="Per E2B HTTP request.")
    e2b_lifetime_margin_s: float = Field(
        120.0, ge=0, le=3600, description="Sandbox lifetime beyond the wall-clock limit (setup, downloads)."
    )
    e2b_allow_internet: bool = Field(False, description="Let E2B sandboxes reach the internet.")

    def resolved_python_roots(self) -> list[Path]:
        if self.python_roots:
            return list(self.python_roots)
        roots = [Path(sys.prefix), Path(sys.base_prefix)]
        return [r for r in dict.fromkeys(roots) if not str(r).startswith("/usr")]

    def python_bin_dir(self) -> str:
        return str(Path(sys.prefix) / "bin")

    @property
    def use_e2b(self) -> bool:
        if self.backend == "local":
            return False
        if self.backend == "e2b":
            return True
        return self.e2b_api_key is not None and bool(self.e2b_api_key.get_secret_value())
