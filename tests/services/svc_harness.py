"""The ``service_factory`` fixture: real service processes, stopped after the test.

The process helpers themselves live in ``tests/support/services.py``; they are re-exported here for the
bench scripts and suites that put only ``tests/services`` on ``sys.path``.
"""
# Imported by tests as ``svc_harness`` (pytest puts this folder on sys.path).

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.services import (  # noqa: E402
    ServiceProcess,
    descendants,
    free_port,
    start_service,
    zx_api_key,
)

__all__ = ["ServiceProcess", "descendants", "free_port", "service_factory", "start_service", "zx_api_key"]


@pytest.fixture
def service_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    started: list[ServiceProcess] = []

    def factory(name: str, **kw: object) -> ServiceProcess:
        if name == "gateway":
            # The gateway keeps its registry in PostgreSQL: give it the session's real server.
            env = {"ZX_GATEWAY_DATABASE_URL": request.getfixturevalue("postgres_url")}
            env.update(kw.pop("extra_env", None) or {})  # type: ignore[arg-type]
            kw["extra_env"] = env
        svc = start_service(name, tmp_path, **kw)  # type: ignore[arg-type]
        started.append(svc)
        return svc

    yield factory
    for svc in started:
        svc.stop()
