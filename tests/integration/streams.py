"""Reading the TENANTRY_EVENTS stream back and checking it against the store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from eventsourcing.persistence import ApplicationRecorder
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from domain.event_log import INTERNAL_TOPICS, STREAM_NAME, ZERO_HASH, chained_body, subject_of
from workers.chain import ChainGuard


async def read_stream(js: JetStreamContext) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(subject, headers, body) of every message, in stream order."""
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM_NAME, seq=seq)
        assert msg.data is not None
        out.append((msg.subject, dict(msg.headers or {}), json.loads(msg.data)))
    return out


def expected_bodies(recorder: ApplicationRecorder) -> list[dict[str, Any]]:
    """What the stream must hold: every non-internal stored event, chained from zero."""
    bodies = []
    prev_hash = ZERO_HASH
    for notification in recorder.select_notifications(None, 1_000_000):
        if notification.topic in INTERNAL_TOPICS:
            continue
        body = chained_body(notification, prev_hash)
        bodies.append(body)
        prev_hash = body["hash"]
    return bodies


async def wait_for_stream(
    js: JetStreamContext, recorder: ApplicationRecorder, timeout: float = 30.0
) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """Until the stream's last position is the store's last published one (or the deadline)."""
    want = expected_bodies(recorder)
    last = want[-1]["position"] if want else 0
    deadline = time.monotonic() + timeout
    problem = ""
    while True:
        try:
            info = await js.stream_info(STREAM_NAME)
            if info.state.last_seq:
                tail = await js.get_msg(STREAM_NAME, seq=info.state.last_seq)
                assert tail.data is not None
                if json.loads(tail.data)["position"] >= last:
                    return await read_stream(js)
        except (APIError, TimeoutError) as exc:
            # Not made yet, or JetStream not answering yet (a cluster electing its leaders).
            problem = f" (last: {exc!r})"
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream did not reach position {last} in {timeout}s{problem}")
        await asyncio.sleep(0.02)


def assert_stream_matches_store(
    messages: list[tuple[str, dict[str, str], dict[str, Any]]], recorder: ApplicationRecorder
) -> None:
    """Exactly the stored events, once each, in store order, with a valid chain from zero."""
    want = expected_bodies(recorder)
    bodies = [body for _, _, body in messages]
    positions = [b["position"] for b in bodies]
    assert positions == sorted(set(positions)), "positions must strictly increase, no repeats"
    assert [b["position"] for b in want] == positions
    assert bodies == want
    prev_hash = ZERO_HASH
    for subject, headers, body in messages:
        assert body["prev_hash"] == prev_hash
        prev_hash = body["hash"]
        assert subject == subject_of(body)
        assert headers["Nats-Msg-Id"] == f"tenantry:{body['position']}"


async def raw_messages(js: JetStreamContext) -> list[tuple[int, str, dict[str, str], bytes]]:
    """(seq, subject, headers, bytes) of every message still on the stream (deleted and
    purged sequences are skipped), in stream order."""
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        return []
    out = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        try:
            msg = await js.get_msg(STREAM_NAME, seq=seq)
        except NotFoundError:
            continue
        assert msg.data is not None
        out.append((seq, msg.subject or "", dict(msg.headers or {}), msg.data))
    return out


async def chain_on_stream(js: JetStreamContext) -> list[tuple[int, str, dict[str, str], bytes]]:
    """The messages a consumer believes: read in stream order, each one that extends the
    hash chain verified so far (from zeros), as the workers read it (`workers.chain`)."""
    guard = ChainGuard()
    return [m for m in await raw_messages(js) if guard.admit(json.loads(m[3])) is None]


async def wait_for_chain(
    js: JetStreamContext, recorder: ApplicationRecorder, timeout: float = 30.0
) -> list[tuple[int, str, dict[str, str], bytes]]:
    """Until the chain a consumer believes holds every stored event (or the deadline)."""
    want = [b["position"] for b in expected_bodies(recorder)]
    deadline = time.monotonic() + timeout
    while True:
        chain = await chain_on_stream(js)
        if [json.loads(m[3])["position"] for m in chain] == want:
            return chain
        if time.monotonic() > deadline:
            got = [json.loads(m[3])["position"] for m in chain]
            raise TimeoutError(f"the stream's chain holds {got[-5:]}, not up to {want[-5:]}")
        await asyncio.sleep(0.1)
