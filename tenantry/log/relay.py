"""The relay: publishes every stored event, in store order and exactly once, to JetStream.

It resumes from the stream itself (the last message carries its position and hash), so a crash
at any moment neither skips nor re-publishes; it publishes a page of the store at a time as
atomic batches, each conditional on the stream's last sequence (`tenantry.log.batches`), so a
second relay can't interleave: it gets refused, re-reads the stream's tail and carries on from
there.

Where it resumes is decided by `tenantry.log.stream_check`, which checks the stream against the
store on start, after every refusal and every `check_interval` seconds: after the last message of
the stream that is the store's event byte for byte and linked to the one before it. So a purged or
trimmed stream is healed (the missing events published again, the same bytes, after the stream's
end) and a forged message is reported and published past, never resumed from."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TypeVar

import structlog
from eventsourcing.persistence import PersistenceError
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from domain.event_log import (
    STREAM_NAME,
    SUBJECT_PREFIX,
    ZERO_HASH,
    NotificationLog,
    read_batch,
    subject_of,
)
from domain.waiting import StreamMark, set_on
from tenantry.log.batches import (
    ATOMIC_BATCH_MAX,
    Batch,
    Chained,
    Pipeline,
    atomic_batches,
    conditional_messages,
)
from tenantry.log.jetstream import ensure_stream
from tenantry.log.recent import RecentCommits, TakenRows
from tenantry.log.store_pages import page_reader
from tenantry.log.stream_check import Resume, StreamGuard
from tenantry.server.metrics import Metrics

log = structlog.get_logger("tenantry.log.relay")
# Rows of the first page of a backlog (then doubled page after page, up to a whole page).
FIRST_PAGE = 250
_T = TypeVar("_T")


@dataclass
class Tail:
    """The last event on the stream: where publishing resumes. `seq`, when known, is the
    stream's last sequence, which the next publish expects (after a check: the message
    there may be a forged one, whose id no publish can expect)."""

    position: int = 0
    hash: str = ZERO_HASH
    seq: int | None = None


class Relay:
    def __init__(
        self,
        recorder: NotificationLog,
        nc: Client,
        *,
        replicas: int = 1,
        batch_size: int = 2 * ATOMIC_BATCH_MAX,
        poll_interval: float = 0.25,
        wakeup: asyncio.Event | None = None,
        recent: RecentCommits | None = None,
        metrics: Metrics | None = None,
        ack_timeout: float = 30.0,
        check_interval: float = 5.0,
        stream: StreamMark | None = None,
    ) -> None:
        self._recorder = recorder
        # Pages read as plain rows, the published ones only (`store_pages`): what the relay
        # reads most, by far.
        self._pages = page_reader(recorder)
        self._ack_timeout = ack_timeout
        self._nc = nc
        self._js = nc.jetstream()
        self._pipeline = Pipeline(nc)
        # Whether the stream takes atomic batches (nats-server ≥ 2.12): known once it is made.
        self._atomic = False
        self._replicas = replicas
        # Rows a page. Reading is the relay's main cost, and a page is published while the
        # next one is read: a page of about one atomic batch of events (each command stores
        # its record beside its events) keeps the last page's publish, the part nothing
        # overlaps, to one batch.
        self._batch_size = batch_size
        # The first page read when not publishing already (started, or idle until a backlog
        # came): small, so that publishing starts soon, the server busy with it while the
        # next page is read; each page read ahead then twice the one before it, up to
        # `batch_size`: a read takes about as long as the server's commit of as many events,
        # so each overlaps the batch before it, and only the first is read with nothing in
        # flight (at 1,000 rows it was 15-35 ms of a 150 ms `relay_throughput --quick`).
        self._first_page = min(batch_size, FIRST_PAGE)
        self._poll_interval = poll_interval
        self.wakeup = wakeup or asyncio.Event()
        # The rows this process commits, handed over with `wakeup` (see `tenantry.log.recent`).
        self._recent = recent
        self.published = 0
        # The last store position read and sent (acked or in flight), internal records included.
        self.position = 0
        self._metrics = metrics
        self._stop = asyncio.Event()  # run()'s, once it runs
        self._guard = StreamGuard(recorder, nc, metrics=metrics, alert_replicas=replicas)
        self._check_interval = check_interval
        self._next_check = 0.0
        # Where this relay marks what it has on the stream (acked), for the views' runner of
        # this process, which lets it go first (`domain.waiting.StreamMark`).
        self._stream = stream

    @property
    def findings(self) -> list[object]:
        """What the stream checks found wrong so far (also logged, counted and alerted)."""
        return list(self._guard.findings)

    def _stream_config(self, duplicate_window: float = 120.0) -> StreamConfig:
        return StreamConfig(
            name=STREAM_NAME,
            subjects=[SUBJECT_PREFIX + ">"],
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            duplicate_window=duplicate_window,
            description="Tenantry: every stored event, in store order, hash-chained",
            allow_atomic=True,
        )

    async def ensure_stream(self) -> None:
        created, info = await ensure_stream(self._js, self._stream_config())
        if created:
            log.info("relay.stream_created", stream=STREAM_NAME, replicas=self._replicas)
        # A server older than 2.12 drops `allow_atomic` from the configuration it keeps (and
        # would ignore the batch headers): publish one conditional message at a time there.
        self._atomic = bool(info.config.allow_atomic)
        if not self._atomic:
            log.warning("relay.no_atomic_batches", stream=STREAM_NAME)

    async def tail(self) -> Tail:
        """Where publishing resumes: after the stream's intact chain (see `stream_check`)."""
        try:
            resume = await self._guard.start()
        except NotFoundError:
            await self.ensure_stream()  # the stream itself was deleted: start it again
            resume = await self._guard.start()
        return await self._resume_at(resume)

    async def _resume_at(self, resume: Resume) -> Tail:
        if resume.rewind:
            await self._forget_duplicates()
            log.warning(
                "relay.healing", resume_after=resume.position, stream_last_seq=resume.last_seq
            )
        return Tail(resume.position, resume.hash, resume.last_seq)

    async def _forget_duplicates(self) -> None:
        """Empty the server's duplicate window, so that events published again get stored.

        JetStream remembers a `Nats-Msg-Id` for `duplicate_window` even after its message was
        deleted or purged, and would drop the healed copy as a duplicate (acking it all the
        same). Shrinking the window to its minimum makes the server expire the ids older than
        that; the window is then restored. Only the relay publishes here, and the next
        publish is conditional on the stream's last sequence, so nothing can slip in."""
        await self._js.update_stream(self._stream_config(duplicate_window=0.1))
        await asyncio.sleep(0.3)
        await self._js.update_stream(self._stream_config())

    async def _audit_if_due(self) -> Tail | None:
        """Check what was published since the last check, every `check_interval` seconds;
        a tail to resume from if the stream lost (or gained) what it must not have."""
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self._check_interval
        resume = await self._guard.audit()
        return None if resume is None else await self._resume_at(resume)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; wake on `wakeup` or every poll interval.

        The next page is read (in a worker thread) while the one before it is published;
        when caught up, the rows this process just committed are taken instead of read.
        Every batch is conditional on the one before it, so a refusal anywhere refuses
        everything after it too, and the relay re-reads the tail."""
        self._stop = stop
        started = await self._start(stop)
        if started is None:
            return
        tail = started
        self._next_check = time.monotonic() + self._check_interval
        self.position = tail.position
        log.info("relay.resumed", position=tail.position)
        cursor = tail.position
        ahead: asyncio.Task[tuple[int | None, list[Batch], Tail, bool]] | None = None
        limit = self._first_page  # rows of the page read last
        stopping = asyncio.create_task(set_on(stop, self.wakeup))
        if self._stream is not None:
            self._stream.relaying = True
        try:
            while not stop.is_set():
                try:
                    # Whether the page is all this process just committed (and nothing else
                    # handed over waits): then the store holds nothing of ours after it, and a
                    # read now would only compete with the event's way to its consumers; rows
                    # of other processes come with a poll or a NOTIFY, as when idle.
                    only_ours = False
                    if ahead is None:
                        taken = self._just_committed(cursor, tail)
                        only_ours = taken is not None and not taken[3]
                        limit = self._first_page
                        last_id, batches, next_tail, full = taken or await self._read_ahead(
                            cursor, tail, limit
                        )
                    else:
                        last_id, batches, next_tail, full = await ahead
                    ahead = None
                    if full:
                        # A backlog: read on while this page is published, as if it lands (else
                        # dropped). Not when caught up: a read then would only compete with the
                        # publish for the interpreter, adding to the latency of a single event.
                        assert last_id is not None
                        limit = min(2 * limit, self._batch_size)
                        ahead = self._read_ahead(last_id, next_tail, limit)
                    await self._publish(batches, last_id)
                    tail = next_tail
                    if last_id is not None:
                        cursor = self.position = last_id
                        if self._stream is not None:
                            self._stream.publish(last_id)
                        if time.monotonic() < self._next_check:
                            if only_ours and not self._recent_waiting():
                                await self._until_woken()
                            continue
                    healed = await self._audit_if_due()
                    if healed is not None:
                        await _dropped(ahead)
                        ahead = None
                        tail, cursor = healed, healed.position
                        self.position = cursor
                        continue
                    if last_id is not None:
                        continue
                except PersistenceError as exc:
                    # The store can't be read (its database is restarting): nothing of this page
                    # was sent; read again after a pause.
                    await _dropped(ahead)
                    ahead = None
                    log.warning("relay.store_failed", error=f"{type(exc).__name__}: {exc}")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(self._poll_interval, 1.0)):
                            await stop.wait()
                    continue
                except (APIError, TimeoutError, ConnectionError, NatsError) as exc:
                    # Someone else published (a second relay), the server hiccuped, or the
                    # connection dropped (nats-server restarted): the stream is the truth, read
                    # where it stands (as soon as the server answers) and go on from there.
                    self._pipeline.forget()
                    await _dropped(ahead)
                    ahead = None
                    log.warning("relay.resync", error=f"{type(exc).__name__}: {exc}")
                    resynced = await self._resync(stop)
                    if resynced is None:
                        break
                    tail = resynced
                    cursor = tail.position
                    continue
                await self._until_woken()
        finally:
            if self._stream is not None:
                self._stream.stop_relaying()
            await _dropped(stopping)
        await _dropped(ahead)

    async def _until_woken(self) -> None:
        """Nothing more was there when last read: until a commit (or the poll interval).
        The wake-up itself is awaited (`set_on` sets it on `stop`): a commit resumes this
        task in one turn of the loop, not the three of a wait on either of two events."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll_interval):
                await self.wakeup.wait()

    def _recent_waiting(self) -> bool:
        """Whether rows handed over are still held (after a gap: read the store for it)."""
        return self._recent is not None and self._recent.holds_rows()

    def _read_ahead(
        self, cursor: int, tail: Tail, limit: int | None = None
    ) -> asyncio.Task[tuple[int | None, list[Batch], Tail, bool]]:
        """The page after `cursor` (at most `limit` rows, else a whole page), read in a worker
        thread. The wake-up is cleared before the read starts, so a commit after it (the read
        may miss it) keeps it set."""
        self.wakeup.clear()
        return asyncio.create_task(asyncio.to_thread(self._prepare, cursor, tail, None, limit))

    def _just_committed(
        self, cursor: int, tail: Tail
    ) -> tuple[int | None, list[Batch], Tail, bool] | None:
        """The page after `cursor` made of the rows this process just committed, when they
        are exactly the next ones: built here, without a read or a thread hop (the usual
        case once caught up: the commit's own event, on the stream as soon as possible).
        None when they aren't (read the store). The wake-up is cleared first, as for a read:
        rows handed after this come with a wake-up of their own."""
        if self._recent is None:
            return None
        self.wakeup.clear()
        rows = self._recent.take(cursor, self._batch_size)
        return None if rows is None else self._prepare(cursor, tail, rows)

    async def _publish(self, batches: list[Batch], last_id: int | None) -> None:
        """Send `batches` and wait for their acks. Atomic batches go one at a time: the
        next one's condition (the stream's last sequence) holds only if this one landed, and
        a sequence can't say whose message is there. Conditional messages, each expecting
        the id before it, are all sent at once and their acks awaited together. `position`
        is the page's end (`last_id`) once all of it is sent, before its last acks come."""
        if self._atomic:
            for n, batch in enumerate(batches, 1):
                sent_on = self._connection()
                ack = await self._pipeline.send(batch)
                if n == len(batches) and last_id is not None:
                    self.position = last_id
                    self._mark_when_stored(ack, last_id)
                await self._settle([ack], sent_on)
            return
        sent_on = self._connection()
        acks = [await self._pipeline.send(batch) for batch in batches]
        if last_id is not None:
            self.position = last_id
            if acks:  # each conditional on the one before: the last stored, all are
                self._mark_when_stored(acks[-1], last_id)
        await self._settle(acks, sent_on)

    def _mark_when_stored(self, ack: asyncio.Future[int], last_id: int) -> None:
        """Mark the page on the stream as soon as its last ack says stored (the views of this
        process wait for it), not a few turns of the loop later when `_settle` returns."""
        stream = self._stream
        if stream is None:
            return

        def stored(done: asyncio.Future[int]) -> None:
            if not done.cancelled() and done.exception() is None:
                stream.publish(last_id)

        ack.add_done_callback(stored)

    def _connection(self) -> int:
        """Which connection this is: nats-py counts the reconnects."""
        return int(self._nc.stats["reconnects"])

    async def _start(self, stop: asyncio.Event) -> Tail | None:
        """The stream made sure of and its tail, for as long as that takes: a JetStream
        cluster without a quorum yet (nodes starting together, or coming back) answers
        nothing, and a relay started with it must wait, not end. None if `stop` comes first."""
        pause = max(self._poll_interval, 0.5)
        while not stop.is_set():
            try:
                # The two streams at once (each is two requests to the server), both answered
                # before either's error is raised.
                made = await asyncio.gather(
                    self.ensure_stream(), self._guard.ensure_alert_stream(), return_exceptions=True
                )
                for result in made:
                    if isinstance(result, BaseException):
                        raise result
                return await self.tail()
            except (APIError, TimeoutError, NatsError) as exc:
                log.warning("relay.stream_unavailable", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
            pause = min(pause * 2, 5.0)
        return None

    async def _resync(self, stop: asyncio.Event) -> Tail | None:
        """The stream's tail, read again for as long as it takes (the server may be away for a
        while); None if `stop` is set first."""
        pause = self._poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
            if stop.is_set():
                return None
            if self._nc.is_closed:
                # Closed, not reconnecting: nothing will ever answer on it again.
                log.error("relay.connection_closed")
                return None
            try:
                return await self.tail()
            except (APIError, TimeoutError, NatsError) as exc:
                log.warning("relay.resync_failed", error=f"{type(exc).__name__}: {exc}")
            pause = min(max(pause * 2, 0.1), 5.0)  # a server away for long: ask less often

    def _prepare(
        self, cursor: int, tail: Tail, rows: TakenRows | None = None, limit: int | None = None
    ) -> tuple[int | None, list[Batch], Tail, bool]:
        """Read the next page after `cursor` (from the store, in a worker thread so the event
        loop keeps receiving acks meanwhile; or from `rows` just committed, which are that
        page) and build its batches. The returned tail assumes they land; the flag says
        whether the page was full (more may be waiting)."""
        limit = limit or self._batch_size
        if rows is None:
            page = self._pages.read_page(cursor, tail.hash, limit)
        else:
            page = read_batch(rows, cursor, tail.hash, limit)
        events = [Chained(subject_of(e.body), e.payload, e.body["position"]) for e in page.events]
        last_id = page.position if page.read else None
        full = page.read == limit
        if not events:
            # Nothing to send: the tail stays as it is (with its sequence, if a check gave one).
            return last_id, [], tail, full
        position = events[-1].position
        if self._atomic:
            assert tail.seq is not None  # every check gives it, and every batch advances it
            batches = atomic_batches(events, tail.seq)
            return last_id, batches, Tail(position, page.hash, tail.seq + len(events)), full
        batches = conditional_messages(events, tail.position, tail.seq)
        return last_id, batches, Tail(position, page.hash), full

    async def _settle(self, acks: list[asyncio.Future[int]], sent_on: int) -> None:
        """Wait for the acks of publishes sent on connection `sent_on`. Once the connection
        has dropped and come back, the acks still missing will never come (nor maybe their
        messages): that is a ConnectionError, not a wait for the whole ack timeout."""
        if not acks:
            return
        pending: set[asyncio.Future[int]] = set(acks)
        async with asyncio.timeout(self._ack_timeout):
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.25)
                if pending and self._connection() != sent_on:
                    raise ConnectionError("the connection dropped before every ack came")
                if pending and self._stop.is_set() and not self._nc.is_connected:
                    # Stopping with the bus away: the acks won't come before it is back.
                    raise ConnectionError("stopping while the bus is unreachable")
        results = [f.exception() or f.result() for f in acks]
        refused = [r for r in results if isinstance(r, BaseException)]
        # Those stored count, also before a refusal (a second relay may have taken over in
        # the middle of a page: its first batch refused, the next ones its own).
        stored = sum(r for r in results if isinstance(r, int))
        self.published += stored
        if self._metrics is not None:
            self._metrics.relay_published.inc(stored)
        if refused:
            raise refused[0]  # resync: the stream is read again
        log.debug("relay.published", events=stored, batches=len(acks))


async def _dropped(task: asyncio.Task[_T] | None) -> None:
    """Until `task` (a page read ahead that won't be published) has ended, its error retrieved."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
