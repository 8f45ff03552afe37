"""`tenantry audit export`: a contiguous run of the TENANTRY_EVENTS stream as JSON lines, each
line the message body exactly as published (so its hash chain verifies anywhere), optionally
ended by a signed checkpoint (`tenantry.audit_checkpoint`)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from domain.event_log import STREAM_NAME, SUBJECT_PREFIX
from tenantry.audit_checkpoint import ChainSpan
from tenantry.audit_tail import first_seq_at_position, reader_name

Bound = int | datetime | None


async def stream_bodies(
    nc: Client, since_position: int | None = None, *, stall_timeout: float = 10.0
) -> AsyncGenerator[tuple[bytes, dict[str, Any]], None]:
    """(the published bytes, the parsed body) of every message on the stream as it stands now,
    in order, from the first event at or after `since_position`."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        return
    last_seq = info.state.last_seq
    if not last_seq:
        return
    start = info.state.first_seq
    if since_position is not None:
        found = await first_seq_at_position(js, info, since_position)
        if found is None:
            return
        start = found
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
                raise TimeoutError(
                    f"the stream stopped delivering before sequence {last_seq}"
                ) from None
            yield msg.data, json.loads(msg.data)
            if msg.metadata.sequence.stream >= last_seq:
                return
    finally:
        await sub.unsubscribe()


async def export(
    nc: Client, write: Callable[[bytes], object], *, since: Bound = None, until: Bound = None
) -> ChainSpan:
    """Write each event from `since` (a position or a moment, inclusive) to `until` (exclusive)
    as one line; return the span written.

    The run is contiguous, so that its chain verifies: it begins at the first event at or after
    `since` and ends before the first event at or after `until`, in stream order (an event
    stamped earlier than one before it, by a clock that disagrees, stays in)."""
    span = ChainSpan()
    waiting_for = since if isinstance(since, datetime) else None
    # Closed here, not when collected: its subscription is ended while the connection is open
    # (collected later, after the connection closed, it ended in a ConnectionClosedError).
    bodies = stream_bodies(nc, since if isinstance(since, int) else None)
    async with aclosing(bodies):
        async for data, body in bodies:
            if waiting_for is not None:
                if _occurred(body) < waiting_for:
                    continue
                waiting_for = None
            if isinstance(until, int) and body["position"] >= until:
                break
            if isinstance(until, datetime) and _occurred(body) >= until:
                break
            write(data + b"\n")
            span = span.then(body)
    return span


def _occurred(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(body["occurred_at"]))
