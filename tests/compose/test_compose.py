"""docker-compose.yml and docker/*.Dockerfile: every service, port, health check and dependency.

There is no Docker engine on the development machine, so the file is checked for shape, and its
health-check one-liners are run for real against a gRPC health server.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from grpc_health.v1 import health_pb2
from zehanx_cli.settings import LauncherSettings
from zehanx_cli.settings_doc import env_names, service_settings_class
from zehanx_runtime.server import start_server
from zehanx_runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "crawler", "codegen", "executor", "trainer")
INTERNAL = ("crawler", "codegen", "executor", "trainer")
DEFAULT_PORTS = {name: LauncherSettings.model_fields[f"{name}_port"].default for name in SERVICES}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_of(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][name]["environment"].items()}


def test_one_container_per_service_plus_postgres(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*SERVICES, "postgres"}


def test_postgres_is_postgres_16_with_pg_isready(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["environment"]["POSTGRES_DB"] == "zehanx"
    assert "ports" not in postgres  # reachable on the compose network only


def test_launcher_and_compose_ports_match_each_service_settings_default() -> None:
    for name in SERVICES:
        assert service_settings_class(name).model_fields["port"].default == DEFAULT_PORTS[name], name


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_built_from_its_own_dockerfile(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["build"] == {"context": ".", "dockerfile": f"docker/{name}.Dockerfile"}
    dockerfile = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install -r requirements.txt" in dockerfile
    assert re.search(rf'^CMD \["zx-{name}"\]$', dockerfile, re.M)
    assert re.search(rf"^EXPOSE {DEFAULT_PORTS[name]}$", dockerfile, re.M)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[f"zx-{name}"] == f"zehanx_{name}.__main__:main"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_binds_all_interfaces_on_its_port_with_the_shared_token(
    compose: dict[str, Any], name: str
) -> None:
    env = env_of(compose, name)
    prefix = f"ZX_{name.upper()}_"
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert env[f"{prefix}PORT"] == str(DEFAULT_PORTS[name])
    assert env[f"{prefix}SERVICE_TOKEN"].startswith("${ZX_SERVICE_TOKEN:?")
    # Every variable is one the service really reads. PYTHONUNBUFFERED is Python's own; ZX_HOME is the
    # suite-wide state folder every service may derive defaults from.
    cls = service_settings_class(name)
    read = {n for field in cls.model_fields for n in env_names(cls, field)} | {"PYTHONUNBUFFERED", "ZX_HOME"}
    for key in env:
        assert key in read, f"{key} is not a setting of {name}"


def test_codegen_can_be_switched_to_groq_from_the_host(compose: dict[str, Any]) -> None:
    """The templates by default; the operator's ZX_CODEGEN_BACKEND and Groq key reach codegen unchanged."""
    env = env_of(compose, "codegen")
    assert env["ZX_CODEGEN_BACKEND"] == "${ZX_CODEGEN_BACKEND:-template}"
    assert env["ZX_CODEGEN_GROQ_API_KEY"] == "${ZX_CODEGEN_GROQ_API_KEY:-}"
    backends = service_settings_class("codegen").model_fields["backend"].annotation
    assert {"template", "groq"} <= set(getattr(backends, "__args__", ()))


def test_only_the_gateway_is_published_to_the_host(compose: dict[str, Any]) -> None:
    published = {name for name, svc in compose["services"].items() if "ports" in svc}
    assert published == {"gateway"}
    assert compose["services"]["gateway"]["ports"] == ["127.0.0.1:47101:47101"]
    for name in INTERNAL:
        assert compose["services"][name]["expose"] == [str(DEFAULT_PORTS[name])]


def test_the_gateway_reaches_postgres_and_every_internal_service_by_name(compose: dict[str, Any]) -> None:
    env = env_of(compose, "gateway")
    assert re.fullmatch(
        r"postgresql://postgres:\$\{ZX_POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432/zehanx",
        env["ZX_GATEWAY_DATABASE_URL"],
    )
    for name in INTERNAL:
        assert env[f"ZX_GATEWAY_{name.upper()}_ADDRESS"] == f"{name}:{DEFAULT_PORTS[name]}"
    assert (
        env_of(compose, "trainer")["ZX_TRAINER_EXECUTOR_ADDRESS"] == f"executor:{DEFAULT_PORTS['executor']}"
    )


def test_dependencies_wait_for_healthy_containers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["gateway"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("postgres", *INTERNAL)
    }
    assert services["trainer"]["depends_on"] == {
        "executor": {"condition": "service_healthy"},
        "crawler": {"condition": "service_healthy"},  # it reads datasets from the crawler
    }
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert "healthcheck" in services[dependency], (
                f"{name} waits on {dependency}, which has no health check"
            )


def test_no_two_services_share_a_data_volume(compose: dict[str, Any]) -> None:
    """Uploads, datasets and models cross between services as gRPC streams, never through a shared disk."""
    owners: dict[str, str] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert source not in owners, f"{name} and {owners.get(source)} share the volume {source}"
            owners[source] = name
    assert env_of(compose, "trainer")["ZX_TRAINER_CRAWLER_ADDRESS"] == f"crawler:{DEFAULT_PORTS['crawler']}"
    assert "ZX_CRAWLER_LOCAL_ROOTS" not in env_of(compose, "crawler")


def test_the_executor_gets_the_sandbox_privileges_and_no_more(compose: dict[str, Any]) -> None:
    executor = compose["services"]["executor"]
    assert executor["cap_add"] == ["SYS_ADMIN"]
    assert executor.get("privileged", False) is False
    assert executor["cgroup"] == "private"
    for name in ("gateway", *INTERNAL):
        if name != "executor":
            assert "cap_add" not in compose["services"][name]
            assert "USER zehanx" in (ROOT / "docker" / f"{name}.Dockerfile").read_text()


def _probe(compose: dict[str, Any], name: str, port: int) -> subprocess.CompletedProcess[str]:
    """Run ``name``'s compose health check, pointed at ``port`` on this machine."""
    code = compose["services"][name]["healthcheck"]["test"][3]
    code = code.replace(f"127.0.0.1:{DEFAULT_PORTS[name]}", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_every_service_uses_the_same_health_check_on_its_own_port(compose: dict[str, Any]) -> None:
    codes = set()
    for name in SERVICES:
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        assert f"127.0.0.1:{DEFAULT_PORTS[name]}" in test[3]
        codes.add(test[3].replace(str(DEFAULT_PORTS[name]), "PORT"))
    assert len(codes) == 1


async def test_the_health_check_passes_on_serving_and_fails_otherwise(compose: dict[str, Any]) -> None:
    settings = ServiceSettings(port=0, allow_no_token=True)
    running = await start_server(settings, [], service_name="crawler")
    try:
        serving = await asyncio.to_thread(_probe, compose, "crawler", running.port)
        assert serving.returncode == 0, serving.stderr
        await running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        not_serving = await asyncio.to_thread(_probe, compose, "crawler", running.port)
        assert not_serving.returncode == 1, not_serving.stderr
    finally:
        await running.stop(None)
    nothing = await asyncio.to_thread(_probe, compose, "crawler", running.port)
    assert nothing.returncode != 0
    assert "UNAVAILABLE" in nothing.stderr
