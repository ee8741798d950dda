"""The gateway's PostgreSQL: a psycopg 3 connection pool and the SQL migrations applied at start.

Migrations are the plain ``migrations/NNNN_name.sql`` files of this package, applied in order, each in
its own transaction, under a transaction-scoped advisory lock (``pg_advisory_xact_lock``) so that several
replicas starting at once apply each file exactly once. The lock lives and dies with the transaction,
so it also works through a transaction-mode pooler, where a session lock can stay held by whichever
server connection ran it and its unlock can run on another. The checksum of every applied file is
recorded: editing an applied migration is an error.

Supabase's pooler: "although the direct connections and Supavisor in session mode support prepared
statements, Supavisor in transaction mode does not [...] Psycopg: set the prepare_threshold to None"
(supabase.com/docs/guides/troubleshooting/disabling-prepared-statements-qL8lEL); "port 6543 will only
support Transaction Mode while port 5432 continues to support Session Mode" (github.com/orgs/supabase/
discussions/32755); and "session-level SET, LISTEN, session advisory locks and temporary tables" leave
session state behind in transaction mode (Supavisor 2.10 release notes). :func:`is_transaction_pooler`
detects it from the URL; the gateway then turns prepared statements and LISTEN off.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from zehanx_runtime.logging import get_logger

#: Arbitrary constant key of the advisory lock held while migrating ("zehanx" in ASCII, truncated).
_MIGRATION_LOCK = 0x7A65_6861_6E78

#: The port of a transaction-mode pooler: Supabase's Supavisor (aws-0-<region>.pooler.supabase.com)
#: and its dedicated PgBouncer (db.<ref>.supabase.co) both answer in transaction mode on 6543, and in
#: session mode (which keeps prepared statements and LISTEN) on 5432.
TRANSACTION_POOLER_PORT = 6543

log = get_logger("zehanx.gateway.db")


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migration files shipped with this package, in order."""
    folder = importlib.resources.files("zehanx_gateway") / "migrations"
    found = [
        Migration(version=entry.name.removesuffix(".sql"), sql=entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    if not found:
        raise RuntimeError(f"no SQL migrations found in {folder}: is the zehanx_gateway package complete?")
    return sorted(found, key=lambda m: m.version)


def is_transaction_pooler(conninfo: str) -> bool:
    """Whether ``conninfo`` reaches a transaction-mode pooler (port 6543 on any of its hosts)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return False
    ports = str(params.get("port") or "").split(",")
    return any(port.strip() == str(TRANSACTION_POOLER_PORT) for port in ports)


async def migrate(conninfo: str) -> list[str]:
    """Apply every migration not yet applied; return the versions applied now.

    Every step is one transaction that first takes the migration lock, so the lock never outlives it
    (see the module's docstring); statements are never prepared.
    """
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, prepare_threshold=None
    ) as conn:
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute("create schema if not exists zehanx")
            await conn.execute(
                """
                create table if not exists zehanx.schema_migrations (
                    version      text primary key,
                    sha256       text not null,
                    applied_time timestamptz not null default now()
                )
                """
            )
            cursor = await conn.execute("select version, sha256 from zehanx.schema_migrations")
            done = {version: digest for version, digest in await cursor.fetchall()}
        for migration in migrations():
            if migration.version not in done:
                async with conn.transaction():
                    await conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    cursor = await conn.execute(
                        "select sha256 from zehanx.schema_migrations where version = %s", (migration.version,)
                    )
                    row = await cursor.fetchone()
                    if row is None:
                        await conn.execute(migration.sql)  # type: ignore[arg-type]  # our own trusted file
                        await conn.execute(
                            "insert into zehanx.schema_migrations (version, sha256) values (%s, %s)",
                            (migration.version, migration.sha256),
                        )
                        applied_now.append(migration.version)
                        log.info("migration applied", version=migration.version)
                        continue
                    done[migration.version] = row[0]  # another replica applied it meanwhile
            if done[migration.version] != migration.sha256:
                raise RuntimeError(
                    f"migration {migration.version} was edited after it was applied to this "
                    "database; add a new migration file instead"
                )
    return applied_now


async def open_pool(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    prepare: bool = True,
    connect_timeout: float = 10.0,
) -> AsyncConnectionPool:
    """Open a pool of autocommit connections (transactions are explicit) returning dict rows.

    Connections are not pinged on every checkout (that would double the round trips of a GetJob); a
    connection that broke is discarded when it is returned, and the pool reconnects in the background.

    ``prepare=False`` turns off server-side prepared statements, for transaction-mode poolers
    (Supabase's pooler on port 6543) that cannot keep them.
    """

    async def configure(conn: psycopg.AsyncConnection) -> None:
        conn.prepare_threshold = 5 if prepare else None

    pool = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=configure,
        timeout=connect_timeout,
        open=False,
        name="zehanx-gateway",
    )
    try:
        await pool.open(wait=True, timeout=connect_timeout)
    except Exception as exc:
        await pool.close()
        raise RuntimeError(f"cannot connect to PostgreSQL ({redact(conninfo)}): {exc}") from exc
    return pool


def redact(conninfo: str) -> str:
    """The connection string with any password replaced, for messages and logs."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparseable database URL>"
    if params.get("password"):
        params["password"] = "***"
    return psycopg.conninfo.make_conninfo("", **params)
