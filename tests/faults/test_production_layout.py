"""The production layout of docker-compose.yml without containers: a three-node JetStream
cluster (routes on loopback, the stream replicated three times), PostgreSQL (a fresh schema,
created by the roles themselves), and every role as its own process, all started at the same
moment: `tenantry serve command` twice, `relay`, `projections`, `worker namespaces`, `worker
storage`.

Under a load of clients (each command sent again with the same `Tenantry-Command-Id` until it
is answered), one command service is SIGKILLed, then the node leading the stream. Shown: every
command settles exactly once (nothing acknowledged lost or doubled), the stream holds exactly
the stored events with a valid hash chain, everything is provisioned, and the views equal a
rebuild from the store."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import APIError

from domain.command_record import CommandRecord
from domain.event_log import STREAM_NAME
from domain.service import TenancyService
from projections.runner import rebuild
from projections.store import ViewStore
from tenantry.server.store import postgres_env
from tests.faults.exactly_once import check_stored, command_records, events_by_command
from tests.faults.nats_cluster import NatsCluster, stream_leader
from tests.faults.processes import (
    Served,
    request,
    request_until_answered,
    serve_env,
    stop_all,
    wait_for_commands,
    wait_until,
)
from tests.integration.provisioning import wait_settled
from tests.integration.streams import assert_stream_matches_store, wait_for_stream
from tests.integration.views import dump

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

ROLES = ("command", "command", "relay", "projections", "worker namespaces", "worker storage")
ACTOR = "user:ana@example.com"
WORKSPACES = 30
REPOS = 30
CLIENTS = 8  # commands in flight at once


@dataclass(frozen=True)
class Sent:
    name: str
    body: dict[str, Any]
    command_id: str
    creates: str  # the event that creates the command's aggregate


def _load(storage: str) -> list[Sent]:
    workspaces = [
        Sent(
            "create_workspace",
            {"cluster": "prod-eu", "name": f"ws-{i:02}", "environment": "dev"},
            f"ws-{i}-{uuid.uuid4().hex[:8]}",
            "workspace.created",
        )
        for i in range(WORKSPACES)
    ]
    repos = [
        Sent(
            "create_ml_repo",
            {"name": f"repo-{i:02}", "storage_integration": storage},
            f"repo-{i}-{uuid.uuid4().hex[:8]}",
            "ml_repo.created",
        )
        for i in range(REPOS)
    ]
    # Interleaved, so that both workers are busy throughout.
    return [sent for pair in zip(workspaces, repos, strict=True) for sent in pair]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats_cluster = NatsCluster.create(tmp_path / "nats").start()
    yield nats_cluster
    nats_cluster.stop()


@pytest.fixture
def roles(tmp_path: Path, cluster: NatsCluster, postgres_url: str) -> Iterator[list[Served]]:
    env = serve_env(tmp_path / "state", cluster.url, postgres_url, TENANTRY_STREAM_REPLICAS="3")
    served = [
        Served(role, env, tmp_path / f"{i}-{role.replace(' ', '-')}.log")
        for i, role in enumerate(ROLES)
    ]
    yield served
    stop_all(served)


@pytest.fixture
async def client(cluster: NatsCluster) -> AsyncIterator[Client]:
    # Knows every node, reconnects quickly, never gives up within the test.
    nc = await nats.connect(cluster.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield nc
    await nc.close()


async def _command(nc: Client, sent: Sent, slots: asyncio.Semaphore) -> dict[str, Any]:
    headers = {"Tenantry-Command-Id": sent.command_id, "Tenantry-Actor": ACTOR}
    async with slots:
        answer, _ = await request_until_answered(
            nc, f"tenantry.cmd.{sent.name}", sent.body, headers, within=90, timeout=2.0
        )
    return answer


def _answered(
    tasks: list[asyncio.Task[dict[str, Any]]], at_least: int
) -> Callable[[], Awaitable[bool]]:
    async def answered() -> bool:
        return sum(t.done() for t in tasks) >= at_least

    return answered


async def test_every_role_started_together_survives_a_killed_command_service_and_stream_leader(
    cluster: NatsCluster,
    roles: list[Served],
    client: Client,
    postgres_url: str,
    other_postgres_url: str,
    tmp_path: Path,
) -> None:
    # All at once, on an empty database and a cluster that has only just formed.
    for served in roles:
        served.start()
    await wait_for_commands(client, within=90)
    slots = asyncio.Semaphore(CLIENTS)
    setup = [
        Sent(
            "register_cluster",
            {
                "name": "prod-eu",
                "region": "eu-west-1",
                "provider": "generic",
                "environments": ["dev"],
            },
            f"setup-cluster-{uuid.uuid4().hex[:8]}",
            "cluster.registered",
        ),
        Sent(
            "register_storage_integration",
            {
                "name": "local",
                "provider": "local",
                "storage_root": f"file://{tmp_path / 'storage'}",
            },
            f"setup-storage-{uuid.uuid4().hex[:8]}",
            "storage_integration.registered",
        ),
    ]
    answers = {s.command_id: await _command(client, s, slots) for s in setup}
    assert all(a["ok"] for a in answers.values()), answers
    # Every role came up (none fell over its neighbours creating the schema or the stream),
    # and the stream is replicated on every node.
    js = client.jetstream(timeout=2.0)

    async def replicated() -> int:
        for served in roles:
            assert served.alive(), served.tail()
        try:
            info = await js.stream_info(STREAM_NAME)
        except (APIError, TimeoutError):
            return 0  # the relay has yet to make it
        return info.config.num_replicas or 0

    assert await wait_until(replicated, 60, "the stream made by the relay") == 3

    load = _load("local")
    tasks = [asyncio.create_task(_command(client, s, slots)) for s in load]
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)

    # A command service dies with commands in flight; the other one takes the queue group's
    # requests, and the retried ones among them are answered once.
    commands = [served for served in roles if served.role == "command"]
    victim = rng.choice(commands)
    mark = rng.randint(len(load) // 6, len(load) // 3)
    await wait_until(_answered(tasks, mark), 90, f"{mark} commands answered")
    victim.kill()
    in_flight_at = [sum(not t.done() for t in tasks)]

    # Then the node leading the stream: the relay's publishes and the workers' consumers move
    # to the new leader; the clients and processes on that node reconnect to the others.
    mark = rng.randint(len(load) // 2, len(load) * 2 // 3)
    await wait_until(_answered(tasks, mark), 90, f"{mark} commands answered")
    leader = await stream_leader(client, STREAM_NAME)
    cluster.nodes[leader].kill()
    in_flight_at.append(sum(not t.done() for t in tasks))
    new_leader = await stream_leader(client, STREAM_NAME, within=60)
    assert new_leader != leader

    answers.update(zip((s.command_id for s in load), await asyncio.gather(*tasks), strict=True))
    refused = {cid: a for cid, a in answers.items() if not a["ok"]}
    assert not refused, list(refused.items())[:5]
    assert all(count > 0 for count in in_flight_at), in_flight_at  # each kill was mid-load
    last = max(a["position"] for a in answers.values())

    # Everything is provisioned: the workers reported it, the relay published the reports,
    # the views applied them.
    want_workspaces = {f"prod-eu:{s.body['name']}" for s in load if s.name == "create_workspace"}
    want_repos = {s.body["name"] for s in load if s.name == "create_ml_repo"}

    async def all_ready() -> bool:
        listed = await request(client, "tenantry.query.list_workspaces", {"min_position": last})
        ready = {w["fqn"] for w in listed["data"] if w["status"] == "ready"}
        listed = await request(client, "tenantry.query.list_ml_repos", {"min_position": last})
        ready_repos = {r["name"] for r in listed["data"] if r["status"] == "ready"}
        return ready == want_workspaces and ready_repos == want_repos

    # Up to a worker's ack_wait (30 s) past the leader's death: acks of its last moments may be
    # forgotten and those messages redelivered only then (a no-op each, by then).
    await wait_until(all_ready, 90, "every workspace and repo provisioned")
    for kind in ("namespaces", "storage"):
        await wait_settled(client, kind, timeout=60)

    store = TenancyService(postgres_env(postgres_url))
    try:
        # Nothing acknowledged lost or doubled: one record per command id, each command's
        # events stored once, as its answer listed them, one created aggregate per command.
        sent = [*setup, *load]
        records = Counter(command_records(store))
        for s in sent:
            assert records[CommandRecord.create_id(s.command_id)] == 1, s
        by_command = events_by_command(store)
        for s in sent:
            assert by_command[s.command_id] == answers[s.command_id]["events"], s
            assert by_command[s.command_id].count(s.creates) == 1, s
        assert len({answers[s.command_id]["aggregate_id"] for s in sent}) == len(sent)
        created = Counter(t for types in by_command.values() for t in types)
        assert created["workspace.created"] == WORKSPACES, created
        assert created["ml_repo.created"] == REPOS, created
        await asyncio.to_thread(check_stored, store, answers)

        # The stream, read from the surviving nodes: exactly the stored events, once each, in
        # store order, the hash chain valid from zero.
        messages = await wait_for_stream(client.jetstream(), store.recorder, timeout=60)
        assert_stream_matches_store(messages, store.recorder)

        # The views agree with the store: once they have applied its last position, they are
        # row for row what a rebuild from the store gives.
        end = store.recorder.max_notification_id()
        caught_up = await request(
            client,
            "tenantry.query.list_environments",
            {"min_position": end, "min_position_timeout": 30},
            timeout=35,
        )
        assert caught_up["ok"] and caught_up["position"] >= end, caught_up
        live = ViewStore.from_url(postgres_url)
        rebuilt = ViewStore.from_url(other_postgres_url)
        try:
            await asyncio.to_thread(rebuild, store.recorder, rebuilt)
            live_rows, rebuilt_rows = await asyncio.gather(
                asyncio.to_thread(dump, live), asyncio.to_thread(dump, rebuilt)
            )
        finally:
            live.close()
            rebuilt.close()
        assert live_rows == rebuilt_rows
    finally:
        store.close()

    # The processes not killed are the ones started: nobody restarted them.
    for served in roles:
        if served is not victim:
            assert served.alive() and served.starts == 1, served.tail()
    print(
        f"\nproduction layout: {len(sent)} commands from {CLIENTS} clients, a command service "
        f"and the stream leader ({leader}, then {new_leader}) SIGKILLed with {in_flight_at} "
        f"in flight, {len(messages)} events on the stream, views equal to a rebuild "
        f"(seed {seed})"
    )
