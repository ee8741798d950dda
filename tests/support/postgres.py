"""A fresh database per test on the session's real PostgreSQL (``postgres_url``, in ``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **params)


@contextlib.contextmanager
def fresh_database(postgres_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database named ``<prefix>_<random>``, dropped (connections and all) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield with_database(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database for one test, named after the test's folder (dropped after it)."""
    with fresh_database(postgres_url, request.path.parent.name) as url:
        yield url
