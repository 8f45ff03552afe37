"""`tenantry audit tail`: the event stream for a person (one line per event) or as JSON lines.

Any JetStream client can do the same: this is a plain ordered consumer on TENANTRY_EVENTS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamInfo
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from domain.event_log import STREAM_NAME, SUBJECT_PREFIX


def parse_since(value: str | None) -> int | datetime | None:
    """A position (`1234`) or an RFC 3339 time (`2026-03-01T00:00:00Z`)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def reader_name() -> str:
    """A name of its own for a reader's consumer. Readers may only create consumers by name:
    the nameless create request takes a name from its body, and so could rewrite a worker's
    durable (see deploy/nats-accounts.conf)."""
    return f"tenantry-reader-{uuid.uuid4().hex[:16]}"


def subject_for(type_filter: str | None) -> str:
    """`workspace.created` -> `tenantry.evt.workspace.created`; `workspace.*` works too."""
    return SUBJECT_PREFIX + (type_filter or ">")


def human_line(body: dict[str, Any]) -> str:
    data = json.dumps(body["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (
        f"#{body['position']:<6} {body['occurred_at']}  {body['type']:<32} "
        f"{body['fqn']:<28} by {body['actor']}  {data}"
    )


async def first_seq_at_position(
    js: JetStreamContext, info: StreamInfo, position: int
) -> int | None:
    """Stream sequence of the first event at or after `position` in the stream as `info`
    found it (both only ever increase, so a binary search finds it in log2(n) reads)."""
    low, high = info.state.first_seq, info.state.last_seq
    if not high:
        return None
    found = None
    while low <= high:
        mid = (low + high) // 2
        msg = await js.get_msg(STREAM_NAME, seq=mid)
        assert msg.data is not None
        if json.loads(msg.data)["position"] >= position:
            found, high = mid, mid - 1
        else:
            low = mid + 1
    return found


async def tail(
    nc: Client,
    emit: Callable[[dict[str, Any]], None],
    *,
    follow: bool = False,
    since: int | datetime | None = None,
    type_filter: str | None = None,
    fqn: str | None = None,
    idle_timeout: float = 1.0,
) -> int:
    """Emit matching events in stream order; without `follow`, stop once caught up."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        return 0  # nothing was ever published
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    if isinstance(since, int):
        seq = await first_seq_at_position(js, info, since)
        if seq is None and not follow:
            return 0
        if seq is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    elif isinstance(since, datetime):
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.astimezone(UTC)
        )
    if not info.state.last_seq and not follow:
        return 0
    config.name = reader_name()
    sub = await js.subscribe(
        subject_for(type_filter), stream=STREAM_NAME, ordered_consumer=True, config=config
    )
    emitted = 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout)
            except NatsTimeoutError:
                if follow:
                    continue
                return emitted  # nothing matching arrived for a while: the filter is caught up
            try:
                meta = msg.metadata
                body = json.loads(msg.data)
            except (ValueError, NatsError):  # not an event of the stream: skipped
                continue
            if fqn is None or body.get("fqn") == fqn:
                emit(body)
                emitted += 1
            if not follow and meta.num_pending == 0:
                return emitted
    finally:
        await sub.unsubscribe()
