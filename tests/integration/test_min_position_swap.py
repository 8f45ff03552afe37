"""A `min_position` reader is answered from what the runner in its process has applied, without
reading the position first; views swapped in behind that (`projections.swap`: the runner goes on
from their own position) must still never answer below the position asked for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError

from projections.runner import ProjectionRunner
from projections.store import ViewStore
from projections.swap import _swap_sqlite
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import serve_views
from tenantry.server.wakeups import wake_on_save
from tests.integration.conftest import Bus


async def _environments(nc: Client, min_position: int) -> dict[str, Any]:
    body = json.dumps({"min_position": min_position}).encode()
    for _ in range(200):  # serve_views subscribes in the background
        try:
            reply = await nc.request("tenantry.query.list_environments", body, timeout=10)
        except NoRespondersError:
            await asyncio.sleep(0.01)
            continue
        answer: dict[str, Any] = json.loads(reply.data)
        return answer
    raise AssertionError("serve_views never answered")


async def test_views_swapped_in_behind_the_runner_are_waited_for_not_answered_from(
    bus: Bus, nats_server: NatsServer, tmp_path: Path
) -> None:
    live = tmp_path / "served" / "views.sqlite"
    store = ViewStore.from_url(f"sqlite:///{live}")
    stop, wakeup = asyncio.Event(), asyncio.Event()
    bus.service.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
    nc = await nats.connect(nats_server.url)
    serving = asyncio.create_task(serve_views(bus.service.recorder, store, nc, stop, wakeup))
    try:
        made = await bus.command("create_environment", {"name": "qa"})
        wanted = made["position"]
        answer = await _environments(bus.nc, wanted)  # the runner here has applied it
        assert answer["ok"] and answer["position"] >= wanted, answer

        # Views built only up to before the environment's event are swapped in.
        behind = tmp_path / "behind.sqlite"
        fresh = ViewStore.from_url(f"sqlite:///{behind}", scratch=True)
        fresh.create_tables()
        ProjectionRunner(bus.service.recorder, fresh).catch_up(limit=wanted - 2)
        fresh.close()
        _swap_sqlite(behind, live)

        answer = await _environments(bus.nc, wanted)
        assert answer["ok"], answer
        assert answer["position"] >= wanted, answer
        assert "qa" in [e["name"] for e in answer["data"]]
    finally:
        stop.set()
        await asyncio.wait_for(serving, 10)
        await nc.drain()
        store.close()
