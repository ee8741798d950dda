"""Fan-out of job events: to PostgreSQL (batched, none lost) and to every live subscriber.

Producers (the orchestrator's workers, relaying what the crawler, codegen and trainer stream) hand
events to :meth:`EventHub.publish`. One writer task writes whatever has queued up in one transaction
(the store numbers them), resolves each producer's future after the commit, and hands the committed
events to the job's :class:`JobFeed`, which offers each, in sequence order, to every
:class:`Subscription`.

A subscription's buffer is bounded and offering never waits: a slow subscriber never slows the
producer or the other subscribers. One whose buffer fills is told to resume from the store: its buffer
is dropped and it re-reads what it missed from PostgreSQL, so it loses nothing. Every subscriber keeps
its own last sequence: it skips what it has seen and fills any gap from the store, so each event
arrives exactly once and in order.

Several replicas: a trigger NOTIFYs ``zehanx_job_events`` with ``<job id>:<top sequence>`` at every
commit. Each replica LISTENs on its own connection and, for jobs it has subscribers for, reads the new
events once per feed (not once per subscriber). A slow poll of the jobs' last sequences backs this up
(for a lost notification, or a database reached through a pooler that cannot LISTEN).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import psycopg
from zehanx_runtime import errors
from zehanx_runtime.logging import get_logger

from zehanx_gateway import metrics
from zehanx_gateway.domain import JobEvent, PendingEvent

log = get_logger("zehanx.gateway.fanout")

NOTIFY_CHANNEL = "zehanx_job_events"

T = TypeVar("T")


class EventStore(Protocol):
    """What the hub needs from the registry."""

    async def append_events(self, pending: Sequence[PendingEvent]) -> list[JobEvent | errors.DomainError]: ...

    async def list_events(self, job_id: uuid.UUID, *, after_sequence: int, limit: int) -> list[JobEvent]: ...

    async def last_sequences(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]: ...


class Subscription:
    """One subscriber's view of a job's events: each exactly once, in order, from ``after_sequence``."""

    def __init__(self, hub: EventHub, job_id: uuid.UUID, after_sequence: int, buffer: int) -> None:
        self.job_id = job_id
        #: Highest sequence handed to the consumer.
        self.last = after_sequence
        #: How many times this subscriber fell behind and resumed from the store.
        self.resumes = 0
        self._hub = hub
        self._buffer = buffer
        self._queue: collections.deque[JobEvent] = collections.deque()
        self._wake = asyncio.Event()
        # Start by reading the store: the subscriber may be far behind the feed (a resume).
        self._from_store = True
        self._closed = False

    def offer(self, event: JobEvent) -> None:
        """Called by the feed for every event; O(1), never waits."""
        if self._closed or event.sequence <= self.last:
            return
        if len(self._queue) >= self._buffer:
            # Too far behind: drop the buffer and re-read from the store what it held.
            self._queue.clear()
            if not self._from_store:
                self._from_store = True
                self.resumes += 1
                self._hub.overflows += 1
        else:
            self._queue.append(event)
        self._wake.set()

    async def events(self) -> AsyncIterator[JobEvent]:
        """Events after ``after_sequence``; ends after the event that makes the job terminal."""
        store = self._hub.store
        page = self._hub.page_size
        while not self._closed:
            if self._from_store:
                self._from_store = False
                while True:
                    batch = await store.list_events(self.job_id, after_sequence=self.last, limit=page)
                    for event in batch:
                        if event.sequence != self.last + 1:
                            raise errors.Internal(f"event sequence gap in the store at {event.sequence}")
                        self.last = event.sequence
                        metrics.EVENTS_FANNED_OUT.inc()
                        yield event
                        if event.ends_stream:
                            return
                    if len(batch) < page:
                        break
                continue
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            event = self._queue.popleft()
            if event.sequence <= self.last:
                continue
            if event.sequence > self.last + 1:
                # A gap (this subscriber joined mid-flight, or the feed filled in late): the store has it.
                self._queue.appendleft(event)
                self._from_store = True
                continue
            self.last = event.sequence
            metrics.EVENTS_FANNED_OUT.inc()
            yield event
            if event.ends_stream:
                return

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._hub._unsubscribe(self)


class JobFeed:
    """The subscribers of one job on this replica, and the events to offer them, in order."""

    def __init__(self, hub: EventHub, job_id: uuid.UUID) -> None:
        self.job_id = job_id
        self.subscribers: set[Subscription] = set()
        #: Highest sequence offered to the subscribers (None until read from the store).
        self.head: int | None = None
        #: Highest sequence known to be committed (from commits here, notifications and polls).
        self.known_top = 0
        self.pending: dict[int, JobEvent] = {}
        self.wake = asyncio.Event()
        self._hub = hub
        self.task: asyncio.Task[None] | None = None

    def add(self, events: Iterable[JobEvent]) -> None:
        for event in events:
            if self.head is None or event.sequence > self.head:
                self.pending[event.sequence] = event
                self.known_top = max(self.known_top, event.sequence)
        self.wake.set()

    def seen(self, top: int) -> None:
        if top > self.known_top:
            self.known_top = top
            self.wake.set()

    def _offer(self, event: JobEvent) -> None:
        for subscriber in tuple(self.subscribers):
            subscriber.offer(event)
        self.head = event.sequence

    async def run(self) -> None:
        while self.subscribers:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Subscribers fill any gap from the store themselves; keep the feed alive.
                log.exception("job feed failed to offer events; retrying", job_id=str(self.job_id))
                await asyncio.sleep(1.0)
                self.wake.set()

    async def _drain(self) -> None:
        hub = self._hub
        if self.head is None and self.subscribers:
            # Every subscriber has read (or is reading) the store up to its own position, so the feed
            # starts at the least advanced of them; anything later it offers, in order.
            self.head = min(s.last for s in self.subscribers)
            self.pending = {s: e for s, e in self.pending.items() if s > self.head}
        while self.subscribers and self.head is not None:
            following = self.head + 1
            if following in self.pending:
                self._offer(self.pending.pop(following))
                continue
            behind = self.known_top > self.head or any(s > following for s in self.pending)
            if not behind:
                break
            if hub._writing[self.job_id] and not self.pending:
                # Our own writer is committing events of this job: they arrive through add() shortly.
                break
            batch = await _retrying(
                lambda: hub.store.list_events(self.job_id, after_sequence=self.head or 0, limit=hub.page_size)
            )
            if not batch:
                break
            for event in batch:
                self._offer(event)
            self.pending = {s: e for s, e in self.pending.items() if s > self.head}


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()`` until the database answers (a feed waits; its subscribers simply wait too)."""
    delay = 0.05
    while True:
        try:
            return await call()
        except errors.Unavailable as exc:
            log.warning("event store unavailable; retrying", error=str(exc), delay_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class EventHub:
    """The writer of events, the feeds of live subscribers, and the cross-replica listener."""

    def __init__(
        self,
        store: EventStore,
        *,
        subscriber_buffer: int = 1024,
        batch_max: int = 1000,
        page_size: int = 500,
        max_pending: int = 100_000,
        poll_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.subscriber_buffer = subscriber_buffer
        self.batch_max = batch_max
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self._queue: asyncio.Queue[tuple[PendingEvent, asyncio.Future[JobEvent]]] = asyncio.Queue(max_pending)
        self._feeds: dict[uuid.UUID, JobFeed] = {}
        self._writing: collections.Counter[uuid.UUID] = collections.Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._accepting = True
        #: Counters for tests and the benchmark.
        self.batches_written = 0
        self.events_written = 0
        self.notifications = 0
        #: Times a subscriber fell a whole buffer behind and was sent back to the store.
        self.overflows = 0

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, listen_conninfo: str | None = None) -> None:
        """Start the writer, the poller and (given a database URL) the LISTEN connection."""
        self._tasks.append(asyncio.create_task(self._write_forever(), name="zx-event-writer"))
        if self.poll_seconds > 0:
            self._tasks.append(asyncio.create_task(self._poll_forever(), name="zx-event-poller"))
        if listen_conninfo:
            self._tasks.append(
                asyncio.create_task(self._listen_forever(listen_conninfo), name="zx-event-listener")
            )

    async def close(self, *, flush_timeout: float = 10.0) -> None:
        """Stop taking events, write what is queued (up to ``flush_timeout``), stop everything."""
        self._accepting = False
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), flush_timeout)
        for feed in list(self._feeds.values()):
            for subscriber in tuple(feed.subscribers):
                subscriber.close()
        tasks = self._tasks + [f.task for f in self._feeds.values() if f.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # -- producing ---------------------------------------------------------------------------------

    def submit(self, event: PendingEvent) -> asyncio.Future[JobEvent]:
        """Queue an event for writing without waiting; the future resolves after its commit."""
        if not self._accepting:
            raise errors.Unavailable("the gateway is shutting down", reason="SHUTTING_DOWN")
        future: asyncio.Future[JobEvent] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((event, future))
        except asyncio.QueueFull:
            raise errors.ResourceExhausted(
                "too many events waiting to be written", reason="EVENT_QUEUE_FULL"
            ) from None
        return future

    async def publish(self, event: PendingEvent) -> JobEvent:
        """Write one event (batched with whatever else is waiting) and fan it out; returns it numbered."""
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[PendingEvent]) -> list[JobEvent]:
        """Write events in order (waiting for room when the queue is full); returns them numbered."""
        if not self._accepting:
            raise errors.Unavailable("the gateway is shutting down", reason="SHUTTING_DOWN")
        loop = asyncio.get_running_loop()
        futures = []
        for event in events:
            future: asyncio.Future[JobEvent] = loop.create_future()
            await self._queue.put((event, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def committed(self, events: Iterable[JobEvent]) -> None:
        """Hand events committed by this process outside the writer (state transitions) to the feeds."""
        by_job: dict[uuid.UUID, list[JobEvent]] = {}
        for event in events:
            by_job.setdefault(event.job_id, []).append(event)
        for job_id, job_events in by_job.items():
            feed = self._feeds.get(job_id)
            if feed is not None:
                feed.add(job_events)

    # -- subscribing --------------------------------------------------------------------------------

    def subscribe(self, job_id: uuid.UUID, after_sequence: int) -> Subscription:
        """A new subscriber; register it before reading the job's snapshot so nothing falls between."""
        subscription = Subscription(self, job_id, after_sequence, self.subscriber_buffer)
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = JobFeed(self, job_id)
        feed.subscribers.add(subscription)
        metrics.WATCH_SUBSCRIBERS.inc()
        if feed.task is None or feed.task.done():
            feed.task = asyncio.create_task(feed.run(), name=f"zx-feed-{job_id}")
        return subscription

    def subscriber_count(self, job_id: uuid.UUID) -> int:
        feed = self._feeds.get(job_id)
        return len(feed.subscribers) if feed else 0

    def _unsubscribe(self, subscription: Subscription) -> None:
        feed = self._feeds.get(subscription.job_id)
        if feed is None or subscription not in feed.subscribers:
            return
        feed.subscribers.discard(subscription)
        metrics.WATCH_SUBSCRIBERS.dec()
        if not feed.subscribers:
            del self._feeds[subscription.job_id]
            feed.wake.set()  # lets its task see there is nobody left and end

    # -- background tasks -----------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            jobs = {event.job_id for event, _ in batch}
            self._writing.update(jobs)
            try:
                await self._write(batch)
            finally:
                self._writing.subtract(jobs)
                for job_id in jobs:
                    if self._writing[job_id] <= 0:
                        del self._writing[job_id]
                    feed = self._feeds.get(job_id)
                    if feed is not None:
                        feed.wake.set()
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[tuple[PendingEvent, asyncio.Future[JobEvent]]]) -> None:
        delay = 0.05
        while True:
            try:
                results = await self.store.append_events([event for event, _ in batch])
                break
            except errors.Unavailable as exc:
                # Keep the batch and try again: producers' futures stay pending, nothing is lost.
                log.warning("event write failed; retrying", error=str(exc), events=len(batch), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:
                log.exception("event write failed", events=len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
        written: list[JobEvent] = []
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, JobEvent):
                written.append(result)
                if not future.done():
                    future.set_result(result)
            elif not future.done():
                future.set_exception(result)
        self.batches_written += 1
        self.events_written += len(written)
        self.committed(written)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.resync()

    async def resync(self) -> None:
        """Read the last sequence of every job with subscribers here; feeds behind catch up."""
        if not self._feeds:
            return
        try:
            tops = await self.store.last_sequences(list(self._feeds))
        except errors.DomainError as exc:
            log.warning("event poll failed", error=str(exc))
            return
        for job_id, top in tops.items():
            feed = self._feeds.get(job_id)
            if feed is not None:
                feed.seen(top)

    async def _listen_forever(self, conninfo: str) -> None:
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"listen {NOTIFY_CHANNEL}")
                    delay = 0.1
                    # Anything committed while we were not listening: let the feeds catch up.
                    await self.resync()
                    async for notice in conn.notifies():
                        self.notifications += 1
                        job_text, _, top_text = notice.payload.partition(":")
                        try:
                            feed = self._feeds.get(uuid.UUID(job_text))
                            top = int(top_text)
                        except ValueError:
                            continue
                        if feed is not None:
                            feed.seen(top)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                log.warning("event listener lost its connection; reconnecting", error=str(exc), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
