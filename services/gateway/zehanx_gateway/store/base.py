"""What every store module shares: the one translation of database errors, the pool, the advisory-lock
keys, and the keyset page of a list ordered newest first.

Database errors are translated once, here: a lost connection or a full pool is UNAVAILABLE, an illegal
transition FAILED_PRECONDITION, a value PostgreSQL cannot store INVALID_ARGUMENT.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from zehanx_runtime import errors

from zehanx_gateway import paging
from zehanx_gateway.domain import Page

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: First key of the two-key advisory locks taken by the stores (the second is a hash).
LOCK_USER_JOBS = 0x7A78_0001
LOCK_ARTIFACT = 0x7A78_0002
LOCK_USER_UPLOADS = 0x7A78_0003


def translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn database failures into domain errors (the one place this happens)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except PoolTimeout as exc:
            raise errors.Unavailable(
                "the job registry is busy or unreachable; retry shortly", reason="DATABASE_UNAVAILABLE"
            ) from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc

    return wrapper


def translate(exc: psycopg.Error) -> Exception:
    if exc.sqlstate == "ZX001":
        message = exc.diag.message_primary or str(exc)
        return errors.FailedPrecondition(message, reason="ILLEGAL_TRANSITION")
    if isinstance(exc, psycopg.OperationalError) or exc.sqlstate in ("40001", "40P01", "57P01", "57P03"):
        return errors.Unavailable(
            "the job registry is unavailable; retry shortly", reason="DATABASE_UNAVAILABLE"
        )
    if isinstance(exc, psycopg.DataError):
        return errors.InvalidArgument(
            f"a value cannot be stored: {exc.diag.message_primary or exc}", reason="UNSTORABLE_VALUE"
        )
    return exc


class PoolStore:
    """A store over one psycopg connection pool (rows as dicts: see :func:`zehanx_gateway.db.open_pool`)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    async def _keyset_page(
        self,
        select: str,
        params: Mapping[str, Any],
        *,
        order: tuple[str, str],
        kind: str,
        filters: Sequence[Any],
        page_size: int,
        page_token: str,
        item: Callable[[dict[str, Any]], T],
        position: Callable[[T], tuple[datetime, uuid.UUID]],
    ) -> Page[T]:
        """One page of a list ordered newest first by ``order`` (a time column, then an id column).

        ``select`` is the query up to its last ``where`` condition; this adds the keyset condition
        (rows before the position the token carries), the order and ``limit page_size + 1``: the one
        row more tells whether a next page exists. The token is bound to ``kind`` and ``filters``
        (:mod:`zehanx_gateway.paging`), so it cannot continue another list or another filter.
        """
        fp = paging.fingerprint(kind, *filters)
        after_time, after_id = _keyset(paging.decode(page_token, kind, fp))
        time_column, id_column = order
        sql = (
            f"{select} and (%(t)s::timestamptz is null or ({time_column}, {id_column}) < (%(t)s, %(i)s::uuid))"
            f" order by {time_column} desc, {id_column} desc limit %(limit)s"
        )
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql,  # type: ignore[arg-type]  # built from fixed fragments
                {**params, "t": after_time, "i": after_id, "limit": page_size + 1},
            )
            rows = await cur.fetchall()
        return paging.page_of(
            [item(r) for r in rows], page_size, kind, fp, lambda last: _position(position(last))
        )


def _position(key: tuple[datetime, uuid.UUID]) -> dict[str, Any]:
    return {"t": key[0].isoformat(), "i": str(key[1])}


def _keyset(position: dict[str, Any] | None) -> tuple[datetime | None, uuid.UUID | None]:
    if position is None:
        return None, None
    try:
        return datetime.fromisoformat(position["t"]), uuid.UUID(position["i"])
    except (KeyError, TypeError, ValueError):
        raise paging.bad_token("page_token is damaged") from None


def job_not_found(job_id: uuid.UUID) -> errors.NotFound:
    return errors.NotFound(
        f"job {job_id} not found", reason="JOB_NOT_FOUND", metadata={"job_id": str(job_id)}
    )


def model_not_found(model_id: uuid.UUID) -> errors.NotFound:
    return errors.NotFound(
        f"model {model_id} not found", reason="MODEL_NOT_FOUND", metadata={"model_id": str(model_id)}
    )
