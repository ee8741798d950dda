"""The embedded PostgreSQL that zx up starts and tests share (through the ``postgres_url`` fixture)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest
from zehanx_cli import procs
from zehanx_cli.errors import LaunchError
from zehanx_cli.postgres import EmbeddedPostgres


def test_postgres_url_reaches_the_zehanx_database_over_tcp(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://postgres:")
    assert "@127.0.0.1:" in postgres_url
    with psycopg.connect(postgres_url) as conn:
        database, version = conn.execute(
            "SELECT current_database(), current_setting('server_version_num')"
        ).fetchone()
        assert database == "zehanx"
        assert int(version) >= 180000
        conn.execute("CREATE TEMP TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (41), (1)")
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (42,)


def test_a_wrong_password_is_refused(embedded_postgres: EmbeddedPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=embedded_postgres.port, user="postgres", password="guess", dbname="zehanx"
        )


def test_the_password_file_is_private(embedded_postgres: EmbeddedPostgres) -> None:
    mode = stat.S_IMODE(embedded_postgres.password_file.stat().st_mode)
    assert mode == 0o600


def test_the_server_never_runs_as_root_and_listens_on_no_unix_socket(
    embedded_postgres: EmbeddedPostgres,
) -> None:
    pid = embedded_postgres.running_pid()
    assert pid is not None
    uid = os.stat(f"/proc/{pid}").st_uid
    if os.geteuid() == 0:
        assert uid != 0
    else:
        assert uid == os.geteuid()
    with psycopg.connect(embedded_postgres.url()) as conn:
        assert conn.execute("SHOW unix_socket_directories").fetchone() == ("",)


@pytest.mark.skipif(os.geteuid() != 0, reason="the /var/tmp fallback only applies when zx runs as root")
def test_a_home_the_runtime_user_cannot_reach_gets_its_cluster_under_var_tmp(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    server = EmbeddedPostgres(closed / "home", port=procs.free_port())
    assert server.cluster_dir == server.runtime_dir / "postgres"
    assert str(server.runtime_dir).startswith("/var/tmp/zehanx-")
    process = server.start(log_path=closed / "pg.log")
    try:
        assert (closed / "home" / "postgres").is_symlink()
        assert server.ready()
        # The home's parents were not opened up: the folder above it is still 0700.
        assert stat.S_IMODE(closed.stat().st_mode) == 0o700
        with pytest.raises(LaunchError, match="still running"):
            server.purge()
    finally:
        server.stop(process.pid)
        process.wait(timeout=10)
        server.purge()
    assert not server.runtime_dir.exists()
    assert not (closed / "home" / "postgres").exists()


def test_a_second_start_on_the_same_cluster_is_refused(
    embedded_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    with pytest.raises(LaunchError, match="already runs"):
        embedded_postgres.start(log_path=tmp_path / "again.log")
