"""The relay handed the rows this process just committed (`tenantry.log.recent`): it publishes
them without reading them back, and where they are not the next rows of the store (another
writer's commit in between) it reads the store as before: same bytes, same order, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from eventsourcing.persistence import Notification
from nats.aio.client import Client
from nats.js import JetStreamContext

from domain.event_log import ZERO_HASH, read_batch
from domain.service import TenancyService
from tenantry.log.recent import RecentCommits
from tenantry.log.relay import Relay
from tenantry.server.wakeups import wake_on_save
from tests.integration.streams import assert_stream_matches_store, wait_for_stream
from tests.integration.teams import create_team


def test_the_rows_a_commit_hands_over_read_as_the_store_reads_them(
    service: TenancyService,
) -> None:
    handed: list[Sequence[Notification]] = []
    service.listeners.append(handed.append)
    before = service.recorder.max_notification_id() or 0
    for i in range(3):
        create_team(service, f"team-{i}")
    recent = RecentCommits()
    for rows in handed:
        recent.hand(rows)
    taken = recent.take(before, 1000)
    assert taken is not None
    from_rows = read_batch(taken, before, ZERO_HASH, 1000)
    from_store = read_batch(service.recorder, before, ZERO_HASH, 1000)
    assert from_store.read == sum(len(rows) for rows in handed) > 3
    assert from_rows == from_store
    assert recent.take(from_store.position, 1000) is None  # all taken


@dataclass
class _HandedRelay:
    relay: Relay
    recent: RecentCommits  # what commits hand the relay (nothing until a listener is added)
    wakeup: asyncio.Event
    js: JetStreamContext


@asynccontextmanager
async def _running_relay(service: TenancyService, nc: Client) -> AsyncIterator[_HandedRelay]:
    """A relay taking handed rows from `recent`, running, with the seeded environments on the
    stream; stopped on leaving. A 60 s poll: every later event comes from a wake-up."""
    recent = RecentCommits()
    wakeup = asyncio.Event()
    relay = Relay(service.recorder, nc, wakeup=wakeup, recent=recent, poll_interval=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    js = nc.jetstream()
    try:
        await wait_for_stream(js, service.recorder, timeout=10)  # the seeded environments
        yield _HandedRelay(relay, recent, wakeup, js)
    finally:
        stop.set()
        await task


async def test_a_relay_handed_commits_interleaved_with_another_writers_publishes_the_store(
    service: TenancyService, store_env: dict[str, str], nc: Client
) -> None:
    """`service` hands its commits to the relay; `other` (a second application on the same
    store, as another process would be) hands nothing, so the rows handed after its commits
    don't follow the relay's position and the store is read. A 60 s poll: every event comes
    from a wake-up. The last command is `service`'s, whose wake-up finds the other's rows."""
    other = TenancyService(store_env)
    async with _running_relay(service, nc) as r:
        service.listeners.append(wake_on_save(asyncio.get_running_loop(), r.wakeup, r.recent))
        for i in range(40):
            writer = other if i % 5 == 2 else service
            await asyncio.to_thread(create_team, writer, f"team-{i}")
        messages = await wait_for_stream(r.js, service.recorder, timeout=10)
    other.close()
    assert_stream_matches_store(messages, service.recorder)
    assert r.relay.findings == []


async def test_a_relay_that_published_only_handed_rows_still_publishes_those_held_after_a_gap(
    service: TenancyService, store_env: dict[str, str], nc: Client
) -> None:
    """After a page made only of handed rows the relay waits for the next wake-up instead of
    reading the store, unless rows handed over are still held: here `service`'s second commit
    is held behind `other`'s (a gap), all three committed before one wake-up. A 60 s poll:
    waiting would leave the last two events off the stream."""
    other = TenancyService(store_env)
    async with _running_relay(service, nc) as r:
        service.listeners.append(r.recent.hand)  # handed, but no wake-up until all three are in
        await asyncio.to_thread(create_team, service, "team-1")
        await asyncio.to_thread(create_team, other, "team-2")
        await asyncio.to_thread(create_team, service, "team-3")
        r.wakeup.set()
        messages = await wait_for_stream(r.js, service.recorder, timeout=10)
    other.close()
    assert_stream_matches_store(messages, service.recorder)
    assert r.relay.findings == []
