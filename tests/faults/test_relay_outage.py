"""The relay when nats-server dies under it: acks that will never come are not waited for, and an
outage longer than the ack timeout is ridden out, never ending the relay.

The server is frozen (SIGSTOP) so that the relay's publishes are surely out and unacknowledged
when it is killed, or still away when the relay gives up on its acks; then it is killed and
started again, or thawed (SIGCONT)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import structlog
from nats.aio.client import Client

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.service import TenancyService
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer, free_port
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.faults.processes import wait_until
from tests.integration.streams import assert_stream_matches_store, read_stream, wait_for_stream


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats_server = NatsServer(tmp_path / "nats", port=free_port()).start()
    yield nats_server
    if nats_server.process is not None and nats_server.process.poll() is None:
        nats_server.process.send_signal(signal.SIGCONT)
    nats_server.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TenancyService]:
    svc = TenancyService(event_store_env(Settings(state_dir=tmp_path / "state")))
    svc.seed_default_environments()
    yield svc
    svc.close()


@pytest.fixture
async def relay_nc(server: NatsServer) -> AsyncIterator[Client]:
    """The relay's connection, reconnecting as `tenantry serve relay`'s does."""
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield nc
    await nc.close()


def _write(service: TenancyService, count: int) -> None:
    items = [
        (
            COMMANDS["create_team"].model_validate({"name": f"team-{uuid.uuid4().hex[:12]}"}),
            CommandContext("user:ana@example.com", str(uuid.uuid4()), "outage"),
        )
        for _ in range(count)
    ]
    for start in range(0, count, 64):
        service.handle_batch(items[start : start + 64])


async def _stream_complete(server: NatsServer, service: TenancyService, within: float) -> None:
    nc = await nats.connect(server.url)
    try:
        messages = await wait_for_stream(nc.jetstream(), service.recorder, timeout=within)
        assert_stream_matches_store(messages, service.recorder)
    finally:
        await nc.close()


async def test_acks_lost_with_a_killed_server_are_not_waited_for(
    server: NatsServer, service: TenancyService, relay_nc: Client
) -> None:
    relay = Relay(service.recorder, relay_nc, poll_interval=0.05)  # the 30 s ack timeout
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await _stream_complete(server, service, within=10)
        assert server.process is not None
        published = relay.position
        server.process.send_signal(signal.SIGSTOP)
        await asyncio.to_thread(_write, service, 300)

        async def sent() -> bool:
            return relay.position > published

        # Sent, and waiting for acks the frozen server will never send.
        await wait_until(sent, 10, "the relay sent more")
        server.kill()
        server.start()
        restarted = time.monotonic()
        # The relay sees its connection come back and re-reads the stream's tail, well before
        # its 30 s ack timeout.
        await _stream_complete(server, service, within=10)
        assert time.monotonic() - restarted < 10
        assert not running.done()
    finally:
        stop.set()
        await running


async def test_an_outage_longer_than_the_ack_timeout_does_not_end_the_relay(
    server: NatsServer, service: TenancyService, relay_nc: Client
) -> None:
    relay = Relay(service.recorder, relay_nc, poll_interval=0.05, ack_timeout=0.5)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await _stream_complete(server, service, within=10)
        assert server.process is not None
        with structlog.testing.capture_logs() as logs:
            server.process.send_signal(signal.SIGSTOP)
            await asyncio.to_thread(_write, service, 50)

            async def failed_to_resync() -> bool:
                resync_failed = any(entry["event"] == "relay.resync_failed" for entry in logs)
                return resync_failed or running.done()

            # Its acks timed out, and so did a read of the stream's tail: the server is away.
            await wait_until(failed_to_resync, 15, "a resync that failed")
            assert not running.done(), running.exception()
            server.process.send_signal(signal.SIGCONT)
            await _stream_complete(server, service, within=15)
        assert not running.done()
        events = [entry["event"] for entry in logs]
        assert events.index("relay.resync") < events.index("relay.resync_failed")
    finally:
        stop.set()
        await running
    assert_stream_matches_store(await read_stream(relay_nc.jetstream()), service.recorder)
