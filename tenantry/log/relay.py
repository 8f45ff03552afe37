"""The relay: publishes every stored event, in store order and exactly once, to JetStream.

It resumes from the stream itself (the last message carries its position and hash), so a crash
at any moment neither skips nor re-publishes; every publish is conditional on the previous one
(`Nats-Expected-Last-Msg-Id`), so a second relay can't interleave: it gets refused, re-reads the
stream's tail and carries on from there.

Where it resumes is decided by `tenantry.log.stream_check`, which checks the stream against the
store on start, after every refusal and every `check_interval` seconds: after the last message of
the stream that is the store's event byte for byte and linked to the one before it. So a purged or
trimmed stream is healed (the missing events published again, the same bytes, after the stream's
end) and a forged message is reported and published past, never resumed from."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import structlog
from eventsourcing.persistence import PersistenceError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from domain.event_log import (
    STREAM_NAME,
    SUBJECT_PREFIX,
    ZERO_HASH,
    NotificationLog,
    read_batch,
    subject_of,
)
from tenantry.log.jetstream import ensure_stream
from tenantry.log.stream_check import Resume, StreamGuard, msg_id
from tenantry.server.metrics import Metrics

log = structlog.get_logger("tenantry.log.relay")


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
        batch_size: int = 500,
        poll_interval: float = 0.25,
        wakeup: asyncio.Event | None = None,
        metrics: Metrics | None = None,
        ack_timeout: float = 30.0,
        check_interval: float = 5.0,
    ) -> None:
        self._recorder = recorder
        self._ack_timeout = ack_timeout
        self._nc = nc
        self._js = nc.jetstream()
        self._pipeline = _Pipeline(nc)
        self._replicas = replicas
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self.wakeup = wakeup or asyncio.Event()
        self.published = 0
        # The last store position read and sent (acked or in flight), internal records included.
        self.position = 0
        self._metrics = metrics
        self._stop = asyncio.Event()  # run()'s, once it runs
        self._guard = StreamGuard(recorder, nc, metrics=metrics, alert_replicas=replicas)
        self._check_interval = check_interval
        self._next_check = 0.0

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
        )

    async def ensure_stream(self) -> None:
        if await ensure_stream(self._js, self._stream_config()):
            log.info("relay.stream_created", stream=STREAM_NAME, replicas=self._replicas)

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

        Batches are double-buffered: the next batch is read and sent while the acks of the
        previous one are awaited. Every publish is conditional on the one before it, so a
        refusal anywhere refuses everything after it too, and the relay re-reads the tail."""
        self._stop = stop
        started = await self._start(stop)
        if started is None:
            return
        tail = started
        self._next_check = time.monotonic() + self._check_interval
        self.position = tail.position
        log.info("relay.resumed", position=tail.position)
        cursor = tail.position
        unacked: list[asyncio.Future[None]] = []
        sent: list[asyncio.Future[None]] = []
        unacked_on = 0  # the connection (its reconnect count) the unacked batch went out on
        while not stop.is_set():
            try:
                last_id, messages, next_tail = await asyncio.to_thread(self._prepare, cursor, tail)
                sent_on = self._connection()
                sent = [await self._pipeline.publish(*message) for message in messages]
                tail = next_tail
                await self._settle(unacked, unacked_on)
                unacked, unacked_on, sent = sent, sent_on, []
                if last_id is not None:
                    cursor = self.position = last_id
                    if time.monotonic() < self._next_check:
                        continue
                await self._settle(unacked, unacked_on)
                unacked = []
                healed = await self._audit_if_due()
                if healed is not None:
                    tail, cursor = healed, healed.position
                    self.position = cursor
                    continue
                if last_id is not None:
                    continue
            except PersistenceError as exc:
                # The store can't be read (its database is restarting): nothing of this batch
                # was sent; read again after a pause.
                log.warning("relay.store_failed", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(self._poll_interval, 1.0)):
                        await stop.wait()
                continue
            except (APIError, TimeoutError, ConnectionError, NatsError) as exc:
                # Someone else published (a second relay), the server hiccuped, or the
                # connection dropped (nats-server restarted): the stream is the truth, read
                # where it stands (as soon as the server answers) and go on from there.
                log.warning("relay.resync", error=f"{type(exc).__name__}: {exc}")
                self._pipeline.forget()
                for future in (*unacked, *sent):
                    # Their refusals are known (one is enough): retrieved, so that asyncio
                    # does not log each as an exception never retrieved.
                    if future.done() and not future.cancelled():
                        future.exception()
                unacked, sent = [], []
                resynced = await self._resync(stop)
                if resynced is None:
                    break
                tail = resynced
                cursor = tail.position
                continue
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await _first_of(self.wakeup, stop)
        try:
            await self._settle(unacked, unacked_on)
        except (APIError, TimeoutError, ConnectionError, NatsError) as exc:
            # Stopping anyway: the next relay resumes from the stream's tail, whatever landed.
            log.warning("relay.unsettled", error=f"{type(exc).__name__}: {exc}")

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
                await self.ensure_stream()
                await self._guard.ensure_alert_stream()
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
        self, cursor: int, tail: Tail
    ) -> tuple[int | None, list[tuple[str, bytes, dict[str, str]]], Tail]:
        """Read the next batch after `cursor` and build its messages (in a worker thread, so
        the event loop keeps receiving acks meanwhile). The returned tail assumes they land."""
        batch = read_batch(self._recorder, cursor, tail.hash, self._batch_size)
        messages = []
        position = tail.position
        for event in batch.events:
            headers = {"Nats-Msg-Id": msg_id(event.body["position"])}
            if tail.seq is not None and position == tail.position:
                # The first publish after a check: right after the stream's last message,
                # whatever it is (a forged one has no id of ours to expect).
                headers["Nats-Expected-Last-Sequence"] = str(tail.seq)
            elif position:
                headers["Nats-Expected-Last-Msg-Id"] = msg_id(position)
            else:
                headers["Nats-Expected-Last-Sequence"] = "0"
            messages.append((subject_of(event.body), event.payload, headers))
            position = event.body["position"]
        last_id = batch.position if batch.read else None
        # Nothing to send: the tail stays as it is (with its sequence, if a check gave one).
        return last_id, messages, Tail(position, batch.hash) if messages else tail

    async def _settle(self, acks: list[asyncio.Future[None]], sent_on: int) -> None:
        """Wait for the acks of publishes sent on connection `sent_on`. Once the connection
        has dropped and come back, the acks still missing will never come (nor maybe their
        messages): that is a ConnectionError, not a wait for the whole ack timeout."""
        if not acks:
            return
        pending: set[asyncio.Future[None]] = set(acks)
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
        # the middle of a batch: its first publish refused, the next ones its own).
        stored = len(acks) - len(refused)
        self.published += stored
        if self._metrics is not None:
            self._metrics.relay_published.inc(stored)
        if refused:
            raise refused[0]  # resync: the stream is read again
        log.debug("relay.published", events=len(acks))


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class _Pipeline:
    """Pipelined JetStream publishes: many in flight, acks matched by reply subject.

    nats-py's own `publish_async` leaves the future unresolved forever when the server answers
    with a 400 error (its error handler raises instead of setting the exception), and a refused
    conditional publish is exactly the answer a relay must be able to see."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._counter = 0

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[None]:
        if not self._prefix:
            self._prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        self._counter += 1
        token = str(self._counter)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        return future

    def forget(self) -> None:
        """Cancel the publishes whose acks are no longer awaited (the relay resyncs)."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()

    async def _on_ack(self, msg: Msg) -> None:
        future = self._futures.pop(msg.subject.rsplit(".", 1)[-1], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStreamResponseError())
            return
        if b'"duplicate"' in msg.data and b'"error"' not in msg.data:
            # Not stored: the server remembered the id. A second relay published it first,
            # or a healed event's id was still in the window: read the stream again.
            future.set_exception(
                APIError(code=409, description="the stream dropped it as a duplicate")
            )
            return
        if b'"error"' not in msg.data:  # the usual answer, {"stream": …, "seq": …}: stored
            future.set_result(None)
            return
        answer = json.loads(msg.data)
        if "error" in answer:
            error = answer["error"]
            future.set_exception(
                APIError(
                    code=error.get("code"),
                    err_code=error.get("err_code"),
                    description=error.get("description"),
                )
            )
        else:
            future.set_result(None)
