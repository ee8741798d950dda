"""Settings of the local launcher (``zx up`` / ``zx status`` / ``zx down``), environment prefix ``ZX_``.

The per-service port variables are the very ones each service reads (``ZX_GATEWAY_PORT`` is both the
launcher's idea of where the gateway listens and the gateway's own setting), so one variable means one
thing everywhere. ``zx up`` passes them, the host and the service token on to every child.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Services in start order: dependencies first, the public gateway last.
SERVICES = ("executor", "crawler", "codegen", "trainer", "gateway")


class LauncherSettings(BaseSettings):
    """Where the local suite keeps its state and where each part of it listens."""

    model_config = SettingsConfigDict(env_prefix="ZX_", extra="ignore")

    home: Path = Field(
        Path("~/.zehanx"),
        description="Local state: service token, logs, run state, PostgreSQL password (and data, see README).",
    )
    host: str = Field("127.0.0.1", description="Address every service and PostgreSQL binds to.")
    gateway_port: int = Field(47101, ge=1, le=65535, description="Port of the public gateway API.")
    crawler_port: int = Field(47102, ge=1, le=65535, description="Port of the crawler service.")
    codegen_port: int = Field(47103, ge=1, le=65535, description="Port of the codegen service.")
    executor_port: int = Field(47104, ge=1, le=65535, description="Port of the executor service.")
    trainer_port: int = Field(47105, ge=1, le=65535, description="Port of the trainer service.")
    postgres_port: int = Field(47110, ge=1, le=65535, description="Port of the embedded PostgreSQL (TCP).")
    gateway_metrics_port: int = Field(
        47121, ge=0, le=65535, description="Port of the gateway's Prometheus /metrics (0: any free port)."
    )
    crawler_metrics_port: int = Field(
        47122, ge=0, le=65535, description="Port of the crawler's Prometheus /metrics (0: any free port)."
    )
    codegen_metrics_port: int = Field(
        47123, ge=0, le=65535, description="Port of the codegen's Prometheus /metrics (0: any free port)."
    )
    executor_metrics_port: int = Field(
        47124, ge=0, le=65535, description="Port of the executor's Prometheus /metrics (0: any free port)."
    )
    trainer_metrics_port: int = Field(
        47125, ge=0, le=65535, description="Port of the trainer's Prometheus /metrics (0: any free port)."
    )
    postgres_user: str = Field(
        "nobody",
        description="When zx runs as root: the unprivileged system user that runs the embedded PostgreSQL "
        "(PostgreSQL refuses to run as root).",
    )
    gateway_database_url: SecretStr | None = Field(
        None,
        description="Set it to use an existing PostgreSQL (Supabase's included): zx up then starts no "
        "embedded one and hands this URL to the gateway.",
    )
    gateway_address: str | None = Field(
        None,
        description="The gateway the CLI's commands (zx train, jobs, download...) call: host:port, "
        "https://host:port (TLS) or http://host:port. Unset: this ZX_HOME's suite.",
    )
    tls_ca_file: Path | None = Field(
        None,
        description="CA certificate(s) (PEM) the CLI trusts for the gateway's TLS; setting it turns TLS on. "
        "Unset: https:// addresses use the system's roots, the local suite's TLS gateway its own certificate.",
    )
    startup_timeout: float = Field(
        120.0, gt=0, le=3600, description="Seconds zx up waits for every service to report SERVING."
    )
    stop_timeout: float = Field(
        15.0,
        gt=0,
        le=600,
        description="Seconds zx down waits after SIGTERM before it SIGKILLs a service's process group.",
    )

    # zx up --ray / --ray-address: the Ray node zx runs next to the suite (see ray_local.py).
    ray_port: int = Field(
        47130,
        ge=1,
        le=65525,
        description="zx up --ray: the Ray head's GCS port (the executor's ZX_EXECUTOR_RAY_ADDRESS); the "
        "node's other ports are the ten after it (raylet, object manager, metrics, dashboard agent x2, "
        "runtime-env agent, client server, dashboard and autoscaler metrics, dashboard). With "
        "--ray-address, the joining node uses the same ones but the GCS port.",
    )
    ray_worker_ports: str = Field(
        "47150-47199",
        pattern=r"^[0-9]+-[0-9]+$",
        description="zx up --ray / --ray-address: the port range of the node's Ray workers (one port each, "
        "drivers included), as LOW-HIGH.",
    )
    ray_memory_bytes: int = Field(
        0,
        ge=0,
        description="zx up --ray: memory (bytes) the head offers runs together (its --memory); 0: half of "
        "this machine's memory.",
    )
    ray_cpus: int = Field(0, ge=0, le=4096, description="zx up --ray: CPUs the head offers runs; 0: all.")
    ray_object_store_bytes: int = Field(
        500_000_000,
        ge=78_643_200,
        description="zx up --ray / --ray-address: the node's Ray object store (shared memory).",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return Path(value).expanduser().absolute()

    @model_validator(mode="after")
    def _distinct_ports(self) -> LauncherSettings:
        seen: dict[int, str] = {}
        metrics = {f"{name}_metrics": port for name, port in self.metrics_ports().items() if port}
        for name, port in {**self.ports(), **metrics}.items():
            if port in seen:
                raise ValueError(
                    f"{_port_variable(name)} and {_port_variable(seen[port])} are both {port}: "
                    "every service needs its own port"
                )
            seen[port] = name
        low, high = self.ray_worker_port_range()
        if not 1024 <= low <= high <= 65535:
            raise ValueError(
                f"ZX_RAY_WORKER_PORTS {self.ray_worker_ports!r} is not a range LOW-HIGH of ports"
            )
        return self

    def ray_port_clashes(self) -> list[str]:
        """The suite's ports that are also the Ray node's (checked by zx up --ray / --ray-address only)."""
        low, high = self.ray_worker_port_range()
        ray_ports = range(self.ray_port, self.ray_port + 11)
        metrics = {f"{name}_metrics": port for name, port in self.metrics_ports().items() if port}
        return [
            f"{_port_variable(name)} ({port}) is one of the Ray node's ports (ZX_RAY_PORT {self.ray_port} and "
            f"the ten after it, ZX_RAY_WORKER_PORTS {self.ray_worker_ports}): move one of them"
            for name, port in {**self.ports(), **metrics}.items()
            if port in ray_ports or low <= port <= high
        ]

    def ray_worker_port_range(self) -> tuple[int, int]:
        low, high = (int(part) for part in self.ray_worker_ports.split("-"))
        return low, high

    def ports(self) -> dict[str, int]:
        """Port of every part of the suite, PostgreSQL included, by name."""
        ports = {name: getattr(self, f"{name}_port") for name in SERVICES}
        ports["postgres"] = self.postgres_port
        return ports

    def metrics_ports(self) -> dict[str, int]:
        """Port of each service's /metrics endpoint, by service name (0: pick a free one at start)."""
        return {name: getattr(self, f"{name}_metrics_port") for name in SERVICES}

    @property
    def connect_host(self) -> str:
        """The host a client on this machine dials (a wildcard bind is reached over loopback)."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host

    def address(self, name: str) -> str:
        return f"{self.connect_host}:{self.ports()[name]}"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def token_file(self) -> Path:
        return self.home / "service-token"


def _port_variable(name: str) -> str:
    return f"ZX_{name.upper()}_PORT"


def port_variable(name: str) -> str:
    """The environment variable that sets the port of ``name`` (``ZX_GATEWAY_PORT``)."""
    return _port_variable(name)
