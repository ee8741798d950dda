"""The gateway's paging and event fan-out on their own, in memory: page tokens and keyset pages, and the
:class:`~zehanx_gateway.fanout.EventHub` over an in-memory event store (no PostgreSQL, no server).

The real store and WatchJob over gRPC are tested in test_gateway_registry.py and test_gateway_watch.py;
these pin the modules' own rules so a fresh clone exercises them in a second.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from zehanx_gateway import paging
from zehanx_gateway.domain import STATE_CHANGE, JobEvent, PendingEvent
from zehanx_gateway.fanout import EventHub, Subscription
from zehanx_runtime import errors

# -- paging -------------------------------------------------------------------------------------------


def test_page_size_zero_is_the_default_too_large_is_capped_and_negative_is_refused() -> None:
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    assert paging.page_size(7) == 7
    assert paging.page_size(10**6) == paging.MAX_PAGE_SIZE
    with pytest.raises(errors.InvalidArgument) as negative:
        paging.page_size(-1)
    assert [v.field for v in negative.value.violations] == ["page_size"]


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("%%%", "not a token this service issued"),
        (paging.encode("models", "f1", {"id": 3}), "belongs to another list"),
        (paging.encode("jobs", "f2", {"id": 3}), "different filter"),
    ],
)
def test_a_token_from_elsewhere_is_invalid_argument_naming_page_token(token: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as bad:
        paging.decode(token, "jobs", "f1")
    assert bad.value.reason == "BAD_PAGE_TOKEN" and message in bad.value.message
    assert [v.field for v in bad.value.violations] == ["page_token"]


def test_walking_keyset_pages_returns_every_item_once_in_order() -> None:
    items = list(range(1, 24))
    fp = paging.fingerprint("user-1", ["RUNNING"])
    assert fp == paging.fingerprint("user-1", ["RUNNING"]) != paging.fingerprint("user-2", ["RUNNING"])
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        after = paging.decode(token, "jobs", fp)
        start = after["id"] if after else 0
        fetched = [i for i in items if i > start][: 5 + 1]  # the store reads one beyond the page
        page = paging.page_of(fetched, 5, "jobs", fp, lambda last: {"id": last})
        seen += page.items
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == items and pages == 5


def test_a_page_that_is_exactly_full_has_no_next_token() -> None:
    assert paging.page_of([1, 2, 3], 3, "jobs", "f", lambda last: {"id": last}).next_page_token == ""
    assert paging.page_of([], 3, "jobs", "f", lambda last: {"id": last}).items == []


# -- fan-out ------------------------------------------------------------------------------------------


class MemoryEvents:
    """The hub's EventStore port in memory: numbers each job's events from 1, as the registry does."""

    def __init__(self) -> None:
        self.events: dict[uuid.UUID, list[JobEvent]] = {}
        self.fail_appends: list[Exception] = []

    def append_now(self, pending: PendingEvent) -> JobEvent:
        history = self.events.setdefault(pending.job_id, [])
        event = JobEvent(pending.job_id, len(history) + 1, datetime.now(UTC), pending.kind, pending.payload)
        history.append(event)
        return event

    async def append_events(self, pending: Sequence[PendingEvent]) -> list[JobEvent | errors.DomainError]:
        if self.fail_appends:
            raise self.fail_appends.pop(0)
        return [self.append_now(p) for p in pending]

    async def list_events(self, job_id: uuid.UUID, *, after_sequence: int, limit: int) -> list[JobEvent]:
        return self.events.get(job_id, [])[after_sequence : after_sequence + limit]

    async def last_sequences(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        return {j: len(self.events.get(j, [])) for j in job_ids}


def _log(job: uuid.UUID, n: int) -> PendingEvent:
    return PendingEvent(job, "log_line", {"n": n})


def _end(job: uuid.UUID) -> PendingEvent:
    return PendingEvent(job, STATE_CHANGE, {"to_state": "SUCCEEDED"})


async def _collect(subscription: Subscription) -> list[int]:
    return [event.sequence async for event in subscription.events()]


async def _hub(store: MemoryEvents, **kwargs: int) -> EventHub:
    hub = EventHub(store, poll_seconds=0, **kwargs)
    hub.start()
    return hub


async def test_published_events_are_numbered_and_every_subscriber_gets_each_once_then_the_end() -> None:
    store, job = MemoryEvents(), uuid.uuid4()
    hub = await _hub(store)
    try:
        early = hub.subscribe(job, 0)
        reader = asyncio.create_task(_collect(early))
        written = await hub.publish_many([_log(job, i) for i in range(1, 6)])
        assert [e.sequence for e in written] == [1, 2, 3, 4, 5]
        late = hub.subscribe(job, 3)  # a resume: it has seen 1-3
        late_reader = asyncio.create_task(_collect(late))
        await hub.publish(_end(job))
        assert await asyncio.wait_for(reader, 5) == [1, 2, 3, 4, 5, 6]
        assert await asyncio.wait_for(late_reader, 5) == [4, 5, 6]  # ends after the terminal change
    finally:
        await hub.close()


async def test_a_subscriber_a_whole_buffer_behind_resumes_from_the_store_and_loses_nothing() -> None:
    store, job = MemoryEvents(), uuid.uuid4()
    hub = await _hub(store, subscriber_buffer=4, page_size=7)
    try:
        slow = hub.subscribe(job, 0)
        events = slow.events()
        await hub.publish(_log(job, 1))
        first = await asyncio.wait_for(anext(events), 5)  # it has caught up with the store: live now
        await hub.publish_many([_log(job, i) for i in range(2, 42)])  # 40 more while it reads none
        await hub.publish(_end(job))
        got = [first.sequence] + [event.sequence async for event in events]
        assert got == list(range(1, 43))
        assert slow.resumes >= 1 and hub.overflows >= 1
    finally:
        await hub.close()


async def test_events_committed_by_another_replica_arrive_after_a_resync() -> None:
    store, job = MemoryEvents(), uuid.uuid4()
    hub = await _hub(store)
    try:
        watcher = hub.subscribe(job, 0)
        reader = asyncio.create_task(_collect(watcher))
        await hub.publish(_log(job, 1))
        store.append_now(_log(job, 2))  # written by another gateway: this hub was not told
        store.append_now(_end(job))
        await asyncio.sleep(0.05)
        assert not reader.done()
        await hub.resync()  # what a notification or the poll does
        assert await asyncio.wait_for(reader, 5) == [1, 2, 3]
    finally:
        await hub.close()


async def test_an_unavailable_store_is_retried_and_another_failure_reaches_the_producer() -> None:
    store, job = MemoryEvents(), uuid.uuid4()
    hub = await _hub(store)
    try:
        store.fail_appends = [errors.Unavailable("restarting"), errors.Unavailable("restarting")]
        event = await asyncio.wait_for(hub.publish(_log(job, 1)), 5)
        assert event.sequence == 1 and len(store.events[job]) == 1
        store.fail_appends = [errors.Aborted("lease lost", reason="LEASE_LOST")]
        with pytest.raises(errors.Aborted):
            await asyncio.wait_for(hub.publish(_log(job, 2)), 5)
        assert len(store.events[job]) == 1
    finally:
        await hub.close()


async def test_closing_ends_the_subscriptions_and_refuses_new_events() -> None:
    store, job = MemoryEvents(), uuid.uuid4()
    hub = await _hub(store)
    watcher = hub.subscribe(job, 0)
    reader = asyncio.create_task(_collect(watcher))
    await hub.publish(_log(job, 1))
    await hub.close()
    assert await asyncio.wait_for(reader, 5) == [1]
    assert hub.subscriber_count(job) == 0
    with pytest.raises(errors.Unavailable) as refused:
        hub.submit(_log(job, 2))
    assert refused.value.reason == "SHUTTING_DOWN"
