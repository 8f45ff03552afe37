"""nats-server SIGKILLed while the relay publishes a backlog in atomic batches, and started again
(same port, same store directory): a batch cut in the middle is stored whole or not at all, the
relay resumes where the stream says, and the stream holds every stored event once, in order,
its chain valid, each with its `Nats-Msg-Id`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import APIError

from bench.relay_throughput import fill
from domain.event_log import STREAM_NAME
from domain.service import TenancyService
from tenantry.log.batches import ATOMIC_BATCH_MAX
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer, free_port
from tests.integration.streams import assert_stream_matches_store, wait_for_stream

BACKLOG = 8 * ATOMIC_BATCH_MAX  # commands, one event each: several batches to cut into


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats_server = NatsServer(tmp_path / "nats", port=free_port()).start()
    yield nats_server
    nats_server.stop()


async def _stream_last_seq(nc: Client) -> int:
    try:
        return int((await nc.jetstream().stream_info(STREAM_NAME)).state.last_seq)
    except (APIError, NatsError, TimeoutError):
        return 0


async def test_a_batch_cut_by_a_killed_server_is_published_once_in_order(
    server: NatsServer, seeded_store: TenancyService
) -> None:
    await asyncio.to_thread(fill, seeded_store, BACKLOG)
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    watcher = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    relay = Relay(seeded_store.recorder, nc, poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        # Killed as soon as the first batch is on the stream: the relay is sending the next.
        while (at_kill := await _stream_last_seq(watcher)) < ATOMIC_BATCH_MAX:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        server.kill()
        published_at_kill = relay.published
        await asyncio.sleep(0.5)
        server.start()
        messages = await wait_for_stream(watcher.jetstream(), seeded_store.recorder, timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await watcher.close()
        await nc.close()
    # Cut in the middle of the backlog: some batches landed before the kill, not all.
    assert 0 < at_kill < len(messages), (at_kill, len(messages))
    assert published_at_kill < len(messages)
    assert len(messages) > BACKLOG
    assert_stream_matches_store(messages, seeded_store.recorder)
    # Nothing was found wrong with the stream on resuming: nothing doubled, nothing lost.
    assert relay.findings == []
