"""One client must not starve the others: a reader waiting for a position holds no answering
slot, a request whose sender stopped waiting is dropped, requesters are answered in turn, and
queries share a process (and its connection) with the command service without starving it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from domain.service import TenancyService
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.metrics import Metrics
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import QueryEndpoint, serve_views

FAR = 10**9  # a position the views will not reach in these tests


@dataclass
class OneProcess:
    """The command service and the query service on ONE connection, as in `tenantry up`."""

    client: Client
    metrics: Metrics
    stop: asyncio.Event
    served: asyncio.Task[None]


@pytest.fixture
async def one_process(
    nats_server: NatsServer, sqlite_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[OneProcess]:
    service = TenancyService(sqlite_env)
    service.seed_default_environments()
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views.sqlite'}")
    nc = await nats.connect(nats_server.url)
    commands = CommandEndpoint(nc, service)
    await commands.start()
    metrics = Metrics()
    stop = asyncio.Event()
    served = asyncio.create_task(
        serve_views(service.recorder, store, nc, stop, asyncio.Event(), metrics=metrics)
    )
    client = await nats.connect(nats_server.url)
    while True:  # until the query service has subscribed
        try:
            await _ask(client, "tenantry.query.list_environments", {}, timeout=5)
            break
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.02)
    yield OneProcess(client, metrics, stop, served)
    stop.set()
    await served
    await commands.stop()
    await client.close()
    await nc.close()
    store.close()
    service.close()


async def _ask(
    nc: Client,
    subject: str,
    body: dict[str, Any],
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=timeout, headers=headers)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def _send_many(nc: Client, count: int, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Publish `count` requests for list_environments, in order, all out before this returns;
    their answers are appended to the returned list as they come."""
    answers: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        answers.append(json.loads(msg.data))

    inbox = nc.new_inbox()
    await nc.subscribe(inbox + ".*", cb=collect)
    for i in range(count):
        await nc.publish(
            "tenantry.query.list_environments", json.dumps(body).encode(), reply=f"{inbox}.{i}"
        )
    await nc.flush()
    return answers


async def test_readers_waiting_for_a_position_hold_up_no_query_and_no_command(
    one_process: OneProcess,
) -> None:
    client = one_process.client
    waiting = await _send_many(client, 64, {"min_position": FAR, "min_position_timeout": 30})
    answer = await _ask(client, "tenantry.query.list_environments", {}, timeout=20)
    assert answer["ok"], answer
    answer = await _ask(client, "tenantry.cmd.create_team", {"name": "risk"}, timeout=20)
    assert answer["ok"], answer
    assert waiting == []  # still waiting
    # Stopping answers the waiting readers at once: `timeout`, ask again.
    one_process.stop.set()
    await one_process.served
    await client.flush()
    deadline = asyncio.get_running_loop().time() + 20
    while len(waiting) < 64:
        assert asyncio.get_running_loop().time() < deadline, len(waiting)
        await asyncio.sleep(0.02)
    assert {a["error"]["code"] for a in waiting} == {"timeout"}


async def test_a_request_whose_sender_stopped_waiting_is_dropped(
    one_process: OneProcess,
) -> None:
    client = one_process.client
    with pytest.raises(nats.errors.TimeoutError):
        await _ask(
            client,
            "tenantry.query.list_environments",
            {"min_position": FAR, "min_position_timeout": 30},
            timeout=1,
            headers={"Tenantry-Timeout": "0.5"},
        )

    def expired() -> float:
        value = one_process.metrics.registry.get_sample_value(
            "tenantry_queries_total", {"query": "list_environments", "result": "expired"}
        )
        return value or 0.0

    deadline = asyncio.get_running_loop().time() + 20
    while expired() < 1:
        assert asyncio.get_running_loop().time() < deadline, "the reader is still waiting"
        await asyncio.sleep(0.05)


async def test_requesters_are_answered_in_turn(
    nats_server: NatsServer, sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    service = TenancyService(sqlite_env)
    service.seed_default_environments()
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views.sqlite'}")
    store.create_tables()
    runner = ProjectionRunner(service.recorder, store)
    nc = await nats.connect(nats_server.url)
    endpoint = QueryEndpoint(nc, store, runner.position, max_in_flight=2)
    await endpoint.start()
    await nc.flush()
    flooder = await nats.connect(nats_server.url)
    other = await nats.connect(nats_server.url)
    # Every answer comes to one subscription, in the order the query service sent them.
    answers: list[str] = []

    async def collect(msg: Msg) -> None:
        answers.append(msg.subject.split(".")[1])
        assert json.loads(msg.data)["ok"]

    await flooder.subscribe("_INBOX.*.*", cb=collect)
    await flooder.flush()
    for i in range(400):
        await flooder.publish("tenantry.query.list_environments", b"{}", reply=f"_INBOX.flood.{i}")
    await flooder.flush()
    await other.publish("tenantry.query.list_environments", b"{}", reply="_INBOX.other.0")
    await other.flush()
    deadline = asyncio.get_running_loop().time() + 60
    while len(answers) < 401:
        assert asyncio.get_running_loop().time() < deadline, len(answers)
        await asyncio.sleep(0.02)
    flood_answered = answers.index("other")
    for conn in (flooder, other):
        await conn.close()
    await endpoint.stop()
    await nc.close()
    store.close()
    service.close()
    # In arrival order the other client would have waited for the whole flood.
    assert flood_answered < 200, flood_answered
