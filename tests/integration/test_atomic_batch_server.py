"""What nats-server (the packaged 2.15) enforces on the relay's atomic batches: why the relay
sends the next batch only once the one before it landed (`Relay._publish`).

A batch can be conditional on the stream's last sequence only: `Nats-Expected-Last-Msg-Id` (the
condition that names *whose* message is last) is refused in an atomic batch. A batch sent right
behind another, expecting the sequence that one ends at, lands when that one does and is refused
when that one is refused for a stale sequence, but lands after any other writer's messages that
bring the stream to that sequence: only the ack of the batch before says the messages there
are the relay's."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError

from tenantry.log.batches import Chained, Pipeline, _batch, atomic_batches

pytestmark = pytest.mark.asyncio


def _events(first: int, count: int) -> list[Chained]:
    return [Chained(f"probe.{n}", f"event {n}".encode(), n) for n in range(first, first + count)]


async def _stream(nc: Client) -> None:
    config = StreamConfig(
        name="PROBE", subjects=["probe.>"], storage=StorageType.FILE, allow_atomic=True
    )
    await nc.jetstream().add_stream(config)


async def _outcome(ack: asyncio.Future[int]) -> int | APIError:
    try:
        return await asyncio.wait_for(ack, 10)
    except APIError as exc:
        return exc


async def _last_seq(nc: Client) -> int:
    return int((await nc.jetstream().stream_info("PROBE")).state.last_seq)


async def test_an_atomic_batch_cannot_expect_the_last_message_id(nc: Client) -> None:
    await _stream(nc)
    pipeline = Pipeline(nc)
    assert await _outcome(await pipeline.send(atomic_batches(_events(1, 3), 0)[0])) == 3
    for expected_id in ("tenantry:3", "tenantry:2"):  # the true last id, and a wrong one
        messages = [
            (
                event.subject,
                event.payload,
                {
                    "Nats-Msg-Id": f"tenantry:{event.position}",
                    "Nats-Batch-Id": f"expects-{expected_id}",
                    "Nats-Batch-Sequence": str(n),
                },
            )
            for n, event in enumerate(_events(4, 3), 1)
        ]
        messages[0][2]["Nats-Expected-Last-Msg-Id"] = expected_id
        messages[-1][2]["Nats-Batch-Commit"] = "1"
        refused = await _outcome(await pipeline.send(_batch(messages)))
        assert isinstance(refused, APIError)
        assert refused.err_code == 10177  # "atomic publish unsupported header used"
    # A single conditional message can (the relay's way on a server without atomic batches).
    single = _batch([("probe.4", b"event 4", {"Nats-Expected-Last-Msg-Id": "tenantry:3"})])
    assert await _outcome(await pipeline.send(single)) == 1
    assert await _last_seq(nc) == 4


async def test_a_batch_sent_behind_another_lands_or_is_refused_with_it(nc: Client) -> None:
    await _stream(nc)
    pipeline = Pipeline(nc)
    # Both in flight at once, the second expecting the sequence the first ends at: both land.
    first, second = atomic_batches(_events(1, 6), 0)[0], atomic_batches(_events(7, 4), 6)[0]
    acks = [await pipeline.send(first), await pipeline.send(second)]
    assert [await _outcome(ack) for ack in acks] == [6, 4]
    # The first expecting a stale sequence: refused, and the second with it.
    stale, behind = atomic_batches(_events(11, 3), 9)[0], atomic_batches(_events(14, 3), 12)[0]
    acks = [await pipeline.send(stale), await pipeline.send(behind)]
    outcomes = [await _outcome(ack) for ack in acks]
    assert all(isinstance(o, APIError) and o.err_code == 10071 for o in outcomes), outcomes
    assert await _last_seq(nc) == 10


async def test_a_batch_sent_behind_a_refused_one_lands_after_another_writers_messages(
    nc: Client,
) -> None:
    await _stream(nc)
    pipeline = Pipeline(nc)
    assert await _outcome(await pipeline.send(atomic_batches(_events(1, 2), 0)[0])) == 2
    # Another writer takes the stream to the sequence the relay's next batch would end at.
    other = await pipeline.send(atomic_batches(_events(100, 3), 2)[0])
    assert await _outcome(other) == 3
    refused, behind = atomic_batches(_events(3, 3), 2)[0], atomic_batches(_events(6, 2), 5)[0]
    acks = [await pipeline.send(refused), await pipeline.send(behind)]
    outcome_refused, outcome_behind = [await _outcome(ack) for ack in acks]
    assert isinstance(outcome_refused, APIError)
    assert outcome_behind == 2  # landed, after messages that are not its chain
    message = await nc.jetstream().get_msg("PROBE", seq=5)
    assert message.data == b"event 102"
