"""The query service over a bus fixture's event store, for tests that read what they wrote."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from sqlalchemy import select

from projections import schema
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tests.integration.world import ADMIN, WORLD

if TYPE_CHECKING:
    from tests.integration.conftest import Bus

Rows = dict[str, list[tuple[Any, ...]]]


def dump(store: ViewStore) -> Rows:
    """Every view table's rows, ordered by primary key."""
    rows: Rows = {}
    with store.snapshot() as conn:
        for table in schema.metadata.sorted_tables:
            statement = select(table).order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(row) for row in conn.execute(statement)]
    return rows


@dataclass
class Views:
    """The query endpoint and the runner feeding it, over the bus fixture's event store.

    The runner can be paused to show what a reader sees before the views catch up."""

    bus: Bus
    store: ViewStore
    runner: ProjectionRunner
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def resume(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.runner.run(self.stop, self.wakeup, 0.05))

    async def pause(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
            self.task = None

    async def raw(self, name: str, body: dict[str, Any] | bytes | None = None) -> Msg:
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body)
        return await self.bus.nc.request(
            f"tenantry.query.{name}",
            data.encode() if isinstance(data, str) else data,
            timeout=10,
        )

    async def query(self, name: str, body: dict[str, Any] | bytes | None = None) -> dict[str, Any]:
        reply = await self.raw(name, body)
        answer: dict[str, Any] = json.loads(reply.data)
        if answer["ok"]:
            assert set(answer) == {"ok", "position", "data"}
        else:
            assert reply.headers is not None
            assert reply.headers["Nats-Service-Error-Code"].isdigit()
            assert reply.headers["Nats-Service-Error"]
        return answer

    async def data(self, query_name: str, **params: Any) -> Any:
        answer = await self.query(query_name, params)
        assert answer["ok"], answer
        return answer["data"]

    async def send(self, name: str, body: dict[str, Any], actor: str = ADMIN) -> int:
        answer = await self.bus.command(name, body, actor=actor)
        assert answer["ok"], answer
        position: int = answer["position"]
        return position

    async def build_world(self) -> int:
        position = 0
        for name, body, actor in WORLD:
            position = await self.send(name, body, actor)
        return position
