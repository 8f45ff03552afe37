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
for longer than the sum of the backoff.

Nothing another client does ends a worker or makes it skip an event: a message on its inboxes
that is not a delivery of its own durable is logged and dropped, and the durable's
configuration is checked whenever the worker is idle. One found rewritten (another filter,
another ack policy) is deleted and made again from the last position it was seen sound at,
so the events it skipped meanwhile are delivered (actions are idempotent: a repeat is a
no-op). NATS permissions (deploy/nats-accounts.conf) keep other roles off the durable in
production; this check is what a bus without them (the laptop's) still gets."""

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
        # Told each message's outcome (handled, failed, retry, gave_up, undecodable, foreign):
        # metrics.
        self._on_outcome = on_outcome or (lambda outcome: None)
        self._js: JetStreamContext = nc.jetstream(timeout=10.0)
        self._provisioner = provisioner
        self._config = config
        self._durable = f"tenantry-{provisioner.name}"
        self._reporter = Reporter(nc, actor=f"service:{provisioner.name}")
        self._log = log.bind(worker=provisioner.name)
        # The durable's ack floor when last seen sound: where a rewritten one is replayed from.
        self._sound_floor = 0
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
            sub = await self._bind(stop)
            if sub is None:
                return
            self._log.info("worker.started", durable=self._durable)
            while not stop.is_set():
                try:
                    # Short pulls, never cancelled: a message the server sends is handled,
                    # not left unacked for ack_wait while the next instance waits for it.
                    msgs = await sub.fetch(1, timeout=1.0)
                except TimeoutError:
                    if await self._durable_is_sound():
                        continue
                except NotFoundError:
                    self._log.warning("worker.durable_missing", durable=self._durable)
                except NatsError as exc:
                    self._log.warning("worker.fetch_failed", error=str(exc))
                    await asyncio.sleep(0.5)
                    continue
                else:
                    for msg in msgs:
                        await self._handle(msg, follower)
                    continue
                # The durable is gone or was rewritten: make it sound again and bind anew.
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                sub = await self._bind(stop)
                if sub is None:
                    return
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
            if self._nc.is_connected:  # else a request waits its whole timeout for nothing
                try:
                    await self._js.stream_info(STREAM_NAME)
                    return True
                except (NotFoundError, TimeoutError, NatsError):
                    pass
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
        return False

    def _wanted(self) -> ConsumerConfig:
        return ConsumerConfig(
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

    def _is_sound(self, config: ConsumerConfig) -> bool:
        """Whether the durable still delivers what this worker acts on, one at a time, each
        acked on its own (ack_wait and max_deliver may differ: a new release changes them)."""
        filters = config.filter_subjects or (
            [config.filter_subject] if config.filter_subject else []
        )
        return (
            set(filters) == set(self._provisioner.action_subjects)
            and config.ack_policy == AckPolicy.EXPLICIT
            and config.max_ack_pending == 1
            and config.deliver_policy in (DeliverPolicy.ALL, DeliverPolicy.BY_START_SEQUENCE)
            and not config.deliver_subject
        )

    async def _durable_is_sound(self) -> bool:
        """Looked at while idle. False when the durable is missing or rewritten; True too when
        the server can't be asked now (the next idle moment asks again)."""
        if not self._nc.is_connected:
            return True  # asked when the bus is back: meanwhile nothing is delivered anyway
        try:
            info = await self._js.consumer_info(STREAM_NAME, self._durable, timeout=2.0)
        except NotFoundError:
            self._log.warning("worker.durable_missing", durable=self._durable)
            return False
        except (NatsError, TimeoutError):
            return True
        if not self._is_sound(info.config):
            return False
        if info.ack_floor is not None:
            self._sound_floor = max(self._sound_floor, info.ack_floor.stream_seq)
        return True

    async def _bind(self, stop: asyncio.Event) -> JetStreamContext.PullSubscription | None:
        """A pull subscription on a sound durable, tried again until it works or `stop`."""
        while not stop.is_set():
            try:
                await self._ensure_durable()
                return await self._js.pull_subscribe_bind(
                    consumer=self._durable, stream=STREAM_NAME
                )
            except (NatsError, TimeoutError) as exc:
                # Another instance is making it at this moment, or the server is away.
                self._log.warning("worker.bind_failed", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
        return None

    async def _ensure_durable(self) -> None:
        """Create the durable, or update it to this release's ack_wait and max_deliver. One
        that was rewritten is made again from `_sound_floor`, the last position it was seen
        sound at (the start of the stream, before it ever was): what it skipped comes again."""
        wanted = self._wanted()
        try:
            info = await self._js.consumer_info(STREAM_NAME, self._durable)
        except NotFoundError:
            info = None
        if info is not None and not self._is_sound(info.config):
            self._log.error(
                "worker.durable_rewritten",
                durable=self._durable,
                filter_subjects=info.config.filter_subjects or info.config.filter_subject,
                ack_policy=str(info.config.ack_policy),
                replay_after=self._sound_floor,
            )
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(STREAM_NAME, self._durable)
            info = None
        if info is not None:
            # Where it starts is fixed when it is made; an update must not try to change it.
            wanted.deliver_policy = info.config.deliver_policy
            wanted.opt_start_seq = info.config.opt_start_seq
        elif self._sound_floor:
            wanted.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            wanted.opt_start_seq = self._sound_floor + 1
        info = await self._js.add_consumer(STREAM_NAME, wanted)
        if info.ack_floor is not None:
            self._sound_floor = max(self._sound_floor, info.ack_floor.stream_seq)

    def _delivery(self, msg: Msg) -> tuple[int, int] | None:
        """(stream sequence, delivery count) of a delivery of this worker's durable; None for
        anything else that reached its inbox (nothing a client sends may stop a worker)."""
        try:
            meta = msg.metadata
        except Exception:
            return None
        if meta.stream != STREAM_NAME or meta.consumer != self._durable:
            return None
        return meta.sequence.stream, meta.num_delivered

    async def _handle(self, msg: Msg, follower: StreamFollower) -> None:
        started = time.perf_counter()
        delivery_of = self._delivery(msg)
        if delivery_of is None:
            self._log.warning(
                "worker.foreign_message", subject=msg.subject[:200], reply=(msg.reply or "")[:200]
            )
            self._on_outcome("foreign")
            return
        seq, delivery = delivery_of
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
