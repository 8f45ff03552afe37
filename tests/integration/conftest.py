"""Integration fixtures: the command service on a real bus over a real store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from domain.authorization import Authorization
from domain.service import TenancyService
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import QueryEndpoint
from tenantry.server.store import event_store_env, postgres_env
from tenantry.server.wakeups import wake_on_save
from tenantry.settings import Settings
from tests.integration.views import Views


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The event store, on each backend (a test class that runs on one overrides it)."""
    if request.param == "sqlite":
        return event_store_env(Settings(state_dir=tmp_path / "state"))
    return postgres_env(request.getfixturevalue("postgres_url"))


@pytest.fixture
def service(store_env: dict[str, str]) -> Iterator[TenancyService]:
    """The command application on `store_env`, seeded as `tenantry serve` seeds it."""
    svc = TenancyService(store_env)
    svc.seed_default_environments()
    yield svc
    svc.close()


@dataclass
class Bus:
    """A client connection with helpers to send commands as a user would."""

    nc: Client
    service: TenancyService
    store_env: dict[str, str]

    async def command(
        self,
        name: str,
        body: dict[str, Any] | bytes,
        *,
        command_id: str | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        headers = {
            k: v
            for k, v in {
                "Tenantry-Command-Id": command_id,
                "Tenantry-Actor": actor,
                "Tenantry-Correlation-Id": correlation_id,
            }.items()
            if v is not None
        }
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = await self.nc.request(
            f"tenantry.cmd.{name}", data, timeout=timeout, headers=headers or None
        )
        answer: dict[str, Any] = json.loads(reply.data)
        if not answer["ok"]:
            # Every error carries the micro-service headers as well.
            assert reply.headers is not None
            assert reply.headers["Nats-Service-Error-Code"].isdigit()
            assert reply.headers["Nats-Service-Error"]
        return answer

    def stored_positions(self) -> int:
        return self.service.recorder.max_notification_id() or 0


async def start_bus(
    server: NatsServer, service: TenancyService
) -> tuple[Client, CommandEndpoint, Client]:
    service_nc = await nats.connect(server.url)
    endpoint = CommandEndpoint(service_nc, service)
    await endpoint.start()
    client = await nats.connect(server.url)
    return service_nc, endpoint, client


@pytest.fixture
def admins() -> frozenset[str] | None:
    return None


@pytest.fixture
async def bus(
    nats_server: NatsServer, sqlite_env: dict[str, str], admins: frozenset[str] | None
) -> AsyncIterator[Bus]:
    service = TenancyService(sqlite_env, authorization=Authorization(admins=admins))
    service.seed_default_environments()
    service_nc, endpoint, client = await start_bus(nats_server, service)
    yield Bus(client, service, sqlite_env)
    await client.close()
    await endpoint.stop()
    await service_nc.drain()
    service.close()


@pytest.fixture
async def views(  # the query service over `bus`'s store, its runner feeding the views
    bus: Bus, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[Views]:
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views' / 'views.sqlite'}")
    store.create_tables()
    runner = ProjectionRunner(bus.service.recorder, store)
    views = Views(bus, store, runner)
    bus.service.listeners.append(wake_on_save(asyncio.get_running_loop(), views.wakeup))
    nc = await nats.connect(nats_server.url)
    endpoint = QueryEndpoint(  # knowing the tenant admins, as the command service does
        nc,
        store,
        runner.position,
        progress=runner.progress,
        wakeup=views.wakeup,
        authorization=bus.service.authorization,
    )
    await endpoint.start()
    views.resume()
    yield views
    await views.pause()
    await endpoint.stop()
    await nc.drain()
    store.close()
