"""The relay: every stored event on the stream, in order, exactly once, chain valid; resumes
after SIGKILL; a second relay can't interleave; wakes on commit, not on its poll."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import SUBJECT_PREFIX
from domain.service import TenancyService
from tenantry.log.relay import FIRST_PAGE, Relay
from tenantry.server.nats_server import NatsServer, free_port
from tenantry.server.store import event_store_env
from tenantry.server.wakeups import listen_postgres, wake_on_save
from tenantry.settings import Settings
from tests.integration.streams import assert_stream_matches_store, read_stream, wait_for_stream


def _command(service: TenancyService, i: int) -> None:
    """A mix of commands that touch several aggregates each."""
    context = CommandContext("user:ana@example.com", str(uuid.uuid4()), "load")
    kind = i % 3
    if kind == 0:
        body: dict[str, object] = {"name": f"team-{i}", "members": ["ana@example.com"]}
        service.handle(COMMANDS["create_team"].model_validate(body), context)
    elif kind == 1:
        body = {
            "name": f"c-{i}",
            "region": "eu-west-1",
            "provider": "generic",
            "environments": ["dev", "prod"],
        }
        service.handle(COMMANDS["register_cluster"].model_validate(body), context)
    else:
        body = {"cluster": f"c-{i - 1}", "name": f"ws-{i}", "environment": "dev"}
        service.handle(COMMANDS["create_workspace"].model_validate(body), context)


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


async def _running(relay: Relay) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    return stop, task


async def test_after_n_commands_the_stream_holds_exactly_the_stored_events(
    service: TenancyService, nc: Client, js: JetStreamContext
) -> None:
    wakeup = asyncio.Event()
    service.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
    relay = Relay(service.recorder, nc, wakeup=wakeup, batch_size=7)
    stop, task = await _running(relay)
    for i in range(60):
        await asyncio.to_thread(_command, service, i)
    messages = await wait_for_stream(js, service.recorder)
    stop.set()
    await task
    assert len(messages) > 100
    assert_stream_matches_store(messages, service.recorder)


async def test_a_restarted_relay_resumes_without_skipping_or_republishing(
    service: TenancyService, nc: Client, js: JetStreamContext
) -> None:
    for round_ in range(3):
        for i in range(10):
            await asyncio.to_thread(_command, service, round_ * 10 + i)
        relay = Relay(service.recorder, nc)
        stop, task = await _running(relay)
        await wait_for_stream(js, service.recorder)
        stop.set()
        await task
    assert_stream_matches_store(await read_stream(js), service.recorder)


async def test_a_relay_whose_connection_was_closed_ends_instead_of_asking_for_ever(
    service: TenancyService, js: JetStreamContext, nats_server: NatsServer
) -> None:
    """A closed connection (not one reconnecting) never answers again: the relay's resync used
    to ask it for the stream's tail every poll interval, for ever, logging each failure."""
    own = await nats.connect(nats_server.url)
    relay = Relay(service.recorder, own, poll_interval=0.01)
    stop, task = await _running(relay)
    await wait_for_stream(js, service.recorder)  # the seeded environments
    await own.close()
    await asyncio.to_thread(_command, service, 0)  # something to publish on the closed one
    await asyncio.wait_for(task, timeout=30)
    assert not stop.is_set()


async def test_two_relays_at_once_never_interleave(
    service: TenancyService, nc: Client, js: JetStreamContext, nats_server: NatsServer
) -> None:
    other_nc = await nats.connect(nats_server.url)
    relays = [
        Relay(service.recorder, nc, batch_size=5, poll_interval=0.01),
        Relay(service.recorder, other_nc, batch_size=3, poll_interval=0.01),
    ]
    running = [await _running(relay) for relay in relays]
    for i in range(45):
        await asyncio.to_thread(_command, service, i)
    await wait_for_stream(js, service.recorder)
    for stop, task in running:
        stop.set()
        await task
    await other_nc.close()
    # Read once both have stopped: a late duplicate or a skip would be on the stream by now.
    messages = await read_stream(js)
    assert_stream_matches_store(messages, service.recorder)
    # Every event stored once, by exactly one of them: what they say they stored adds up to
    # the stream, and neither found anything on it that the store does not hold.
    assert sum(relay.published for relay in relays) == len(messages)
    assert [relay.findings for relay in relays] == [[], []]


async def test_a_commit_wakes_the_relay_before_its_poll_interval(
    service: TenancyService, nc: Client, js: JetStreamContext, store_env: dict[str, str]
) -> None:
    """With a 60 s poll the relay only publishes in time if the commit woke it: in-process
    through the service's listener (SQLite), across processes through LISTEN/NOTIFY (PostgreSQL,
    where the writer below is another application instance with no listener to the relay)."""
    wakeup = asyncio.Event()
    stop = asyncio.Event()
    reader = TenancyService(store_env)
    if store_env["PERSISTENCE_MODULE"].endswith("sqlite"):
        writer = reader
        writer.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
        listener = None
    else:
        writer = service
        listener = asyncio.create_task(listen_postgres(reader.recorder, store_env, [wakeup], stop))
    relay = Relay(reader.recorder, nc, wakeup=wakeup, poll_interval=60.0)
    task = asyncio.create_task(relay.run(stop))
    await wait_for_stream(js, reader.recorder, timeout=10)  # the seeded environments
    await asyncio.sleep(0.5)  # let the relay go idle on its 60 s wait (and LISTEN start)
    await asyncio.to_thread(_command, writer, 0)
    messages = await wait_for_stream(js, reader.recorder, timeout=10)
    stop.set()
    await task
    if listener is not None:
        await listener
    assert_stream_matches_store(messages, reader.recorder)
    reader.close()


async def test_commits_made_while_the_relay_publishes_wake_it_every_time(
    service: TenancyService, nc: Client, js: JetStreamContext
) -> None:
    """Each command is committed the moment its predecessor's event passes on the bus, while
    the relay is still publishing (awaiting the ack, its next read already done): with a 60 s
    poll, a wake-up lost there shows as an event that does not come."""
    wakeup = asyncio.Event()
    service.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
    relay = Relay(service.recorder, nc, wakeup=wakeup, poll_interval=60.0)
    stop, task = await _running(relay)
    await wait_for_stream(js, service.recorder, timeout=10)  # the seeded environments
    passing = await nc.subscribe(SUBJECT_PREFIX + ">")
    for i in range(30):
        await asyncio.to_thread(_command, service, i)
        last = service.recorder.max_notification_id()
        while json.loads((await passing.next_msg(timeout=10)).data)["position"] < last - 1:
            pass
    stop.set()
    await task
    assert_stream_matches_store(await read_stream(js), service.recorder)


async def _until_resumed(log: Path, lifetimes: int, relay: subprocess.Popen[bytes]) -> None:
    """Until the log shows `lifetimes` relays resumed (bounded: 60 s)."""
    deadline = asyncio.get_running_loop().time() + 60
    while log.read_text().count('"relay.resumed"') < lifetimes:
        assert relay.poll() is None, log.read_text()[-2000:]
        assert asyncio.get_running_loop().time() < deadline, "the relay never came up"
        await asyncio.sleep(0.02)


def _start_relay_process(
    state_dir: Path, store_env: dict[str, str], url: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TENANTRY_STATE_DIR": str(state_dir),
        "TENANTRY_NATS_URL": url,
        "TENANTRY_POLL_INTERVAL": "0.05",
        "TENANTRY_LOG_FORMAT": "json",
        # Its own: the default port may be held by anything else running on the machine.
        "TENANTRY_METRICS_PORT": str(free_port()),
    }
    if store_env["PERSISTENCE_MODULE"].endswith("postgres"):
        env["TENANTRY_DATABASE_URL"] = os.environ.get("_TENANTRY_TEST_PG_URL", "")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tenantry.cli", "serve", "relay"],
            env=env,
            stdout=out,
            stderr=out,
        )


async def test_the_relay_killed_at_random_moments_during_a_load_loses_and_doubles_nothing(
    tmp_path: Path, js: JetStreamContext, nats_server: NatsServer
) -> None:
    state_dir = tmp_path / "relay-state"
    store_env = event_store_env(Settings(state_dir=state_dir))
    service = TenancyService(store_env)
    service.seed_default_environments()
    stop_load = threading.Event()

    def load() -> None:
        i = 0
        while not stop_load.is_set():
            _command(service, i)
            i += 1
            stop_load.wait(0.004)  # a steady stream of commands, not one burst

    writer = threading.Thread(target=load)
    writer.start()
    rng = random.Random(20261129)
    log = tmp_path / "relay.log"
    kills = 6
    try:
        for lifetime in range(kills):
            relay = _start_relay_process(state_dir, store_env, nats_server.url, log)
            # Up first (start-up takes seconds on a loaded machine), then killed at a random
            # moment while the steady load keeps it publishing.
            await _until_resumed(log, lifetime + 1, relay)
            await asyncio.sleep(rng.uniform(0.0, 0.8))
            relay.send_signal(signal.SIGKILL)
            relay.wait()
    finally:
        stop_load.set()
        writer.join()
    relay = _start_relay_process(state_dir, store_env, nats_server.url, log)
    try:
        # Something only this last relay can publish, so it is up before we stop it.
        for i in range(3):
            _command(service, 1_000_000 + i * 3)
        messages = await wait_for_stream(js, service.recorder, timeout=60)
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(20) == 0, log.read_text()[-3000:]
    assert_stream_matches_store(messages, service.recorder)
    service.close()
    # Every lifetime resumed from the stream, and they resumed from different points: each
    # was killed while the load went on, not all before publishing anything.
    resumed = [line for line in log.read_text().splitlines() if '"relay.resumed"' in line]
    assert len(resumed) == kills + 1
    positions = {line.split('"position": ')[1].split(",")[0] for line in resumed}
    assert len(positions) >= 3, positions


async def test_a_backlog_is_published_first_in_a_small_page_then_in_growing_ones(
    service: TenancyService, nc: Client, js: JetStreamContext
) -> None:
    """A relay starting on a backlog reads a small page first, so that the server is storing it
    while the next, larger one is read: the stream's first atomic batch is that small page's
    events, and each next batch is larger, up to a whole page (about 1,000 events)."""
    for start in range(0, 1600, 100):  # 3,200 rows: a team and its command record each
        service.handle_batch(
            [
                (
                    COMMANDS["create_team"].model_validate({"name": f"t-{i}", "members": []}),
                    CommandContext("user:ana@example.com", str(uuid.uuid4()), "backlog"),
                )
                for i in range(start, start + 100)
            ]
        )
    relay = Relay(service.recorder, nc)  # the production page size: 2,000 rows
    stop, task = await _running(relay)
    messages = await wait_for_stream(js, service.recorder)
    stop.set()
    await task
    assert_stream_matches_store(messages, service.recorder)
    sizes: list[int] = []
    batch = None
    for _, headers, _ in messages:
        if sizes and headers.get("Nats-Batch-Id") == batch:
            sizes[-1] += 1
        else:
            batch = headers.get("Nats-Batch-Id")
            sizes.append(1)
    assert sizes[0] <= FIRST_PAGE // 2 + 1, sizes  # about half a page's rows are events
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3] <= 1000, sizes
