"""Jobs, their transitions and events, and the workers' leases: the compare-and-set core of the registry.

Every method that a user can reach takes the caller's ``user_id`` and filters by it, so another user's
job is simply not found (NOT_FOUND, never PERMISSION_DENIED: ids do not leak). The state machine, the
event of each transition and the sequence numbers are enforced by triggers (migrations/0001_registry.sql);
this module adds compare-and-set guards (expected states, version, lease owner and attempt) so that
racing writers have exactly one winner and a zombie worker's late write fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from zehanx_runtime import errors

from zehanx_gateway import metrics
from zehanx_gateway.domain import (
    ACTIVE_STATES,
    STATE_CHANGE,
    TERMINAL_STATES,
    Job,
    JobError,
    JobEvent,
    JobStage,
    JobState,
    NewJob,
    Page,
    PendingEvent,
)
from zehanx_gateway.store.base import LOCK_USER_JOBS, PoolStore, job_not_found, translated

_TERMINAL = [s.value for s in TERMINAL_STATES]
_ACTIVE = [s.value for s in ACTIVE_STATES]
_UNSET: Any = object()
#: Written only by the database (transitions) or never stored (snapshots).
_RESERVED_KINDS = frozenset({STATE_CHANGE, "snapshot"})


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
        trace_parent=row.get("trace_parent", ""),
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


class PostgresJobStore(PoolStore):
    """Jobs, transitions, events and leases."""

    # -- jobs -------------------------------------------------------------------------------------

    @translated
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
                "select pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_USER_JOBS, str(user_id))
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
                    metrics.RATE_LIMITED.labels("active_jobs").inc()
                    raise errors.ResourceExhausted(
                        f"you already have {row['n']} unfinished jobs (the limit is {max_active}); "
                        "wait for one to finish or cancel one",
                        reason="TOO_MANY_ACTIVE_JOBS",
                        metadata={"limit": str(max_active), "active": str(row["n"])},
                    )
            if max_per_minute is not None or max_per_day is not None:
                await self._check_create_rate(conn, user_id, max_per_minute, max_per_day)
            cur = await conn.execute(
                "insert into zehanx.jobs (user_id, request_id, request_sha256, prompt, spec, trace_parent) "
                "values (%s, %s, %s, %s, %s, %s) returning *",
                (
                    user_id,
                    new.request_id,
                    new.request_sha256,
                    new.prompt,
                    Jsonb(dict(new.spec)),
                    new.trace_parent,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            metrics.JOBS_CREATED.inc()
            metrics.JOB_TRANSITIONS.labels("QUEUED").inc()
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
                metrics.RATE_LIMITED.labels("create_job").inc()
                raise errors.ResourceExhausted(
                    f"you created {count} jobs in the last {window} (the limit is {limit}, {setting}); "
                    "try again later",
                    reason="JOB_CREATE_RATE_EXCEEDED",
                    metadata={"limit": str(limit), "window": window, "created": str(count)},
                )

    @translated
    async def get_job(self, job_id: uuid.UUID, *, user_id: uuid.UUID | None) -> Job:
        """The job, if ``user_id`` owns it (``None``: any owner, for internal callers)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.jobs where id = %s and (%s::uuid is null or user_id = %s)",
                (job_id, user_id, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise job_not_found(job_id)
        return _job(row)

    @translated
    async def list_jobs(
        self, user_id: uuid.UUID, *, states: Iterable[JobState] = (), page_size: int, page_token: str
    ) -> Page[Job]:
        """The user's jobs, newest first, optionally only those in ``states``."""
        wanted = sorted(s.value for s in states)
        return await self._keyset_page(
            """
            select * from zehanx.jobs
            where user_id = %(user)s
              and (cardinality(%(states)s::text[]) = 0 or state = any(%(states)s))
            """,
            {"user": user_id, "states": wanted},
            order=("create_time", "id"),
            kind="jobs",
            filters=(str(user_id), wanted),
            page_size=page_size,
            page_token=page_token,
            item=_job,
            position=lambda job: (job.create_time, job.id),
        )

    @translated
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
                "select state, version, last_sequence from zehanx.jobs where id = %s for update", (job_id,)
            )
            before = await cur.fetchone()
            if before is None:
                raise job_not_found(job_id)
            await conn.execute("select set_config('zehanx.reason', %s, true)", (reason,))
            cur = await conn.execute(sql, params)  # type: ignore[arg-type]  # built from fixed fragments
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute("select * from zehanx.jobs where id = %s", (job_id,))
                now = await cur.fetchone()
                if now is None or (user_id is not None and now["user_id"] != user_id):
                    raise job_not_found(job_id)
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
            if before["state"] != job.state.value:
                metrics.JOB_TRANSITIONS.labels(job.state.value).inc()
            return job, event

    # -- events -----------------------------------------------------------------------------------

    @translated
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
                        refusal = job_not_found(job_id)
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

    @translated
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

    @translated
    async def count_jobs_by_state(self) -> tuple[dict[str, int], float]:
        """Jobs per state, and the age in seconds of the oldest QUEUED job (0 when none), for metrics."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("select state, count(*) as n from zehanx.jobs group by state")
            counts = {r["state"]: int(r["n"]) for r in await cur.fetchall()}
            cur = await conn.execute(
                "select coalesce(extract(epoch from now() - min(create_time)), 0) as age "
                "from zehanx.jobs where state = 'QUEUED'"
            )
            row = await cur.fetchone()
        return counts, float(row["age"]) if row else 0.0

    @translated
    async def count_running_jobs_by_stage(self) -> dict[str, int]:
        """RUNNING jobs per stage (a stage no job is in is absent), for metrics."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select stage, count(*) as n from zehanx.jobs "
                "where state = 'RUNNING' and stage is not null group by stage"
            )
            return {r["stage"]: int(r["n"]) for r in await cur.fetchall()}

    @translated
    async def last_sequences(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select id, last_sequence from zehanx.jobs where id = any(%s)", (list(job_ids),)
            )
            return {r["id"]: r["last_sequence"] for r in await cur.fetchall()}

    # -- leases (workers) ---------------------------------------------------------------------------

    @translated
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
            metrics.JOB_TRANSITIONS.labels("RUNNING").inc()
            return _job(row), _event(event_row)

    @translated
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

    @translated
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
                metrics.JOB_TRANSITIONS.labels(to).inc()
                out.append((_job(job_row), _event(event_row)))
        return out
