"""The registry in PostgreSQL: users, API keys, jobs, job events, models, leases.

Every method that a user can reach takes the caller's ``user_id`` and filters by it, so another user's
row is simply not found (NOT_FOUND, never PERMISSION_DENIED: ids do not leak). The state machine, the
event of each transition and the sequence numbers are enforced by triggers (migrations/0001_registry.sql);
this module adds compare-and-set guards (expected states, version, lease owner and attempt) so that
racing writers have exactly one winner and a zombie worker's late write fails.

Database errors are translated once, here: a lost connection or a full pool is UNAVAILABLE, an illegal
transition FAILED_PRECONDITION, a value PostgreSQL cannot store INVALID_ARGUMENT.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import psycopg
import psycopg.errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from zehanx_runtime import errors

from zehanx_gateway import paging
from zehanx_gateway.domain import (
    ACTIVE_STATES,
    STATE_CHANGE,
    TERMINAL_STATES,
    ApiKey,
    DatasetRecord,
    Job,
    JobError,
    JobEvent,
    JobStage,
    JobState,
    Model,
    NewJob,
    NewModel,
    Page,
    PendingEvent,
    Provider,
    SealedProviderKey,
    Upload,
    UserSettings,
)

P = ParamSpec("P")
R = TypeVar("R")

#: First key of the two-key advisory locks taken by this module (the second is a hash).
_LOCK_USER_JOBS = 0x7A78_0001
_LOCK_ARTIFACT = 0x7A78_0002
_LOCK_USER_UPLOADS = 0x7A78_0003

_TERMINAL = [s.value for s in TERMINAL_STATES]
_ACTIVE = [s.value for s in ACTIVE_STATES]
_UNSET: Any = object()
#: Written only by the database (transitions) or never stored (snapshots).
_RESERVED_KINDS = frozenset({STATE_CHANGE, "snapshot"})


def _translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
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


def _job(row: dict[str, Any]) -> Job:
    error = None
    if row["error_message"]:
        error = JobError(
            code=row["error_code"] or "UNKNOWN",
            message=row["error_message"],
            reason=row["error_reason"] or "",
        )
    return Job(
        id=row["id"],
        user_id=row["user_id"],
        request_id=row["request_id"],
        prompt=row["prompt"],
        spec=row["spec"],
        state=JobState(row["state"]),
        stage=JobStage(row["stage"]) if row["stage"] else None,
        error=error,
        model_id=row["model_id"],
        dataset_id=row["dataset_id"],
        repair_count=row["repair_count"],
        last_sequence=row["last_sequence"],
        version=row["version"],
        attempt=row["attempt"],
        lease_owner=row["lease_owner"],
        lease_expire_time=row["lease_expire_time"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
    )


def _event(row: dict[str, Any]) -> JobEvent:
    return JobEvent(
        job_id=row["job_id"],
        sequence=row["sequence"],
        event_time=row["event_time"],
        kind=row["kind"],
        payload=row["payload"],
        stage=JobStage(row["stage"]) if row["stage"] else None,
    )


def _model(row: dict[str, Any]) -> Model:
    return Model(
        id=row["id"],
        user_id=row["user_id"],
        job_id=row["job_id"],
        title=row["title"],
        prompt=row["prompt"],
        task_family=row["task_family"],
        metric_name=row["metric_name"],
        details=row["details"],
        model_card=row["model_card"],
        archive_sha256=row["archive_sha256"],
        archive_size=row["archive_size"],
        media_type=row["media_type"],
        create_time=row["create_time"],
        trainer_artifact_id=row.get("trainer_artifact_id"),
    )


def _api_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        user_name=row.get("user_name"),
        label=row["label"],
        create_time=row["create_time"],
        revoke_time=row["revoke_time"],
    )


def _upload(row: dict[str, Any]) -> Upload:
    return Upload(
        id=row["id"],
        user_id=row["user_id"],
        filename=row["filename"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        create_time=row["create_time"],
    )


def _sealed_key(row: dict[str, Any]) -> SealedProviderKey:
    return SealedProviderKey(
        user_id=row["user_id"],
        provider=Provider(row["provider"]),
        nonce=bytes(row["nonce"]),
        sealed=bytes(row["sealed"]),
        hint=row["hint"],
        update_time=row["update_time"],
    )


def _dataset(row: dict[str, Any]) -> DatasetRecord:
    return DatasetRecord(
        job_id=row["job_id"], job_prompt=row["prompt"], create_time=row["event_time"], payload=row["payload"]
    )


def _keyset(position: dict[str, Any] | None) -> tuple[datetime | None, uuid.UUID | None]:
    if position is None:
        return None, None
    try:
        return datetime.fromisoformat(position["t"]), uuid.UUID(position["i"])
    except (KeyError, TypeError, ValueError):
        raise paging.bad_token("page_token is damaged") from None


def _job_not_found(job_id: uuid.UUID) -> errors.NotFound:
    return errors.NotFound(
        f"job {job_id} not found", reason="JOB_NOT_FOUND", metadata={"job_id": str(job_id)}
    )


def _model_not_found(model_id: uuid.UUID) -> errors.NotFound:
    return errors.NotFound(
        f"model {model_id} not found", reason="MODEL_NOT_FOUND", metadata={"model_id": str(model_id)}
    )


class PostgresRegistry:
    """Users, keys, jobs, events and models over one psycopg connection pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    # -- users and API keys --------------------------------------------------------------------

    @_translated
    async def ensure_user(self, user_id: uuid.UUID) -> None:
        """Record a user first seen through a JWT (its subject)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "insert into zehanx.users (id) values (%s) on conflict (id) do nothing", (user_id,)
            )

    @_translated
    async def user_by_name(self, name: str, *, create: bool = False) -> uuid.UUID:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("select id from zehanx.users where name = %s", (name,))
            row = await cur.fetchone()
            if row:
                return row["id"]
            if not create:
                raise errors.NotFound(f"no user named {name!r}", reason="USER_NOT_FOUND")
            cur = await conn.execute(
                "insert into zehanx.users (id, name) values (%s, %s) "
                "on conflict (name) do update set name = excluded.name returning id",
                (uuid.uuid4(), name),
            )
            row = await cur.fetchone()
            assert row is not None
            return row["id"]

    @_translated
    async def add_api_key(self, user_id: uuid.UUID, key_id: str, secret_sha256: bytes, label: str) -> ApiKey:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "insert into zehanx.api_keys (id, user_id, secret_sha256, label) values (%s, %s, %s, %s) "
                "returning *, (select name from zehanx.users where id = %s) as user_name",
                (key_id, user_id, secret_sha256, label, user_id),
            )
            row = await cur.fetchone()
            assert row is not None
            return _api_key(row)

    @_translated
    async def find_api_key(self, key_id: str) -> tuple[uuid.UUID, bytes, datetime | None] | None:
        """(user id, secret hash, revoke time) of a key, or None. Read on every call: no cache, so a
        revoked key stops working at once on every replica."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select user_id, secret_sha256, revoke_time from zehanx.api_keys where id = %s", (key_id,)
            )
            row = await cur.fetchone()
            if row is None:
                return None
            return row["user_id"], bytes(row["secret_sha256"]), row["revoke_time"]

    @_translated
    async def list_api_keys(self, user_id: uuid.UUID | None = None) -> list[ApiKey]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select k.*, u.name as user_name from zehanx.api_keys k join zehanx.users u on u.id = k.user_id "
                "where %(user)s::uuid is null or k.user_id = %(user)s order by k.create_time, k.id",
                {"user": user_id},
            )
            return [_api_key(row) for row in await cur.fetchall()]

    @_translated
    async def revoke_api_key(self, key_id: str) -> ApiKey:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "update zehanx.api_keys k set revoke_time = coalesce(k.revoke_time, now()) where k.id = %s "
                "returning k.*, (select name from zehanx.users u where u.id = k.user_id) as user_name",
                (key_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise errors.NotFound(f"no API key {key_id!r}", reason="API_KEY_NOT_FOUND")
            return _api_key(row)

    # -- jobs -------------------------------------------------------------------------------------

    @_translated
    async def create_job(
        self,
        user_id: uuid.UUID,
        new: NewJob,
        *,
        max_active: int | None = None,
        max_per_minute: int | None = None,
        max_per_day: int | None = None,
    ) -> tuple[Job, bool]:
        """Create a QUEUED job (and, by trigger, its first event). Returns ``(job, created)``.

        Creates of one user are serialized by an advisory lock, so the request-id lookup, the
        active-job count and the creation-rate counts cannot race: N concurrent calls with one
        request id make one job, and N concurrent creates cannot pass a limit together. The rates
        count every job created in the last minute and day, cancelled ones too, so creating and
        cancelling in a loop is bounded (RESOURCE_EXHAUSTED beyond).
        """
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_USER_JOBS, str(user_id))
            )
            if new.request_id is not None:
                cur = await conn.execute(
                    "select * from zehanx.jobs where user_id = %s and request_id = %s",
                    (user_id, new.request_id),
                )
                row = await cur.fetchone()
                if row is not None:
                    if bytes(row["request_sha256"]) != new.request_sha256:
                        raise errors.AlreadyExists(
                            f"request_id {new.request_id} was already used for a different request "
                            f"(job {row['id']}); use a new request_id for a new job",
                            reason="REQUEST_ID_REUSED",
                            metadata={"job_id": str(row["id"])},
                        )
                    return _job(row), False
            if max_active is not None:
                cur = await conn.execute(
                    "select count(*) as n from zehanx.jobs where user_id = %s and state = any(%s)",
                    (user_id, _ACTIVE),
                )
                row = await cur.fetchone()
                assert row is not None
                if row["n"] >= max_active:
                    raise errors.ResourceExhausted(
                        f"you already have {row['n']} unfinished jobs (the limit is {max_active}); "
                        "wait for one to finish or cancel one",
                        reason="TOO_MANY_ACTIVE_JOBS",
                        metadata={"limit": str(max_active), "active": str(row["n"])},
                    )
            if max_per_minute is not None or max_per_day is not None:
                await self._check_create_rate(conn, user_id, max_per_minute, max_per_day)
            cur = await conn.execute(
                "insert into zehanx.jobs (user_id, request_id, request_sha256, prompt, spec) "
                "values (%s, %s, %s, %s, %s) returning *",
                (user_id, new.request_id, new.request_sha256, new.prompt, Jsonb(dict(new.spec))),
            )
            row = await cur.fetchone()
            assert row is not None
            return _job(row), True

    @staticmethod
    async def _check_create_rate(
        conn: psycopg.AsyncConnection[Any],
        user_id: uuid.UUID,
        max_per_minute: int | None,
        max_per_day: int | None,
    ) -> None:
        """RESOURCE_EXHAUSTED when the user created the most jobs allowed in the last minute or day
        (the index on (user_id, create_time) reads at most a day's jobs, which the limit bounds)."""
        cur = await conn.execute(
            "select count(*) filter (where create_time > now() - interval '1 minute') as minute, "
            "count(*) as day from zehanx.jobs "
            "where user_id = %s and create_time > now() - interval '1 day'",
            (user_id,),
        )
        row = await cur.fetchone()
        assert row is not None
        for count, limit, window in (
            (row["minute"], max_per_minute, "minute"),
            (row["day"], max_per_day, "day"),
        ):
            if limit is not None and count >= limit:
                setting = "ZX_GATEWAY_MAX_JOBS_PER_USER_PER_" + window.upper()
                raise errors.ResourceExhausted(
                    f"you created {count} jobs in the last {window} (the limit is {limit}, {setting}); "
                    "try again later",
                    reason="JOB_CREATE_RATE_EXCEEDED",
                    metadata={"limit": str(limit), "window": window, "created": str(count)},
                )

    @_translated
    async def get_job(self, job_id: uuid.UUID, *, user_id: uuid.UUID | None) -> Job:
        """The job, if ``user_id`` owns it (``None``: any owner, for internal callers)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.jobs where id = %s and (%s::uuid is null or user_id = %s)",
                (job_id, user_id, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise _job_not_found(job_id)
        return _job(row)

    @_translated
    async def list_jobs(
        self, user_id: uuid.UUID, *, states: Iterable[JobState] = (), page_size: int, page_token: str
    ) -> Page[Job]:
        """The user's jobs, newest first, optionally only those in ``states``."""
        wanted = sorted(s.value for s in states)
        fp = paging.fingerprint("jobs", str(user_id), wanted)
        position = paging.decode(page_token, "jobs", fp)
        after_time, after_id = _keyset(position)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                select * from zehanx.jobs
                where user_id = %(user)s
                  and (cardinality(%(states)s::text[]) = 0 or state = any(%(states)s))
                  and (%(t)s::timestamptz is null or (create_time, id) < (%(t)s, %(i)s::uuid))
                order by create_time desc, id desc
                limit %(limit)s
                """,
                {"user": user_id, "states": wanted, "t": after_time, "i": after_id, "limit": page_size + 1},
            )
            rows = await cur.fetchall()
        jobs = [_job(r) for r in rows[:page_size]]
        next_token = ""
        if len(rows) > page_size:
            last = jobs[-1]
            next_token = paging.encode("jobs", fp, {"t": last.create_time.isoformat(), "i": str(last.id)})
        return Page(jobs, next_token)

    @_translated
    async def transition(
        self,
        job_id: uuid.UUID,
        to_state: JobState,
        *,
        from_states: Iterable[JobState] | None = None,
        stage: JobStage | None = _UNSET,
        error: JobError | None = None,
        model_id: uuid.UUID | None = None,
        dataset_id: str | None = None,
        repair_count: int | None = None,
        reason: str = "",
        expected_version: int | None = None,
        lease: tuple[str, int] | None = None,
        user_id: uuid.UUID | None = None,
    ) -> tuple[Job, JobEvent | None]:
        """Compare-and-set the job's state (and stage): exactly one of racing callers wins.

        Guards: ``from_states`` (the state it must be in now), ``expected_version``, ``lease`` (owner,
        attempt: the fencing token of a worker). A guard that does not hold is ABORTED (re-read the
        job); a transition the state machine forbids is FAILED_PRECONDITION. Returns the job and the
        event the transition wrote (None when nothing changed); ``reason`` is the event's
        human-readable reason.
        """
        sets = ["state = %(to)s"]
        params: dict[str, Any] = {"to": to_state.value, "id": job_id}
        if stage is not _UNSET:
            sets.append("stage = %(stage)s")
            params["stage"] = stage.value if stage is not None else None
        if error is not None:
            sets += ["error_code = %(ecode)s", "error_message = %(emsg)s", "error_reason = %(ereason)s"]
            params |= {"ecode": error.code, "emsg": error.message, "ereason": error.reason or None}
        if model_id is not None:
            sets.append("model_id = %(model)s")
            params["model"] = model_id
        if dataset_id is not None:
            sets.append("dataset_id = %(dataset)s")
            params["dataset"] = dataset_id
        if repair_count is not None:
            sets.append("repair_count = %(repairs)s")
            params["repairs"] = repair_count
        where = ["id = %(id)s"]
        if user_id is not None:
            where.append("user_id = %(user)s")
            params["user"] = user_id
        if from_states is not None:
            where.append("state = any(%(from)s)")
            params["from"] = [s.value for s in from_states]
        if expected_version is not None:
            where.append("version = %(version)s")
            params["version"] = expected_version
        if lease is not None:
            where.append("lease_owner = %(owner)s and attempt = %(attempt)s")
            params |= {"owner": lease[0], "attempt": lease[1]}
        sql = f"update zehanx.jobs set {', '.join(sets)} where {' and '.join(where)} returning *"
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "select version, last_sequence from zehanx.jobs where id = %s for update", (job_id,)
            )
            before = await cur.fetchone()
            if before is None:
                raise _job_not_found(job_id)
            await conn.execute("select set_config('zehanx.reason', %s, true)", (reason,))
            cur = await conn.execute(sql, params)  # type: ignore[arg-type]  # built from fixed fragments
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute("select * from zehanx.jobs where id = %s", (job_id,))
                now = await cur.fetchone()
                if now is None or (user_id is not None and now["user_id"] != user_id):
                    raise _job_not_found(job_id)
                raise errors.Aborted(
                    f"job {job_id} changed concurrently (it is {now['state']}, version {now['version']}); "
                    "re-read it and decide again",
                    reason="TRANSITION_CONFLICT",
                    metadata={"state": now["state"], "version": str(now["version"])},
                )
            job = _job(row)
            event = None
            if job.last_sequence > before["last_sequence"]:
                cur = await conn.execute(
                    "select * from zehanx.job_events where job_id = %s and sequence = %s",
                    (job_id, job.last_sequence),
                )
                event_row = await cur.fetchone()
                event = _event(event_row) if event_row else None
            return job, event

    # -- events -----------------------------------------------------------------------------------

    @_translated
    async def append_events(self, pending: Sequence[PendingEvent]) -> list[JobEvent | errors.DomainError]:
        """Write a batch of events in one transaction, numbering each job's events on from its last.

        Returns, for each input in order, the written event or the error that refused it (an unknown
        job is NOT_FOUND, a finished one FAILED_PRECONDITION); refused events do not stop the others.
        """
        # Grouped by job, and by the lease that fences them (None: not fenced).
        by_job: dict[tuple[uuid.UUID, tuple[str, int] | None], list[int]] = {}
        results: list[JobEvent | errors.DomainError | None] = [None] * len(pending)
        for index, item in enumerate(pending):
            if item.kind in _RESERVED_KINDS:
                results[index] = errors.InvalidArgument(
                    f"{item.kind} events are written by the registry itself", reason="RESERVED_EVENT_KIND"
                )
                continue
            by_job.setdefault((item.job_id, item.lease), []).append(index)
        async with self._pool.connection() as conn, conn.transaction():
            # Sorted, so concurrent batches lock jobs in the same order and cannot deadlock.
            for job_id, lease in sorted(by_job, key=lambda k: (k[0], k[1] or ("", 0))):
                indexes = by_job[(job_id, lease)]
                owner, attempt = lease if lease is not None else (None, None)
                cur = await conn.execute(
                    "update zehanx.jobs set last_sequence = last_sequence + %s "
                    "where id = %s and state <> all(%s) "
                    "and (%s::text is null or (lease_owner = %s and attempt = %s)) "
                    "returning last_sequence, user_id, stage",
                    (len(indexes), job_id, _TERMINAL, owner, owner, attempt),
                )
                row = await cur.fetchone()
                if row is None:
                    cur = await conn.execute(
                        "select state, lease_owner, attempt from zehanx.jobs where id = %s", (job_id,)
                    )
                    found = await cur.fetchone()
                    refusal: errors.DomainError
                    if found is None:
                        refusal = _job_not_found(job_id)
                    elif found["state"] in _TERMINAL:
                        refusal = errors.FailedPrecondition(
                            f"job {job_id} is {found['state']}; it takes no more events",
                            reason="JOB_FINISHED",
                        )
                    else:
                        refusal = errors.Aborted(
                            f"job {job_id} is no longer leased to {owner} (attempt {attempt}); it is "
                            f"{found['state']}, attempt {found['attempt']}",
                            reason="LEASE_LOST",
                        )
                    for index in indexes:
                        results[index] = refusal
                    continue
                first = row["last_sequence"] - len(indexes) + 1
                items = [pending[i] for i in indexes]
                cur = await conn.execute(
                    """
                    insert into zehanx.job_events (job_id, sequence, user_id, event_time, stage, kind, payload)
                    select %s, s, %s, coalesce(t, clock_timestamp()), %s, k, p
                    from unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::jsonb[]) as u(s, t, k, p)
                    returning *
                    """,
                    (
                        job_id,
                        row["user_id"],
                        row["stage"],
                        list(range(first, first + len(items))),
                        [item.event_time for item in items],
                        [item.kind for item in items],
                        [Jsonb(dict(item.payload)) for item in items],
                    ),
                )
                written = sorted((_event(r) for r in await cur.fetchall()), key=lambda e: e.sequence)
                for index, event in zip(indexes, written, strict=True):
                    results[index] = event
        return [r for r in results if r is not None]

    @_translated
    async def list_events(
        self, job_id: uuid.UUID, *, after_sequence: int, limit: int, user_id: uuid.UUID | None = None
    ) -> list[JobEvent]:
        """Events of a job with a sequence above ``after_sequence``, in order (no ownership check
        beyond ``user_id`` filtering: callers check the job first)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.job_events where job_id = %s and sequence > %s "
                "and (%s::uuid is null or user_id = %s) order by sequence limit %s",
                (job_id, after_sequence, user_id, user_id, limit),
            )
            return [_event(r) for r in await cur.fetchall()]

    @_translated
    async def last_sequences(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select id, last_sequence from zehanx.jobs where id = any(%s)", (list(job_ids),)
            )
            return {r["id"]: r["last_sequence"] for r in await cur.fetchall()}

    # -- leases (workers) ---------------------------------------------------------------------------

    @_translated
    async def claim_next(self, owner: str, lease: timedelta) -> tuple[Job, JobEvent] | None:
        """Take the oldest QUEUED job: RUNNING, leased to ``owner``, attempt + 1. None if none waits.
        ``FOR UPDATE SKIP LOCKED``: concurrent workers never claim the same job."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("select set_config('zehanx.reason', %s, true)", (f"taken up by {owner}",))
            cur = await conn.execute(
                """
                update zehanx.jobs j
                set state = 'RUNNING', lease_owner = %(owner)s, lease_expire_time = now() + %(lease)s,
                    attempt = j.attempt + 1
                from (select id from zehanx.jobs where state = 'QUEUED'
                      order by create_time, id limit 1 for update skip locked) next
                where j.id = next.id
                returning j.*
                """,
                {"owner": owner, "lease": lease},
            )
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute(
                "select * from zehanx.job_events where job_id = %s and sequence = %s",
                (row["id"], row["last_sequence"]),
            )
            event_row = await cur.fetchone()
            assert event_row is not None
            return _job(row), _event(event_row)

    @_translated
    async def renew_lease(self, job_id: uuid.UUID, owner: str, attempt: int, lease: timedelta) -> Job:
        """Extend a lease still held; ABORTED when the lease was lost (expired and taken back)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "update zehanx.jobs set lease_expire_time = now() + %s where id = %s and lease_owner = %s "
                "and attempt = %s and state in ('RUNNING', 'CANCELLING') returning *",
                (lease, job_id, owner, attempt),
            )
            row = await cur.fetchone()
        if row is None:
            raise errors.Aborted(f"the lease on job {job_id} is lost", reason="LEASE_LOST")
        return _job(row)

    @_translated
    async def recover_expired(self, *, max_attempts: int) -> list[tuple[Job, JobEvent]]:
        """Take back jobs whose worker stopped renewing its lease.

        RUNNING: back to QUEUED for another attempt, or FAILED after ``max_attempts``. CANCELLING:
        CANCELLED (nobody is running it any more). Never a job that vanishes or runs twice: the attempt
        number fences off the old worker.
        """
        out: list[tuple[Job, JobEvent]] = []
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                select id, state, attempt from zehanx.jobs
                where state in ('RUNNING', 'CANCELLING') and lease_expire_time < now()
                order by lease_expire_time for update skip locked
                """
            )
            for row in await cur.fetchall():
                if row["state"] == "CANCELLING":
                    to, code, msg, why = (
                        "CANCELLED",
                        "CANCELLED",
                        "cancelled (its worker stopped)",
                        "CANCELLED",
                    )
                    reason = msg
                elif row["attempt"] >= max_attempts:
                    to, code, msg, why = (
                        "FAILED",
                        "ABORTED",
                        f"the worker running this job stopped responding ({row['attempt']} attempts)",
                        "WORKER_LOST",
                    )
                    reason = msg
                else:
                    to, code, msg, why = "QUEUED", None, None, None
                    reason = f"the worker stopped responding; queued again (attempt {row['attempt']} done)"
                await conn.execute("select set_config('zehanx.reason', %s, true)", (reason,))
                cur = await conn.execute(
                    "update zehanx.jobs set state = %s, error_code = %s, error_message = %s, error_reason = %s "
                    "where id = %s returning *",
                    (to, code, msg, why, row["id"]),
                )
                job_row = await cur.fetchone()
                assert job_row is not None
                cur = await conn.execute(
                    "select * from zehanx.job_events where job_id = %s and sequence = %s",
                    (job_row["id"], job_row["last_sequence"]),
                )
                event_row = await cur.fetchone()
                assert event_row is not None
                out.append((_job(job_row), _event(event_row)))
        return out

    # -- models -----------------------------------------------------------------------------------

    @_translated
    async def create_model(self, user_id: uuid.UUID, new: NewModel) -> Model:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_ARTIFACT, new.archive_sha256)
            )
            if new.job_id is not None:
                cur = await conn.execute(
                    "select 1 from zehanx.jobs where id = %s and user_id = %s", (new.job_id, user_id)
                )
                if await cur.fetchone() is None:
                    raise _job_not_found(new.job_id)
            cur = await conn.execute(
                """
                insert into zehanx.models (user_id, job_id, title, prompt, task_family, metric_name, details,
                                           model_card, archive_sha256, archive_size, media_type,
                                           trainer_artifact_id)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning *
                """,
                (
                    user_id,
                    new.job_id,
                    new.title,
                    new.prompt,
                    new.task_family,
                    new.metric_name,
                    Jsonb(dict(new.details)),
                    new.model_card,
                    new.archive_sha256,
                    new.archive_size,
                    new.media_type,
                    new.trainer_artifact_id,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            return _model(row)

    @_translated
    async def get_model(self, model_id: uuid.UUID, *, user_id: uuid.UUID) -> Model:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.models where id = %s and user_id = %s", (model_id, user_id)
            )
            row = await cur.fetchone()
        if row is None:
            raise _model_not_found(model_id)
        return _model(row)

    @_translated
    async def list_models(
        self,
        user_id: uuid.UUID,
        *,
        page_size: int,
        page_token: str,
        task_family: str | None = None,
        job_id: uuid.UUID | None = None,
    ) -> Page[Model]:
        """The user's models, newest first, optionally of one task family or one job."""
        fp = paging.fingerprint("models", str(user_id), task_family, str(job_id))
        position = paging.decode(page_token, "models", fp)
        after_time, after_id = _keyset(position)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                select * from zehanx.models
                where user_id = %(user)s
                  and (%(family)s::text is null or task_family = %(family)s)
                  and (%(job)s::uuid is null or job_id = %(job)s)
                  and (%(t)s::timestamptz is null or (create_time, id) < (%(t)s, %(i)s::uuid))
                order by create_time desc, id desc limit %(limit)s
                """,
                {
                    "user": user_id,
                    "family": task_family,
                    "job": job_id,
                    "t": after_time,
                    "i": after_id,
                    "limit": page_size + 1,
                },
            )
            rows = await cur.fetchall()
        models = [_model(r) for r in rows[:page_size]]
        next_token = ""
        if len(rows) > page_size:
            last = models[-1]
            next_token = paging.encode("models", fp, {"t": last.create_time.isoformat(), "i": str(last.id)})
        return Page(models, next_token)

    @_translated
    async def delete_model(
        self,
        model_id: uuid.UUID,
        *,
        user_id: uuid.UUID,
        on_unreferenced: Callable[[str], Awaitable[None]],
    ) -> Model:
        """Delete the model; when no other model shares its artifact, ``on_unreferenced(sha256)`` runs
        inside the transaction (under the artifact's lock), so a concurrent publish of the same bytes
        cannot lose its file."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "select archive_sha256 from zehanx.models where id = %s and user_id = %s", (model_id, user_id)
            )
            row = await cur.fetchone()
            if row is None:
                raise _model_not_found(model_id)
            digest = row["archive_sha256"]
            await conn.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_ARTIFACT, digest))
            cur = await conn.execute(
                "delete from zehanx.models where id = %s and user_id = %s returning *", (model_id, user_id)
            )
            deleted = await cur.fetchone()
            if deleted is None:
                raise _model_not_found(model_id)
            cur = await conn.execute(
                "select exists (select 1 from zehanx.models where archive_sha256 = %s) as shared", (digest,)
            )
            shared = await cur.fetchone()
            assert shared is not None
            if not shared["shared"]:
                await on_unreferenced(digest)
            return _model(deleted)

    # -- datasets (read from the jobs' dataset_built events) ------------------------------------------

    #: The latest dataset_built event of each of a user's jobs, without the resume data (the whole
    #: dataset again, which only the orchestrator reads).
    _DATASETS = """
        select e.job_id, e.event_time, e.payload - 'zx_resume' as payload, j.prompt
        from zehanx.job_events e join zehanx.jobs j on j.id = e.job_id and j.user_id = e.user_id
        where e.user_id = %(user)s and e.kind = 'dataset_built'
          and not exists (select 1 from zehanx.job_events later
                          where later.job_id = e.job_id and later.kind = 'dataset_built'
                            and later.sequence > e.sequence)
    """

    @_translated
    async def list_datasets(
        self, user_id: uuid.UUID, *, page_size: int, page_token: str
    ) -> Page[DatasetRecord]:
        """The datasets the user's jobs built, newest first."""
        fp = paging.fingerprint("datasets", str(user_id))
        after_time, after_id = _keyset(paging.decode(page_token, "datasets", fp))
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._DATASETS
                + """
                  and (%(t)s::timestamptz is null or (e.event_time, e.job_id) < (%(t)s, %(i)s::uuid))
                order by e.event_time desc, e.job_id desc limit %(limit)s
                """,
                {"user": user_id, "t": after_time, "i": after_id, "limit": page_size + 1},
            )
            rows = await cur.fetchall()
        items = [_dataset(r) for r in rows[:page_size]]
        next_token = ""
        if len(rows) > page_size:
            last = items[-1]
            next_token = paging.encode(
                "datasets", fp, {"t": last.create_time.isoformat(), "i": str(last.job_id)}
            )
        return Page(items, next_token)

    @_translated
    async def get_dataset(self, job_id: uuid.UUID, *, user_id: uuid.UUID) -> DatasetRecord:
        """The dataset of the user's job; NOT_FOUND for another user's job or one that built none yet."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._DATASETS + " and e.job_id = %(job)s", {"user": user_id, "job": job_id}
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(
                    "select 1 from zehanx.jobs where id = %s and user_id = %s", (job_id, user_id)
                )
                if await cur.fetchone() is None:
                    raise _job_not_found(job_id)
                raise errors.NotFound(
                    f"job {job_id} has built no dataset yet",
                    reason="DATASET_NOT_FOUND",
                    metadata={"job_id": str(job_id)},
                )
        return _dataset(row)

    # -- uploads ----------------------------------------------------------------------------------------

    @_translated
    async def reserve_upload(
        self,
        upload: Upload,
        *,
        quota_bytes: int | None,
        max_in_progress: int | None,
        stale_after: timedelta,
    ) -> list[Upload]:
        """Charge ``upload`` to its user before its file is written: in one transaction under the
        user's lock, check their quota (every row, pending ones included) and their uploads in
        progress, then insert the row pending. RESOURCE_EXHAUSTED beyond either limit. Returns the
        user's pending uploads older than ``stale_after`` (left by a crashed gateway), deleted here,
        whose files the caller removes."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_USER_UPLOADS, str(upload.user_id))
            )
            cur = await conn.execute(
                "delete from zehanx.uploads where user_id = %s and pending_since < now() - %s returning *",
                (upload.user_id, stale_after),
            )
            stale = [_upload(r) for r in await cur.fetchall()]
            cur = await conn.execute(
                "select coalesce(sum(size_bytes), 0)::bigint as used, "
                "count(*) filter (where pending_since is not null) as in_progress "
                "from zehanx.uploads where user_id = %s",
                (upload.user_id,),
            )
            row = await cur.fetchone()
            assert row is not None
            used, in_progress = int(row["used"]), int(row["in_progress"])
            if max_in_progress is not None and in_progress >= max_in_progress:
                raise errors.ResourceExhausted(
                    f"you already have {in_progress} uploads in progress (the limit is {max_in_progress}, "
                    "ZX_GATEWAY_MAX_CONCURRENT_UPLOADS_PER_USER); wait for one to finish",
                    reason="TOO_MANY_UPLOADS",
                    metadata={"limit": str(max_in_progress), "in_progress": str(in_progress)},
                )
            if quota_bytes is not None and used + upload.size_bytes > quota_bytes:
                raise errors.ResourceExhausted(
                    f"your uploads would take {used + upload.size_bytes} bytes; the limit is {quota_bytes} "
                    "(ZX_GATEWAY_UPLOAD_QUOTA_BYTES)",
                    reason="UPLOAD_QUOTA_EXCEEDED",
                    metadata={"limit_bytes": str(quota_bytes), "used_bytes": str(used)},
                )
            await conn.execute(
                "insert into zehanx.uploads (id, user_id, filename, size_bytes, sha256, create_time, "
                "pending_since) values (%s, %s, %s, %s, %s, %s, now())",
                (
                    upload.id,
                    upload.user_id,
                    upload.filename,
                    upload.size_bytes,
                    upload.sha256,
                    upload.create_time,
                ),
            )
            return stale

    @_translated
    async def complete_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> Upload:
        """Mark a reserved upload stored. FAILED_PRECONDITION when its reservation is gone."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "update zehanx.uploads set pending_since = null "
                "where id = %s and user_id = %s and pending_since is not null returning *",
                (upload_id, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise errors.FailedPrecondition(
                f"the reservation of upload {upload_id} expired before its file was stored; upload again",
                reason="UPLOAD_RESERVATION_LOST",
            )
        return _upload(row)

    @_translated
    async def release_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> None:
        """Delete an upload's row (its file could not be stored): the bytes are free again."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "delete from zehanx.uploads where id = %s and user_id = %s", (upload_id, user_id)
            )

    @_translated
    async def upload_bytes(self, user_id: uuid.UUID) -> int:
        """Bytes of all the user's uploads (those in progress included)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select coalesce(sum(size_bytes), 0)::bigint as n from zehanx.uploads where user_id = %s",
                (user_id,),
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row["n"])

    @_translated
    async def get_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> Upload | None:
        """The user's stored upload, or None (another user's, or one still in progress, is None too)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.uploads where id = %s and user_id = %s and pending_since is null",
                (upload_id, user_id),
            )
            row = await cur.fetchone()
        return _upload(row) if row is not None else None

    # -- a user's own API keys ----------------------------------------------------------------------------

    @_translated
    async def revoke_user_api_key(self, user_id: uuid.UUID, key_id: str) -> ApiKey:
        """Revoke one of the user's keys (a revoked one stays as it is); NOT_FOUND for anyone else's."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "update zehanx.api_keys k set revoke_time = coalesce(k.revoke_time, now()) "
                "where k.id = %s and k.user_id = %s "
                "returning k.*, (select name from zehanx.users u where u.id = k.user_id) as user_name",
                (key_id, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(
                f"no API key {key_id!r}", reason="API_KEY_NOT_FOUND", metadata={"key_id": key_id}
            )
        return _api_key(row)

    # -- provider keys (sealed) ---------------------------------------------------------------------------

    @_translated
    async def put_provider_key(
        self, user_id: uuid.UUID, provider: Provider, nonce: bytes, sealed: bytes, hint: str
    ) -> SealedProviderKey:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                insert into zehanx.provider_keys (user_id, provider, nonce, sealed, hint)
                values (%s, %s, %s, %s, %s)
                on conflict (user_id, provider) do update
                set nonce = excluded.nonce, sealed = excluded.sealed, hint = excluded.hint, update_time = now()
                returning *
                """,
                (user_id, provider.value, nonce, sealed, hint),
            )
            row = await cur.fetchone()
            assert row is not None
            return _sealed_key(row)

    @_translated
    async def list_provider_keys(self, user_id: uuid.UUID) -> list[SealedProviderKey]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.provider_keys where user_id = %s order by provider", (user_id,)
            )
            return [_sealed_key(r) for r in await cur.fetchall()]

    @_translated
    async def delete_provider_key(self, user_id: uuid.UUID, provider: Provider) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "delete from zehanx.provider_keys where user_id = %s and provider = %s",
                (user_id, provider.value),
            )

    # -- user settings --------------------------------------------------------------------------------------

    @_translated
    async def get_user_settings(self, user_id: uuid.UUID) -> UserSettings:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select settings, update_time from zehanx.user_settings where user_id = %s", (user_id,)
            )
            row = await cur.fetchone()
        if row is None:
            return UserSettings(settings={}, update_time=None)
        return UserSettings(settings=row["settings"], update_time=row["update_time"])

    @_translated
    async def put_user_settings(self, user_id: uuid.UUID, settings: dict[str, Any]) -> UserSettings:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                insert into zehanx.user_settings (user_id, settings) values (%s, %s)
                on conflict (user_id) do update set settings = excluded.settings, update_time = now()
                returning settings, update_time
                """,
                (user_id, Jsonb(settings)),
            )
            row = await cur.fetchone()
            assert row is not None
            return UserSettings(settings=row["settings"], update_time=row["update_time"])
