"""The registry in a real PostgreSQL: the state machine in triggers, one winner per race, events in the
same transaction as transitions, gap-free sequences, leases that never double-claim."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta

import psycopg
import pytest
from zehanx_gateway import db
from zehanx_gateway.domain import TRANSITIONS, JobError, JobStage, JobState, NewJob, NewModel, PendingEvent
from zehanx_gateway.store import PostgresRegistry
from zehanx_runtime import errors


def new_job(prompt: str = "make a model", request_id: uuid.UUID | None = None) -> NewJob:
    return NewJob(prompt, {}, request_id, hashlib.sha256(prompt.encode()).digest())


async def a_job(registry: PostgresRegistry, user: str = "alice") -> tuple[uuid.UUID, uuid.UUID]:
    user_id = await registry.user_by_name(user, create=True)
    job, _ = await registry.create_job(user_id, new_job())
    return user_id, job.id


async def test_migrations_apply_once_even_when_replicas_start_together(database_url: str) -> None:
    results = await asyncio.gather(*(db.migrate(database_url) for _ in range(4)))
    # Each migration is one locked transaction (the lock must not outlive it behind a transaction
    # pooler), so replicas may share the work: every migration applied exactly once, in order.
    every = [m.version for m in db.migrations()]
    applied = [version for versions in results for version in versions]
    assert sorted(applied) == sorted(every) and len(set(applied)) == len(every)
    assert all(versions == sorted(versions, key=every.index) for versions in results)
    assert await db.migrate(database_url) == []


async def test_an_edited_migration_is_refused(database_url: str) -> None:
    await db.migrate(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("update zehanx.schema_migrations set sha256 = 'x' where version = '0001_registry'")
    with pytest.raises(RuntimeError, match="edited after it was applied"):
        await db.migrate(database_url)


async def test_32_concurrent_creates_with_one_request_id_make_one_row(registry: PostgresRegistry) -> None:
    user_id = await registry.user_by_name("alice", create=True)
    request_id = uuid.uuid4()
    results = await asyncio.gather(
        *(registry.create_job(user_id, new_job(request_id=request_id)) for _ in range(32))
    )
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    async with registry.pool.connection() as conn:
        rows = await (await conn.execute("select count(*) as n from zehanx.jobs")).fetchone()
        events = await (await conn.execute("select count(*) as n from zehanx.job_events")).fetchone()
    assert rows["n"] == 1 and events["n"] == 1  # and exactly one first event


async def test_racing_transitions_have_exactly_one_winner(registry: PostgresRegistry) -> None:
    _, job_id = await a_job(registry)
    job, _ = await registry.transition(job_id, JobState.RUNNING, from_states=[JobState.QUEUED])

    async def attempt(n: int) -> str:
        target = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLING][n % 3]
        try:
            await registry.transition(
                job_id,
                target,
                from_states=[JobState.RUNNING],
                expected_version=job.version,
                error=JobError("INTERNAL", "racer") if target is JobState.FAILED else None,
            )
        except errors.Aborted:
            return "lost"
        return "won"

    outcomes = await asyncio.gather(*(attempt(n) for n in range(30)))
    assert outcomes.count("won") == 1
    assert outcomes.count("lost") == 29
    events = await registry.list_events(job_id, after_sequence=0, limit=100)
    assert [e.sequence for e in events] == [1, 2, 3]  # created, RUNNING, the one winner


@pytest.mark.parametrize("source", list(JobState))
async def test_the_database_rejects_every_illegal_transition(
    registry: PostgresRegistry, source: JobState
) -> None:
    """Raw SQL, not the store: the trigger itself refuses what the graph does not allow."""
    _, job_id = await a_job(registry)
    # Walk to `source` legally, through the shortest path.
    path = {
        JobState.QUEUED: [],
        JobState.RUNNING: [JobState.RUNNING],
        JobState.CANCELLING: [JobState.RUNNING, JobState.CANCELLING],
        JobState.SUCCEEDED: [JobState.RUNNING, JobState.SUCCEEDED],
        JobState.FAILED: [JobState.FAILED],
        JobState.CANCELLED: [JobState.CANCELLED],
    }[source]
    for step in path:
        await registry.transition(job_id, step, error=JobError("CANCELLED", "test", "TEST"))
    for target in JobState:
        if target is source:
            continue
        async with registry.pool.connection() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "update zehanx.jobs set state = %s, error_code = 'X', error_message = 'm' where id = %s",
                        (target.value, job_id),
                    )
                    allowed = True
                    raise _Rollback
            except _Rollback:
                pass
            except psycopg.Error as exc:
                assert exc.sqlstate == "ZX001", exc
                allowed = False
        assert allowed == (target in TRANSITIONS[source]), f"{source} -> {target}"


class _Rollback(Exception):
    pass


async def test_every_transition_writes_its_event_in_the_same_transaction(registry: PostgresRegistry) -> None:
    _, job_id = await a_job(registry)
    async with registry.pool.connection() as conn:
        # A transition made by hand still gets its event, numbered next...
        await conn.execute(
            "update zehanx.jobs set state = 'RUNNING', stage = 'CRAWLING' where id = %s", (job_id,)
        )
        # ...and one rolled back leaves neither the state nor an event behind.
        try:
            async with conn.transaction():
                await conn.execute(
                    "update zehanx.jobs set state = 'FAILED', error_message = 'x' where id = %s", (job_id,)
                )
                raise _Rollback
        except _Rollback:
            pass
    job = await registry.get_job(job_id, user_id=None)
    assert job.state is JobState.RUNNING and job.stage is JobStage.CRAWLING
    events = await registry.list_events(job_id, after_sequence=0, limit=10)
    assert [(e.sequence, e.kind, e.payload.get("to_state")) for e in events] == [
        (1, "state_change", "QUEUED"),
        (2, "state_change", "RUNNING"),
    ]
    assert job.last_sequence == 2


async def test_failed_and_cancelled_jobs_must_carry_a_reason(registry: PostgresRegistry) -> None:
    _, job_id = await a_job(registry)
    with pytest.raises(psycopg.errors.CheckViolation):
        async with registry.pool.connection() as conn:
            await conn.execute("update zehanx.jobs set state = 'CANCELLED' where id = %s", (job_id,))


async def test_concurrent_event_batches_number_each_job_without_gaps(registry: PostgresRegistry) -> None:
    _, first = await a_job(registry, "alice")
    _, second = await a_job(registry, "bob")

    async def producer(n: int) -> None:
        batch = [
            PendingEvent(first if (n + i) % 2 else second, "log_line", {"text": f"{n}.{i}"})
            for i in range(20)
        ]
        results = await registry.append_events(batch)
        assert all(not isinstance(r, errors.DomainError) for r in results)

    await asyncio.gather(*(producer(n) for n in range(10)))
    for job_id in (first, second):
        events = await registry.list_events(job_id, after_sequence=0, limit=1000)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert len(events) == 1 + 100
        job = await registry.get_job(job_id, user_id=None)
        assert job.last_sequence == len(events)


async def test_events_for_a_finished_job_or_of_a_reserved_kind_are_refused(
    registry: PostgresRegistry,
) -> None:
    _, job_id = await a_job(registry)
    await registry.transition(job_id, JobState.CANCELLED, error=JobError("CANCELLED", "stop", "TEST"))
    late, forged, unknown = await registry.append_events(
        [
            PendingEvent(job_id, "log_line", {"text": "late"}),
            PendingEvent(job_id, "state_change", {"to_state": "SUCCEEDED"}),
            PendingEvent(uuid.uuid4(), "log_line", {}),
        ]
    )
    assert isinstance(late, errors.FailedPrecondition)
    assert isinstance(forged, errors.InvalidArgument)
    assert isinstance(unknown, errors.NotFound)


async def test_eight_workers_claim_every_job_once(registry: PostgresRegistry) -> None:
    user_id = await registry.user_by_name("alice", create=True)
    for n in range(120):
        await registry.create_job(user_id, new_job(f"job {n}"))
    claims: dict[str, list[uuid.UUID]] = {}

    async def worker(name: str) -> None:
        claims[name] = []
        while (claimed := await registry.claim_next(name, timedelta(seconds=30))) is not None:
            job, event = claimed
            assert job.state is JobState.RUNNING and job.lease_owner == name and job.attempt == 1
            assert event.payload["to_state"] == "RUNNING"
            claims[name].append(job.id)

    await asyncio.gather(*(worker(f"w{n}") for n in range(8)))
    everything = [job_id for ids in claims.values() for job_id in ids]
    assert len(everything) == 120 and len(set(everything)) == 120


async def test_expired_leases_are_taken_back_and_fence_the_old_worker(registry: PostgresRegistry) -> None:
    _, job_id = await a_job(registry)
    _job, _ = await registry.claim_next("w1", timedelta(milliseconds=50))  # type: ignore[misc]
    await asyncio.sleep(0.1)
    recovered = await registry.recover_expired(max_attempts=2)
    assert [(j.id, j.state) for j, _ in recovered] == [(job_id, JobState.QUEUED)]
    # The old worker's late writes fail: its lease (owner, attempt) no longer holds.
    with pytest.raises(errors.Aborted):
        await registry.renew_lease(job_id, "w1", 1, timedelta(seconds=10))
    with pytest.raises(errors.Aborted):
        await registry.transition(job_id, JobState.SUCCEEDED, lease=("w1", 1))
    again, _ = await registry.claim_next("w2", timedelta(milliseconds=50))  # type: ignore[misc]
    assert again.attempt == 2
    await asyncio.sleep(0.1)
    ((failed, event),) = await registry.recover_expired(max_attempts=2)
    assert failed.state is JobState.FAILED and failed.error and failed.error.reason == "WORKER_LOST"
    assert event.payload["error_reason"] == "WORKER_LOST"


async def test_a_version_guard_refuses_a_stale_writer(registry: PostgresRegistry) -> None:
    _, job_id = await a_job(registry)
    job = await registry.get_job(job_id, user_id=None)
    await registry.transition(job_id, JobState.RUNNING, expected_version=job.version)
    with pytest.raises(errors.Aborted):
        await registry.transition(
            job_id, JobState.FAILED, expected_version=job.version, error=JobError("X", "y")
        )


async def test_a_revoked_key_is_found_revoked(registry: PostgresRegistry) -> None:
    user_id = await registry.user_by_name("alice", create=True)
    await registry.add_api_key(user_id, "abcdefghij012345", b"\x01" * 32, "laptop")
    found = await registry.find_api_key("abcdefghij012345")
    assert found is not None and found.revoke_time is None
    assert found.user_id == user_id and found.secret_sha256 == b"\x01" * 32
    revoked = await registry.revoke_api_key("abcdefghij012345")
    assert revoked.revoke_time is not None and revoked.user_name == "alice"
    found = await registry.find_api_key("abcdefghij012345")
    assert found is not None and found.revoke_time == revoked.revoke_time
    with pytest.raises(errors.NotFound):
        await registry.revoke_api_key("zzzzzzzzzzzzzzzz")


async def test_models_come_newest_first_in_pages_bound_to_their_filter(registry: PostgresRegistry) -> None:
    user_id, job_id = await a_job(registry)
    made = []
    for n in range(5):
        family = "TASK_FAMILY_TABULAR_CLASSIFICATION" if n % 2 else "TASK_FAMILY_TEXT_CLASSIFICATION"
        new = NewModel(job_id, f"model {n}", "p", family, "accuracy", {}, "", f"{n:064x}", 1)
        made.append(await registry.create_model(user_id, new))
    seen, token, pages = [], "", 0
    while True:
        page = await registry.list_models(user_id, page_size=2, page_token=token)
        seen += [m.title for m in page.items]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"model {n}" for n in (4, 3, 2, 1, 0)] and pages == 3
    text = await registry.list_models(
        user_id, page_size=1, page_token="", task_family="TASK_FAMILY_TEXT_CLASSIFICATION"
    )
    assert [m.title for m in text.items] == ["model 4"] and text.next_page_token
    rest = await registry.list_models(
        user_id, page_size=5, page_token=text.next_page_token, task_family="TASK_FAMILY_TEXT_CLASSIFICATION"
    )
    assert [m.title for m in rest.items] == ["model 2", "model 0"] and rest.next_page_token == ""
    with pytest.raises(errors.InvalidArgument, match="different filter"):
        await registry.list_models(user_id, page_size=5, page_token=text.next_page_token)
    with pytest.raises(errors.InvalidArgument, match="another list"):
        await registry.list_jobs(user_id, page_size=5, page_token=text.next_page_token)
