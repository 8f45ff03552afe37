"""`tenantry audit export`: a contiguous run of the TENANTRY_EVENTS stream as JSON lines, each
line the message body exactly as published (so its hash chain verifies anywhere), optionally
ended by a signed checkpoint (`tenantry.audit.checkpoint`)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from domain.event_log import STREAM_NAME, SUBJECT_PREFIX, ZERO_HASH, published_bytes, verify_link
from tenantry.audit.checkpoint import ChainSpan
from tenantry.audit.tail import first_seq_at_position, reader_name

Bound = int | datetime | None


async def stream_messages(
    nc: Client,
    since_position: int | None = None,
    *,
    through: int | None = None,
    stall_timeout: float = 10.0,
) -> AsyncGenerator[tuple[int, bytes], None]:
    """(stream sequence, the published bytes) of every message on the stream as it stands
    now, in order, from the first event at or after `since_position`. Ends at the last
    message there is (the stream's last sequence may be a deleted message); with `through`,
    not before the event at that store position, waiting for the relay to publish it (a
    TimeoutError when nothing comes for `stall_timeout` seconds)."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        if through is not None:
            raise TimeoutError(f"the stream does not exist, so not position {through}") from None
        return
    last_seq = info.state.last_seq
    start = info.state.first_seq
    if not last_seq or not info.state.messages:
        if through is None:
            return
        start = last_seq + 1  # what comes next
    elif since_position is not None:
        found = await first_seq_at_position(js, info, since_position)
        if found is None and through is None:
            return
        start = last_seq + 1 if found is None else found
    sub = await js.subscribe(
        SUBJECT_PREFIX + ">",
        stream=STREAM_NAME,
        ordered_consumer=True,
        config=ConsumerConfig(
            name=reader_name(),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
        ),
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=stall_timeout)
            except NatsTimeoutError:
                if through is not None:
                    raise TimeoutError(
                        f"the stream has not reached position {through} "
                        f"(nothing new for {stall_timeout:g} s: is the relay running?)"
                    ) from None
                raise TimeoutError(
                    f"the stream stopped delivering before sequence {last_seq}"
                ) from None
            seq = msg.metadata.sequence.stream
            yield seq, msg.data
            if (seq >= last_seq or not msg.metadata.num_pending) and _reached(msg.data, through):
                return
    finally:
        await sub.unsubscribe()


def _reached(data: bytes, through: int | None) -> bool:
    """Whether a message is at or past store position `through` (any, without one)."""
    if through is None:
        return True
    body = _parsed(data)
    position = None if body is None else body.get("position")
    return isinstance(position, int) and position >= through


def _parsed(data: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@dataclass
class Exported:
    """The span written, and the messages left out because they are not on the chain."""

    span: ChainSpan = field(default_factory=ChainSpan)
    skipped: list[tuple[int, int | None, str | None]] = field(default_factory=list)
    chain_hashes: set[str] = field(default_factory=set)

    @property
    def broken(self) -> list[str]:
        """The left-out messages that are not copies of an event the export holds: what a
        signature must not vouch for."""
        return [
            f"seq {seq}" + (f" (position {position})" if position is not None else "")
            for seq, position, digest in self.skipped
            if digest not in self.chain_hashes
        ]


async def export(
    nc: Client,
    write: Callable[[bytes], object],
    *,
    since: Bound = None,
    until: Bound = None,
    through: int | None = None,
    stall_timeout: float = 10.0,
) -> Exported:
    """Write each event from `since` (a position or a moment, inclusive) to `until` (exclusive)
    as one line; return what was written and what was left out. With `through`, a store
    position known to hold an event (a review's closing, read from the views, which may be
    ahead of the stream), the export waits for the stream to reach it rather than end without.

    The run is contiguous, so that its chain verifies: it begins at the first event at or after
    `since` and ends before the first event at or after `until`, in stream order (an event
    stamped earlier than one before it, by a clock that disagrees, stays in). A message that
    does not extend the chain written so far (forged, altered, not the canonical bytes, or a
    copy left on the stream before a heal) is left out and listed: from the start of the stream
    the chain begins at zeros; from `since` at the first event's own `prev_hash`."""
    result = Exported()
    # aclosing: a `break` below unsubscribes now, not when the generator is collected (after
    # the connection closed, with a traceback).
    messages = stream_messages(
        nc,
        since if isinstance(since, int) else None,
        through=through,
        stall_timeout=stall_timeout,
    )
    async with aclosing(messages):
        await _export_run(messages, write, since, until, result)
    return result


async def _export_run(
    messages: AsyncIterator[tuple[int, bytes]],
    write: Callable[[bytes], object],
    since: Bound,
    until: Bound,
    result: Exported,
) -> None:
    waiting_for = since if isinstance(since, datetime) else None
    head: str | None = ZERO_HASH if since is None else None
    async for seq, data in messages:
        body = _parsed(data)
        if body is None or not isinstance(body.get("position"), int):
            result.skipped.append((seq, None, None))
            continue
        if waiting_for is not None:
            if _occurred(body) < waiting_for:
                continue
            waiting_for = None
        if isinstance(until, int) and body["position"] >= until:
            break
        if isinstance(until, datetime) and _occurred(body) >= until:
            break
        if head is None:
            head = str(body.get("prev_hash"))
        if not verify_link(body, head) or data != published_bytes(body):
            result.skipped.append((seq, body["position"], str(body.get("hash"))))
            continue
        write(data + b"\n")
        head = body["hash"]
        result.chain_hashes.add(body["hash"])
        result.span = result.span.then(body)


def _occurred(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(body["occurred_at"]))
