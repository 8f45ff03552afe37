"""A running Tenantry for the provisioning workers' tests: the command service on the bus and
the relay feeding the stream, both real and in this process, plus workers started in-process or
as their own processes (`tests/e2e/worker_process.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import nats
from nats.aio.client import Client
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from domain.authorization import Authorization
from domain.base import snake_case
from domain.event_log import STREAM_NAME, event_id
from domain.ml_repo import MlRepo
from domain.service import TenancyService
from domain.workspace import Workspace
from tenantry.log.relay import Relay
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.nats_server import NatsServer, _die_with_parent
from tenantry.server.store import event_store_env
from tenantry.server.wakeups import wake_on_save
from tenantry.settings import Settings
from workers import BackendConfig, run_worker

ADMIN = "user:ana@example.com"
T = TypeVar("T")


@dataclass
class Tenancy:
    service: TenancyService
    client: Client
    url: str

    async def command(self, name: str, body: dict[str, Any], actor: str = ADMIN) -> dict[str, Any]:
        reply = await self.client.request(
            f"tenantry.cmd.{name}",
            json.dumps(body).encode(),
            timeout=10,
            headers={"Tenantry-Actor": actor, "Tenantry-Command-Id": str(uuid.uuid4())},
        )
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    async def ok(self, name: str, body: dict[str, Any], actor: str = ADMIN) -> dict[str, Any]:
        answer = await self.command(name, body, actor)
        assert answer["ok"], answer
        return answer

    # The world the tests act in.

    async def cluster(
        self, name: str = "prod-eu", environments: tuple[str, ...] = ("dev", "prod")
    ) -> None:
        await self.ok(
            "register_cluster",
            {
                "name": name,
                "region": "eu-west-1",
                "provider": "aws-eks",
                "environments": list(environments),
            },
        )

    async def integration(self, name: str, root: str, provider: str = "local") -> None:
        await self.ok(
            "register_storage_integration",
            {"name": name, "provider": provider, "storage_root": root},
        )

    # Reading back what happened, from the aggregates and the store (the projections are
    # someone else's).

    def workspace(self, fqn: str) -> Workspace:
        cluster, _, name = fqn.partition(":")
        found: Workspace = self.service.repository.get(Workspace.create_id(cluster, name))
        return found

    def repo(self, name: str) -> MlRepo:
        found: MlRepo = self.service.repository.get(MlRepo.create_id(name))
        return found

    def events(self, type_: str | None = None, fqn: str | None = None) -> list[dict[str, Any]]:
        """Stored events as (position, id, type, version, fqn, actor, command_id, data), in store
        order."""
        out = []
        for n in self.service.recorder.select_notifications(None, 1_000_000):
            owner, _, event = n.topic.partition(":")[2].partition(".")
            state = json.loads(n.state)
            decoded = {
                "position": n.id,
                "id": event_id(UUID(str(n.originator_id)), n.originator_version),
                "type": f"{snake_case(owner)}.{snake_case(event)}",
                "version": n.originator_version,
                "fqn": state.get("fqn"),
                "actor": state.get("actor"),
                "command_id": state.get("command_id"),
                "data": state,
            }
            if (type_ is None or decoded["type"] == type_) and (
                fqn is None or decoded["fqn"] == fqn
            ):
                out.append(decoded)
        return out

    async def wait_status(self, kind: str, key: str, status: str, timeout: float = 15.0) -> None:
        get = self.workspace if kind == "workspace" else self.repo

        def current() -> str:
            return str(get(key).status)

        await wait_until(
            lambda: current() == status, timeout, lambda: f"{kind} {key} is {current()}"
        )

    async def wait_reports(self, type_: str, fqn: str, count: int, timeout: float = 15.0) -> None:
        """Until the workers' reports of `type_` about `fqn` number `count`."""
        await wait_until(
            lambda: len(self.events(type_, fqn)) >= count,
            timeout,
            lambda: f"{len(self.events(type_, fqn))} {type_} of {fqn}, not {count}",
        )


async def wait_until(
    check: Callable[[], bool], timeout: float = 15.0, why: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError(why() if why else f"not true within {timeout}s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_tenancy(
    nats_server: NatsServer, state_dir: Path, authorization: Authorization | None = None
) -> AsyncIterator[Tenancy]:
    """The command service and the relay over a SQLite store, on a real nats-server
    (authorization off unless given)."""
    service = TenancyService(
        event_store_env(Settings(state_dir=state_dir)), authorization=authorization
    )
    service.seed_default_environments()
    service_nc = await nats.connect(nats_server.url)
    endpoint = CommandEndpoint(service_nc, service)
    await endpoint.start()
    wakeup = asyncio.Event()
    service.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
    relay_nc = await nats.connect(nats_server.url)
    relay = Relay(service.recorder, relay_nc, wakeup=wakeup, poll_interval=0.05)
    stop_relay = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop_relay))
    client = await nats.connect(nats_server.url)
    try:
        yield Tenancy(service, client, nats_server.url)
    finally:
        await client.close()
        stop_relay.set()
        await relay_task
        await relay_nc.drain()
        await endpoint.stop()
        await service_nc.drain()
        service.close()


@dataclass
class InProcessWorker:
    task: asyncio.Task[None]
    stop: asyncio.Event
    nc: Client


@contextlib.asynccontextmanager
async def running_worker(
    kind: str, url: str, config: BackendConfig
) -> AsyncIterator[InProcessWorker]:
    """A worker on its own connection in this process, stopped (and drained) on exit."""
    nc = await nats.connect(url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(kind, nc, stop, backend_config=config))
    try:
        yield InProcessWorker(task, stop, nc)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
            await nc.drain()


async def durable_info(client: Client, kind: str) -> ConsumerInfo:
    return await client.jetstream().consumer_info(STREAM_NAME, f"tenantry-{kind}")


async def published_seq(client: Client, position: int, timeout: float = 15.0) -> int:
    """Until the published event at store `position` is on the stream: its sequence there.
    An idle durable alone says nothing of an event the relay has yet to publish."""
    js = client.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        seq = (await js.stream_info(STREAM_NAME)).state.last_seq
        while seq:
            at = json.loads((await js.get_msg(STREAM_NAME, seq)).data)["position"]
            if at == position:
                return seq
            if at < position:
                break  # not published yet
            seq -= 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"the event at position {position} is not on the stream")
        await asyncio.sleep(0.05)


async def wait_settled(
    client: Client, kind: str, seq: int = 0, timeout: float = 15.0
) -> ConsumerInfo:
    """Until the worker's durable has settled (acked or terminated) everything up to `seq`,
    and has nothing else pending."""
    deadline = time.monotonic() + timeout
    settled = 0
    while True:
        with contextlib.suppress(NotFoundError):  # the worker has yet to create it
            info = await durable_info(client, kind)
            idle = not info.num_ack_pending and not info.num_pending
            if info.ack_floor.stream_seq >= seq and idle:
                return info
            settled = info.ack_floor.stream_seq
        if time.monotonic() > deadline:
            raise TimeoutError(f"{kind} settled up to {settled}, not {seq}")
        await asyncio.sleep(0.05)


def start_worker_process(
    kind: str, url: str, config: BackendConfig, log: Path
) -> subprocess.Popen[bytes]:
    """`python -m tests.e2e.worker_process`: one worker as a process of its own."""
    encoded = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.worker_process", kind, url, json.dumps(encoded)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,  # never outlives a test process that was killed
        )


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


def git_init(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    git(
        root,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "root",
    )
    return root


def commits(root: Path) -> int:
    """Commits made after the empty root commit of `git_init`."""
    return int(git(root, "rev-list", "--count", "HEAD").strip()) - 1
