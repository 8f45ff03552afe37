"""nats-server SIGKILLed and started again (same port, same store directory) under a running
Tenantry of separate processes: `tenantry serve command`, `relay`, `projections`, `worker
namespaces` and `worker storage`, killed while they are all busy (clients sending workspaces and
repos, the workers provisioning them, the relay publishing a backlog). Without anyone touching
them the same five processes reconnect and carry on: commands sent during the outage are
answered, everything created before, during and after it is provisioned (`ready` in the
queries), and the stream holds every stored event once, in order, its chain valid."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.service import TenancyService
from tenantry.server.nats_server import NatsServer, free_port
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
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

ROLES = ("command", "relay", "projections", "worker namespaces", "worker storage")
ACTOR = "user:ana@example.com"
LOAD = 40  # workspaces and repos created across the kill
BACKLOG = 1500  # teams written straight into the store meanwhile
CLIENTS = 8


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of our own: this test kills it and starts it again on the same port."""
    nats_server = NatsServer(tmp_path / "nats", port=free_port()).start()
    yield nats_server
    nats_server.stop()


@pytest.fixture
async def client(server: NatsServer) -> AsyncIterator[Client]:
    # The test's own client reconnects too, quickly, and never gives up within the test.
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield nc
    await nc.close()


@pytest.fixture
def processes(tmp_path: Path, server: NatsServer) -> Iterator[dict[str, Served]]:
    env = serve_env(tmp_path / "state", server.url)
    served = {role: Served(role, env, tmp_path / f"{role.replace(' ', '-')}.log") for role in ROLES}
    yield served
    stop_all(list(served.values()))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TenancyService]:
    service = TenancyService(event_store_env(Settings(state_dir=tmp_path / "state")))
    yield service
    service.close()


def _write_teams(store: TenancyService, count: int) -> None:
    """Another writer on the same store: events the relay must publish too."""
    items = [
        (
            COMMANDS["create_team"].model_validate({"name": f"team-{i}"}),
            CommandContext(ACTOR, f"backlog-{i}", "backlog"),
        )
        for i in range(count)
    ]
    for start in range(0, count, 64):
        for result in store.handle_batch(items[start : start + 64]):
            assert not isinstance(result, Exception), result


def _namespaces(gitops: Path) -> int:
    """Namespaces the namespace worker has written (cheap enough to poll)."""
    try:
        return len(os.listdir(gitops / "prod-eu"))
    except FileNotFoundError:
        return 0


async def _command(nc: Client, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """A command sent until answered, always with the same id; it must succeed."""
    headers = {"Tenantry-Command-Id": str(uuid.uuid4()), "Tenantry-Actor": ACTOR}
    answer, _ = await request_until_answered(nc, f"tenantry.cmd.{name}", body, headers, within=30)
    assert answer["ok"], answer
    return answer


async def _provisioned(nc: Client, workspace: str, repo: str, position: int) -> None:
    """Until the queries say the workspace and the repo are `ready` (reported by the workers,
    published by the relay, applied by the projections)."""

    async def ready() -> bool:
        try:
            ws = await request(
                nc, "tenantry.query.get_workspace", {"fqn": workspace, "min_position": position}
            )
            ml = await request(
                nc, "tenantry.query.get_ml_repo", {"name": repo, "min_position": position}
            )
        except (TimeoutError, nats.errors.Error):
            return False
        return bool(
            ws["ok"] and ml["ok"] and ws["data"]["status"] == ml["data"]["status"] == "ready"
        )

    await wait_until(ready, 30, f"{workspace} and {repo} provisioned")


async def test_after_nats_server_is_killed_and_restarted_every_process_carries_on(
    server: NatsServer,
    client: Client,
    processes: dict[str, Served],
    store: TenancyService,
    tmp_path: Path,
) -> None:
    processes["command"].start()
    await wait_for_commands(client)
    for role in ROLES[1:]:
        processes[role].start()
    await _command(
        client,
        "register_cluster",
        {"name": "prod-eu", "region": "eu-west-1", "provider": "generic", "environments": ["dev"]},
    )
    root = f"file://{tmp_path / 'storage'}"
    await _command(
        client,
        "register_storage_integration",
        {"name": "local", "provider": "local", "storage_root": root},
    )
    await _command(
        client, "create_workspace", {"cluster": "prod-eu", "name": "before", "environment": "dev"}
    )
    answer = await _command(
        client, "create_ml_repo", {"name": "repo-before", "storage_integration": "local"}
    )
    await _provisioned(client, "prod-eu:before", "repo-before", answer["position"])
    for kind in ("namespaces", "storage"):
        await wait_settled(client, kind)

    # The server dies while everything is busy: clients sending a load of workspaces and repos
    # (each until answered, with its own id), the workers provisioning them, and the relay
    # publishing a backlog that another writer on the store (this test) adds meanwhile.
    slots = asyncio.Semaphore(CLIENTS)

    async def create(name: str, body: dict[str, Any]) -> dict[str, Any]:
        async with slots:
            return await _command(client, name, body)

    workspaces = [f"ws-{i:02}" for i in range(LOAD // 2)]
    repos = [f"repo-{i:02}" for i in range(LOAD // 2)]
    load = [
        asyncio.create_task(
            create("create_workspace", {"cluster": "prod-eu", "name": ws, "environment": "dev"})
        )
        for ws in workspaces
    ] + [
        asyncio.create_task(create("create_ml_repo", {"name": r, "storage_integration": "local"}))
        for r in repos
    ]
    backlog = asyncio.create_task(asyncio.to_thread(_write_teams, store, BACKLOG))
    rng = random.Random()
    mark = rng.randint(len(workspaces) // 5, len(workspaces) * 3 // 5)

    async def provisioning() -> bool:
        return _namespaces(tmp_path / "state" / "gitops") >= mark

    await wait_until(provisioning, 30, f"{mark} namespaces written")
    await asyncio.sleep(rng.uniform(0, 0.05))
    server.kill()
    at_kill = {
        "answered": sum(t.done() for t in load),
        "namespaces": _namespaces(tmp_path / "state" / "gitops"),
    }
    # Down for a while: every process sees its connection drop and starts reconnecting; a
    # client sends commands meanwhile.
    during = [
        asyncio.create_task(
            _command(
                client,
                "create_workspace",
                {"cluster": "prod-eu", "name": "after", "environment": "dev"},
            )
        ),
        asyncio.create_task(
            _command(
                client, "create_ml_repo", {"name": "repo-after", "storage_integration": "local"}
            )
        ),
    ]
    await asyncio.sleep(rng.uniform(0.5, 1.5))
    server.start()

    # Commands are answered again, by the same command service process; nothing is lost.
    answers = await asyncio.gather(*load, *during)
    await backlog
    assert 0 < at_kill["namespaces"] < len(workspaces), at_kill
    last = max(a["position"] for a in answers)

    # Queries answer, and both workers carried on: everything created before, during and after
    # the outage is provisioned.
    want_workspaces = {f"prod-eu:{ws}" for ws in ["before", "after", *workspaces]}
    want_repos = {"repo-before", "repo-after", *repos}

    async def all_ready() -> bool:
        listed = await request(client, "tenantry.query.list_workspaces", {"min_position": last})
        ready = {w["fqn"] for w in listed["data"] if w["status"] == "ready"}
        listed = await request(client, "tenantry.query.list_ml_repos", {"min_position": last})
        ready_repos = {r["name"] for r in listed["data"] if r["status"] == "ready"}
        return ready == want_workspaces and ready_repos == want_repos

    # Up to a worker's ack_wait (30 s): a server killed by SIGKILL may forget the acks of its
    # last moments and redeliver those messages only after it (the actions are no-ops then).
    await wait_until(all_ready, 60, "every workspace and repo provisioned")
    assert (tmp_path / "storage" / "repo-after").is_dir()
    assert _namespaces(tmp_path / "state" / "gitops") == len(workspaces) + 2
    # The relay published everything, once, in order, chain valid.
    messages = await wait_for_stream(client.jetstream(), store.recorder, timeout=30)
    assert_stream_matches_store(messages, store.recorder)
    assert len(messages) > BACKLOG

    # Nobody restarted anything: the same five processes, each back on the bus.
    for served in processes.values():
        assert served.alive() and served.starts == 1, served.tail()
        assert served.events("nats.reconnected"), served.tail()
    print(
        f"\nnats restart: killed with {at_kill['answered']}/{LOAD} commands answered and "
        f"{at_kill['namespaces']}/{len(workspaces)} namespaces written; afterwards "
        f"{len(want_workspaces)} workspaces and {len(want_repos)} repos ready, "
        f"{len(messages)} events on the stream, 5 processes reconnected, none restarted"
    )
