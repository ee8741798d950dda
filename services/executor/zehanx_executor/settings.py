"""Settings of the executor service (environment prefix ``ZX_EXECUTOR_``), built once at start."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from zehanx_runtime.settings import ServiceSettings

from zehanx_executor.sandbox.e2b_template import TEMPLATE_NAME

MiB = 1024 * 1024
GiB = 1024 * MiB

#: uids a sandbox slot may never run as (finding L4): a host process with the same uid could ptrace the
#: jobs or read their /proc. 0-999 are system users; 61184-65519 is systemd's DynamicUser range, whose
#: uids services get at run time without any /etc/passwd entry; 65520-65535 holds nobody (65534) and
#: the 16-bit -1.
RESERVED_UIDS = ((0, 999, "system users"), (61184, 65535, "systemd's dynamic service users and nobody"))


def host_memory_bytes() -> int:
    """MemTotal of /proc/meminfo (0 when unreadable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ExecutorSettings(ServiceSettings):
    """Everything the executor reads from its environment. Domain code gets values from here."""

    model_config = SettingsConfigDict(env_prefix="ZX_EXECUTOR_", extra="ignore")

    port: int = Field(47104, ge=0, le=65535, description="Port of the executor service.")

    # Which backend runs programs.
    backend: Literal["auto", "local", "e2b", "ray"] = Field(
        "auto",
        description="auto: E2B when an E2B API key is set, else the local sandbox. ray: each run is a task "
        "on a Ray cluster (ray_address), in the local sandbox of the node Ray picks.",
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
        60600,
        ge=1000,
        le=2**31 - 70_000,
        description="Slot n runs as uid/gid uid_base + n (no /etc/passwd entry needed). Keep the range "
        "[uid_base, uid_base + max_concurrent] unused on the host and distinct per executor. The default "
        "lies in 60578-61183, which systemd leaves unused; ranges that overlap 0-999 (system users) or "
        "61184-65535 (systemd's dynamic service users, nobody) are refused.",
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
    memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Memory the running programs may ask for together (the sum of their memory limits); a "
        "run that would go over it waits for its turn like one waiting for a slot, and one that asks for "
        "more than all of it is refused. 0: three quarters of the host's MemTotal (the rest is for the "
        "platform's own services and the page cache). Local sandbox only.",
    )
    default_cpus: float = Field(
        0.0,
        ge=0,
        le=1024,
        description="CPU quota of a run in cores (cgroup cpu.max) when the request sets none. 0: half the "
        "host's cores, at least 1, so one job never takes every core (on a 2-core host: 1).",
    )
    max_cpus: float = Field(
        0.0,
        ge=0,
        le=1024,
        description="Most cores a request may ask for. 0: the host's cores minus one, at least 1, so even "
        "the largest run leaves a core to the platform and the other jobs.",
    )
    cpu_quota_required: bool = Field(
        True,
        description="Refuse to start when the host's cgroups cannot set a CPU quota (no cpu controller). "
        "false: run without quotas, with a warning in the log.",
    )
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

    # Warm sessions (ExecutorService.Session, local sandbox only): their own capacity, apart from the runs'.
    session_slots: int = Field(
        8,
        ge=1,
        le=256,
        description="Warm sessions (kept-alive sandboxed processes, e.g. predictors) open at once, apart from "
        "max_concurrent runs; beyond it Session answers RESOURCE_EXHAUSTED SESSION_CAPACITY at once. Session "
        "n runs as uid uid_base + max_concurrent + 1 + n.",
    )
    session_memory_bytes: int = Field(
        8 * GiB,
        ge=16 * MiB,
        description="Sum of the memory limits the open sessions may hold together; a session that does not "
        "fit answers RESOURCE_EXHAUSTED SESSION_CAPACITY, one asking for more than all of it "
        "FAILED_PRECONDITION SESSION_MEMORY_BUDGET. Apart from memory_budget_bytes (the runs').",
    )
    session_idle_s: float = Field(
        300.0, gt=0, le=86_400, description="A session with no call for this long is ended (default)."
    )
    session_max_idle_s: float = Field(
        3600.0, gt=0, le=86_400, description="Ceiling of the idle timeout a session may ask for."
    )

    # E2B.
    e2b_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ZX_EXECUTOR_E2B_API_KEY", "E2B_API_KEY"),
        description="E2B API key (E2B_API_KEY is read too); set, it selects the E2B backend under auto.",
    )
    e2b_template: str = Field(
        TEMPLATE_NAME,
        min_length=1,
        description="E2B template the sandboxes start from; it must hold CPU torch and safetensors (E2B's "
        "default code-interpreter-v1 has neither). `zx e2b build-template` builds it under this default "
        "name; the executor checks it once at start and refuses the E2B backend when it cannot import "
        "torch and safetensors.",
    )
    e2b_domain: str | None = Field(None, description="E2B domain; unset: the SDK's default.")
    e2b_request_timeout_s: float = Field(60.0, gt=0, le=600, description="Per E2B HTTP request.")
    e2b_lifetime_margin_s: float = Field(
        120.0, ge=0, le=3600, description="Sandbox lifetime beyond the wall-clock limit (setup, downloads)."
    )
    e2b_allow_internet: bool = Field(False, description="Let E2B sandboxes reach the internet.")

    # Ray (backend=ray): the executor is the cluster's driver; every node runs the local sandbox.
    ray_address: str = Field(
        "", description="host:port of the Ray cluster's GCS (the head's --port); required for backend=ray."
    )
    ray_auth_token: SecretStr | None = Field(
        None,
        description="The cluster's token (every node started with RAY_AUTH_MODE=token and this token). "
        "Required for backend=ray; never passed to a node's task or a sandbox.",
    )
    ray_auth_token_file: Path | None = Field(
        None, description="A file holding the Ray token (instead of ray_auth_token)."
    )
    ray_namespace: str = Field("zehanx", min_length=1, description="Ray namespace of the executor's tasks.")
    ray_node_resource: str = Field(
        "zx_sandbox",
        description="Custom resource that nodes able to run the sandbox declare (ray start --resources "
        "'{\"zx_sandbox\": 1}'); each run asks for 0.001 of it. Empty: any node.",
    )
    ray_first_event_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest wait for a node to take a run (placement plus worker start) before the call "
        "fails with DEADLINE_EXCEEDED.",
    )
    ray_cancel_grace_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="After a plain cancel, how long the run's task may take to clean up before it is "
        "force-killed and its node swept. 0: force-kill at once.",
    )

    @model_validator(mode="after")
    def _uids_clear_of_reserved_ranges(self) -> Self:
        # runs, then the probe, then the sessions
        low, high = self.uid_base, self.uid_base + self.max_concurrent + self.session_slots
        for first, last, what in RESERVED_UIDS:
            if low <= last and first <= high:
                raise ValueError(
                    f"uid_base: the sandbox uids {low}-{high} overlap {first}-{last} ({what}); a host "
                    "process with one of those uids could reach the jobs. Pick a range such as 60600 "
                    "(the default) or one above 65535 that nothing else on the host uses."
                )
        return self

    def resolved_default_cpus(self) -> float:
        """The CPU quota of a run that asks for none, in cores."""
        return self.default_cpus or max(1.0, (os.cpu_count() or 1) / 2)

    def resolved_max_cpus(self) -> float:
        """The most cores a run may ask for."""
        return self.max_cpus or float(max(1, (os.cpu_count() or 1) - 1))

    def resolved_memory_budget(self) -> int:
        """The sum of memory limits the running programs may hold at once, in bytes."""
        if self.memory_budget_bytes:
            return self.memory_budget_bytes
        total = host_memory_bytes()
        return total * 3 // 4 if total else 0

    def resolved_python_roots(self) -> list[Path]:
        if self.python_roots:
            return list(self.python_roots)
        roots = [Path(sys.prefix), Path(sys.base_prefix)]
        return [r for r in dict.fromkeys(roots) if not str(r).startswith("/usr")]

    def python_bin_dir(self) -> str:
        return str(Path(sys.prefix) / "bin")

    def resolved_ray_token(self) -> str:
        """The Ray token from ray_auth_token or ray_auth_token_file ('' when neither is set)."""
        if self.ray_auth_token is not None and self.ray_auth_token.get_secret_value():
            return self.ray_auth_token.get_secret_value()
        if self.ray_auth_token_file is not None:
            return self.ray_auth_token_file.read_text().strip()
        return ""

    @property
    def use_e2b(self) -> bool:
        if self.backend in ("local", "ray"):
            return False
        if self.backend == "e2b":
            return True
        return self.e2b_api_key is not None and bool(self.e2b_api_key.get_secret_value())
