"""A worker's view of the world, folded from the stream: every event its state needs, as far as
the stream goes at the moment an action needs it.

Instances of a worker share one durable consumer, so none of them sees every event through it.
Each instance therefore reads the events its state needs through its own ephemeral, unacked
consumer, on demand: before acting on a message it catches up with the stream's end (which holds
that message and maybe later ones). Actions then bring the world to the *latest* state of the
workspace or repo, whichever instance handled the events before and however old the message in
hand is: a redelivered or replayed event never takes the world back to a past state, and a
restarted instance rebuilds the same view from the stream (the truth), with no state file to
keep consistent with its acks.

It reads the *whole* stream, not only the subjects its state needs: each event is believed only
if it extends the hash chain verified so far (`workers.chain`), and a link spans subjects. A
message that does not is logged as an error, never folded, and remembered, so the runtime
refuses to act on it too."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from domain.event_log import STREAM_NAME, SUBJECT_PREFIX
from workers.chain import ChainGuard
from workers.errors import TransientError

log = structlog.get_logger("workers.follower")

Apply = Callable[[int, dict[str, Any]], None]
# Pulls in a row that bring nothing while the consumer says events are waiting: then the
# action is retried later (with backoff) rather than waited for here.
_MAX_EMPTY_FETCHES = 5
# State consumers found unreachable (and replaced) in one catch-up before giving up on it.
_MAX_LOST_CONSUMERS = 2


class StreamFollower:
    def __init__(
        self,
        js: JetStreamContext,
        name: str,
        subjects: Sequence[str],
        apply: Apply,
        batch: int = 256,
    ) -> None:
        self._js = js
        self._name = name
        self._subjects = list(subjects)  # what `fold` is given (NATS wildcards allowed)
        self._apply = apply
        self._chain = ChainGuard()
        # Stream sequences of the messages that failed the chain check, and why.
        self.untrusted: dict[int, str] = {}
        self._batch = batch
        self._sub: JetStreamContext.PullSubscription | None = None
        self._consumer: str | None = None
        self._consumer_seq = 0
        self.position = 0  # the stream sequence of the last event folded in

    async def catch_up(self, at_least: int) -> None:
        """Fold every state event the stream holds now; that includes `at_least`, the stream
        sequence of the message about to be acted on."""
        empty = lost = 0
        while True:
            if self._sub is None:
                await self._restart(self.position)
            assert self._sub is not None
            if not self._sub.pending_msgs:
                try:
                    info = await self._sub.consumer_info()
                except NotFoundError:
                    # Removed after its inactive threshold (an idle worker), or by a server
                    # restart: make a new one where we are.
                    await self._restart(self.position)
                    continue
                except (TimeoutError, NatsError) as exc:
                    # Nobody answers for it: in a cluster this unreplicated consumer lives on
                    # one node, and that node is gone. A new one where we are (placed on a
                    # live node); a bus that answers nothing at all is the caller's retry.
                    lost += 1
                    if lost > _MAX_LOST_CONSUMERS:
                        message = f"the state consumer can't be reached: {exc!r}"
                        raise TransientError(message) from exc
                    log.warning("follower.consumer_lost", consumer=self._consumer, error=repr(exc))
                    await self._restart(self.position)
                    continue
                # Not before `at_least`: a consumer just made on a node whose copy of the
                # stream lags may count nothing pending yet; pull until the message is in.
                if not info.num_pending and self.position >= at_least:
                    break
            if await self._fetch():
                empty = 0
            else:
                empty += 1
                if empty >= _MAX_EMPTY_FETCHES:
                    raise TransientError("the state stream has events to read but sends none")

    async def _fetch(self) -> bool:
        """Fold what one pull brings; False if it brought nothing."""
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(self._batch, timeout=1.0)
        except (TimeoutError, NatsError) as exc:
            if not isinstance(exc, TimeoutError):
                log.debug("follower.fetch_failed", error=str(exc))
            return False
        for msg in msgs:
            try:
                meta = msg.metadata
            except Exception:
                meta = None
            if meta is None or meta.stream != STREAM_NAME or meta.consumer != self._consumer:
                # Not a delivery of our consumer (anyone who learns an inbox may publish to
                # it): dropped, never folded in.
                log.warning("follower.foreign_message", subject=msg.subject[:200])
                continue
            if meta.sequence.consumer != self._consumer_seq + 1:
                # A lost delivery (unacked consumers don't redeliver): read again from here.
                log.warning(
                    "follower.gap", expected=self._consumer_seq + 1, got=meta.sequence.consumer
                )
                await self._restart(self.position)
                return True
            self._consumer_seq = meta.sequence.consumer
            self._judge(meta.sequence.stream, msg.subject, msg.data)
            self.position = meta.sequence.stream
        return True

    def _judge(self, seq: int, subject: str, data: bytes) -> None:
        """Fold the message at `seq` if it extends the verified chain; otherwise say so."""
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        reason = self._chain.admit(body)
        if reason is not None:
            self.untrusted[seq] = reason
            position = body.get("position") if isinstance(body, dict) else None
            log.error("follower.untrusted", seq=seq, position=position, reason=reason)
            return
        if any(_matches(subject, pattern) for pattern in self._subjects):
            self._apply(seq, body)

    async def _restart(self, after: int) -> None:
        await self.close()
        config = ConsumerConfig(
            name=f"{self._name}-{uuid.uuid4().hex[:12]}",
            ack_policy=AckPolicy.NONE,
            filter_subjects=[SUBJECT_PREFIX + ">"],
            inactive_threshold=300.0,
            mem_storage=True,
            num_replicas=1,
        )
        if after:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = after + 1
        else:
            config.deliver_policy = DeliverPolicy.ALL
        info = await self._js.add_consumer(STREAM_NAME, config)
        self._consumer = info.name
        self._sub = await self._js.pull_subscribe_bind(consumer=info.name, stream=STREAM_NAME)
        self._consumer_seq = 0
        self.position = after

    async def close(self) -> None:
        """Unsubscribe (before any drain of the connection) and delete the consumer."""
        sub, consumer = self._sub, self._consumer
        self._sub = self._consumer = None
        if sub is not None:
            await sub.unsubscribe()
        if consumer is not None:
            try:
                async with asyncio.timeout(2):
                    await self._js.delete_consumer(STREAM_NAME, consumer)
            except (NotFoundError, TimeoutError):
                pass  # it expires by itself after its inactive threshold
            except Exception as exc:  # the connection may be closing: not worth failing for
                log.debug("follower.delete_failed", error=str(exc))


def _matches(subject: str, pattern: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest (one token or more)."""
    parts, wanted = subject.split("."), pattern.split(".")
    for i, part in enumerate(wanted):
        if part == ">":
            return len(parts) > i
        if i >= len(parts) or part not in ("*", parts[i]):
            return False
    return len(parts) == len(wanted)
