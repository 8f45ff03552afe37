"""The worker runtime: one durable JetStream pull consumer per worker kind, shared by all its
instances, explicit acks, bounded redelivery with backoff, clean stop.

Each event is a trigger: the action brings the workspace or repo it is about to the latest state
the stream holds (see `workers.follower`), so a redelivered, replayed or overtaken event is a
no-op and never takes the world back to a past state.

One at a time: the durable allows one unacknowledged message (`max_ack_pending=1`) across all
instances. Two instances reconciling one workspace at once could finish in the wrong order (a
namespace written from a read made just before its deletion), subjects carry no key to
partition on, and the actions take milliseconds against a rate of human changes: instances are
standbys that take over at once, not parallel lanes. A message waiting for its retry (`nak`
with a delay) still holds the slot; a permanent failure is recorded and terminated, and a
transient one becomes permanent at the `max_deliver`-th attempt, so nothing blocks the queue
for longer than the sum of the backoff."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from domain.event_log import STREAM_NAME, SUBJECT_PREFIX
from workers.config import BackendConfig
from workers.errors import classify
from workers.events import Event, Result
from workers.follower import StreamFollower
from workers.reporter import Reporter

log = structlog.get_logger("workers.runtime")

# Deliveries the server allows beyond our own last attempt: a worker that crashes while
# recording its final failure gets the message back once more instead of losing it.
_DELIVERY_SLACK = 3


def subjects(*event_types: str) -> tuple[str, ...]:
    return tuple(SUBJECT_PREFIX + t for t in event_types)


class Provisioner(Protocol):
    """What one worker kind adds to the runtime: what it reads and how it acts."""

    name: str  # the worker's name: its durable, its `service:<name>` actor
    action_subjects: tuple[str, ...]  # events it acts on
    state_subjects: tuple[str, ...]  # events its view of the world is folded from (a superset)

    def fold(self, seq: int, body: dict[str, Any]) -> None: ...

    async def act(self, event: Event, *, last_attempt: bool) -> Result: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


async def attempt(action: Awaitable[str], *, last_attempt: bool) -> Outcome:
    """Run one backend action. Its detail on success, the reason when it failed for good;
    raises when a transient failure should be retried."""
    try:
        return Outcome(True, await action)
    except Exception as exc:
        failure = classify(exc)
        if failure.permanent:
            return Outcome(False, failure.reason)
        if last_attempt:
            return Outcome(False, f"gave up after repeated transient failures: {failure.reason}")
        raise


class WorkerRuntime:
    def __init__(
        self,
        nc: Client,
        provisioner: Provisioner,
        config: BackendConfig,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self._nc = nc
        # Told each message's outcome (handled, failed, retry, gave_up, undecodable): metrics.
        self._on_outcome = on_outcome or (lambda outcome: None)
        self._js: JetStreamContext = nc.jetstream(timeout=10.0)
        self._provisioner = provisioner
        self._config = config
        self._durable = f"tenantry-{provisioner.name}"
        self._reporter = Reporter(nc, actor=f"service:{provisioner.name}")
        self._log = log.bind(worker=provisioner.name)
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Handle events until `stop` is set; the message in hand is finished first."""
        follower = StreamFollower(
            self._js,
            f"{self._durable}-state",
            self._provisioner.state_subjects,
            self._provisioner.fold,
        )
        sub: JetStreamContext.PullSubscription | None = None
        try:
            if not await self._wait_for_stream(stop):
                return
            sub = await self._subscribe()
            self._log.info("worker.started", durable=self._durable)
            while not stop.is_set():
                try:
                    # Short pulls, never cancelled: a message the server sends is handled,
                    # not left unacked for ack_wait while the next instance waits for it.
                    msgs = await sub.fetch(1, timeout=1.0)
                except TimeoutError:
                    continue
                except NotFoundError:
                    self._log.warning("worker.durable_missing", durable=self._durable)
                    await sub.unsubscribe()
                    sub = await self._subscribe()
                    continue
                except NatsError as exc:
                    self._log.warning("worker.fetch_failed", error=str(exc))
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    await self._handle(msg, follower)
        finally:
            # Unsubscribe before the caller drains the connection: a drain with a pull
            # subscription still open can hang for 30 s.
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            await follower.close()
            await self._provisioner.close()
            self._log.info("worker.stopped", handled=self.handled)

    async def _wait_for_stream(self, stop: asyncio.Event) -> bool:
        """The relay creates the stream; a worker started first waits for it."""
        while not stop.is_set():
            try:
                await self._js.stream_info(STREAM_NAME)
                return True
            except (NotFoundError, TimeoutError, NatsError):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
        return False

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            name=self._durable,
            durable_name=self._durable,
            description=f"Tenantry {self._provisioner.name} worker (shared by its instances)",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._config.ack_wait,
            max_deliver=self._config.max_deliver + _DELIVERY_SLACK,
            max_ack_pending=1,
            filter_subjects=list(self._provisioner.action_subjects),
        )
        # Creates it, or updates it to this configuration (ack_wait, max_deliver, subjects).
        await self._js.add_consumer(STREAM_NAME, config)
        return await self._js.pull_subscribe_bind(consumer=self._durable, stream=STREAM_NAME)

    async def _handle(self, msg: Msg, follower: StreamFollower) -> None:
        started = time.perf_counter()
        meta = msg.metadata
        seq, delivery = meta.sequence.stream, meta.num_delivered
        try:
            event = Event(seq, json.loads(msg.data))
            event_log = self._log.bind(seq=seq, type=event.type, fqn=event.fqn, event_id=event.id)
        except (ValueError, KeyError, TypeError):
            self._log.error("worker.undecodable", seq=seq)
            self._on_outcome("undecodable")
            await _settle(msg.term())
            return
        last_attempt = delivery >= self._config.max_deliver
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        try:
            await follower.catch_up(seq)
            if (untrusted := follower.untrusted.get(seq)) is not None:
                # Not on the verified chain (forged, altered, out of place): never acted on.
                event_log.error("worker.untrusted", reason=untrusted)
                self._on_outcome("untrusted")
                await _settle(msg.term())
                return
            caught_up = time.perf_counter()
            result = await self._provisioner.act(event, last_attempt=last_attempt)
            acted = time.perf_counter()
            for report in result.reports:
                answer = await self._reporter.send(report, event)
                event_log.info("worker.reported", command=report.command, answer=answer)
        except Exception as exc:
            failure = classify(exc)
            if failure.permanent or last_attempt:
                event_log.error("worker.gave_up", attempt=delivery, reason=failure.reason)
                self._on_outcome("gave_up")
                await _settle(msg.term())
            else:
                delay = self._config.retry_delay(delivery)
                event_log.warning(
                    "worker.retry", attempt=delivery, delay=delay, reason=failure.reason
                )
                self._on_outcome("retry")
                await _settle(msg.nak(delay=delay))
            return
        finally:
            keep_alive.cancel()
        self.handled += 1
        if result.failure is not None:
            # Recorded as failed (where the domain can record it): never redelivered.
            event_log.error("worker.failed", attempt=delivery, reason=result.failure)
            self._on_outcome("failed")
            await _settle(msg.term())
            return
        await _settle(msg.ack_sync(timeout=5.0))
        self._on_outcome("handled")
        event_log.info(
            "worker.handled",
            attempt=delivery,
            reports=len(result.reports),
            ms=round((time.perf_counter() - started) * 1000, 2),
            # Where the time went: reading the state, acting, reporting.
            state_ms=round((caught_up - started) * 1000, 2),
            act_ms=round((acted - caught_up) * 1000, 2),
        )

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell the server the message is still being worked on, so a slow action is not
        redelivered to another instance while it runs."""
        while True:
            await asyncio.sleep(self._config.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()


async def _settle(call: Awaitable[Any]) -> None:
    """Acks are best effort: one that is lost means a redelivery, which is idempotent."""
    try:
        await call
    except Exception as exc:
        log.warning("worker.ack_failed", error=str(exc))
