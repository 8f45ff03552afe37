"""The command service (`tenantry serve command`, a real process) SIGKILLed at random moments
while a few hundred concurrent clients send commands, over SQLite and over PostgreSQL.

Each client gives its command its own `Tenantry-Command-Id` and sends it again with the same id
until it is answered, as `tenantry.Client` does. Shown: every command acknowledged before a kill
is in the store right after that kill; every command settles exactly once (one record per id,
one created aggregate per command, its events once); and a relay run afterwards puts exactly the
stored events on the stream with a valid chain."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from domain.command_record import CommandRecord
from domain.service import TenancyService
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer
from tenantry.server.store import event_store_env, postgres_env
from tenantry.settings import Settings
from tests.faults.exactly_once import check_stored, command_records, events_by_command
from tests.faults.processes import (
    Served,
    request_until_answered,
    serve_env,
    stop_all,
    wait_for_commands,
)
from tests.integration.streams import assert_stream_matches_store, wait_for_stream

COMMANDS = 320
CLIENTS = 32  # requests in flight at once
KILLS = 3
ACTOR = "user:ana@example.com"


@dataclass(frozen=True)
class Sent:
    name: str
    body: dict[str, Any]
    command_id: str
    creates: str  # the event type that creates the command's aggregate


def _load(count: int) -> list[Sent]:
    """Creations of four kinds; a cluster also links `dev` in the same transaction, so those
    contend on one aggregate and are saved one by one, the others in groups."""
    sent = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            name, creates = "create_team", "team.created"
            body: dict[str, Any] = {"name": f"team-{i}", "members": [f"u{i}@example.com"]}
        elif kind == 1:
            name, creates = "create_environment", "environment.created"
            body = {"name": f"env-{i}", "optimize_for": "availability"}
        elif kind == 2:
            name, creates = "register_storage_integration", "storage_integration.registered"
            body = {"name": f"si-{i}", "provider": "local", "storage_root": f"file:///d/si-{i}"}
        else:
            name, creates = "register_cluster", "cluster.registered"
            body = {
                "name": f"cl-{i}",
                "region": "eu-west-1",
                "provider": "generic",
                "environments": ["dev"],
            }
        sent.append(Sent(name, body, f"load-{i}-{uuid.uuid4().hex[:8]}", creates))
    return sent


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store_env(database_url: str | None, tmp_path: Path) -> dict[str, str]:
    if database_url is None:
        return event_store_env(Settings(state_dir=tmp_path / "state"))
    return postgres_env(database_url)


@pytest.fixture
def store(store_env: dict[str, str]) -> Iterator[TenancyService]:
    """The store as the test reads it, directly (not through the service under test)."""
    service = TenancyService(store_env)
    yield service
    service.close()


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()


@dataclass
class Settled:
    answer: dict[str, Any]
    sends: int  # how many times it was sent


async def _send(nc: Client, sent: Sent, slots: asyncio.Semaphore) -> Settled:
    headers = {"Tenantry-Command-Id": sent.command_id, "Tenantry-Actor": ACTOR}
    async with slots:
        answer, sends = await request_until_answered(
            nc, f"tenantry.cmd.{sent.name}", sent.body, headers, within=60, timeout=2.0
        )
    return Settled(answer, sends)


async def test_killed_during_a_load_it_loses_nothing_acknowledged_and_does_nothing_twice(
    database_url: str | None,
    store: TenancyService,
    client: Client,
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    load = _load(COMMANDS)
    command = Served(
        "command", serve_env(tmp_path / "state", nats_server.url, database_url), tmp_path / "c.log"
    ).start()
    try:
        await wait_for_commands(client)
        slots = asyncio.Semaphore(CLIENTS)
        tasks = {s.command_id: asyncio.create_task(_send(client, s, slots)) for s in load}
        acked: dict[str, dict[str, Any]] = {}

        def collect() -> None:
            for command_id, task in tasks.items():
                if task.done() and command_id not in acked and task.result().answer["ok"]:
                    acked[command_id] = task.result().answer

        rng = random.Random()
        seed = rng.randrange(2**32)
        rng.seed(seed)
        # Each kill comes a random number of answers after the service (re)started, so it
        # lands while that process is handling the load, plus a random delay so it lands at
        # any moment of a batch.
        kills = []
        for _ in range(KILLS):
            mark = sum(t.done() for t in tasks.values()) + rng.randint(
                COMMANDS // 10, COMMANDS // 5
            )
            deadline = time.monotonic() + 60
            while sum(t.done() for t in tasks.values()) < mark:
                assert command.alive(), command.tail()
                assert time.monotonic() < deadline, f"stuck below {mark} answers"
                await asyncio.sleep(0.002)
            await asyncio.sleep(rng.uniform(0, 0.05))
            collect()
            before = dict(acked)
            command.kill()
            in_flight = sum(not t.done() for t in tasks.values())
            kills.append((len(before), in_flight))
            # Acknowledged means stored: checked while nothing runs that could write it late.
            await asyncio.to_thread(check_stored, store, before)
            command.start()
        settled = await asyncio.gather(*tasks.values())
    finally:
        stop_all([command])
    collect()

    # Every command was answered, and with success: a command whose first send was applied
    # but not answered was answered on a later send as a replay of the first answer.
    answers = {s.command_id: r.answer for s, r in zip(load, settled, strict=True)}
    refused = {cid: a for cid, a in answers.items() if not a["ok"]}
    assert not refused, list(refused.items())[:5]
    replayed = sum(a["replayed"] for a in answers.values())
    resent = sum(r.sends > 1 for r in settled)
    assert all(in_flight > 0 for _, in_flight in kills), kills  # each kill was mid-load
    assert command.starts == KILLS + 1
    assert len(command.events("command_service.started")) == KILLS + 1, command.tail()

    # Exactly once: one record per command id, one created aggregate per command, and the
    # events of each command stored once, as its (first) answer listed them.
    records = command_records(store)
    assert set(records) == {CommandRecord.create_id(s.command_id) for s in load}
    assert len(records) == COMMANDS
    by_command = events_by_command(store)
    for s in load:
        assert by_command.pop(s.command_id) == answers[s.command_id]["events"], s
        assert answers[s.command_id]["events"].count(s.creates) == 1
    assert set(by_command) == {"seed:default-environments"}  # nothing else was written
    created = Counter(t for types in (answers[s.command_id]["events"] for s in load) for t in types)
    assert created == Counter(
        {
            **Counter(s.creates for s in load),
            "environment.cluster_linked": COMMANDS // 4,
        }
    )
    assert len({a["aggregate_id"] for a in answers.values()}) == COMMANDS
    check_stored(store, answers)

    # The stream afterwards: exactly the stored events, once each, in order, chain valid.
    nc = await nats.connect(nats_server.url)
    relay = Relay(store.recorder, nc, poll_interval=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        messages = await wait_for_stream(nc.jetstream(), store.recorder, timeout=60)
    finally:
        stop.set()
        await running
        await nc.close()
    assert_stream_matches_store(messages, store.recorder)
    print(
        f"\n{'postgres' if database_url else 'sqlite'}: {COMMANDS} commands from {CLIENTS} "
        f"concurrent clients, {KILLS} SIGKILLs (answered/in flight at each: {kills}), "
        f"{resent} sent more than once, {replayed} answered as replays, "
        f"{len(messages)} events on the stream, none lost or doubled (seed {seed})"
    )
