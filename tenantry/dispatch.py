"""Messages handled concurrently, a bounded number at a time: what both endpoints need."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg


class BoundedDispatch:
    """`take` (a subscription callback) runs `handle(msg)` as a task of its own, at most `limit`
    at once. Past that the callback waits for a free slot, so that a flood queues in the client
    (nats-py's pending buffer, with its limits), not in memory as tasks."""

    def __init__(self, handle: Callable[[Msg], Awaitable[None]], limit: int) -> None:
        self._handle = handle
        self._slots = asyncio.Semaphore(limit)
        self._in_flight: set[asyncio.Task[None]] = set()

    async def take(self, msg: Msg) -> None:
        """The subscription callback."""
        await self._slots.acquire()
        task = asyncio.create_task(self._run(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    async def _run(self, msg: Msg) -> None:
        await self._handle(msg)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def drain(self) -> None:
        """Until every message taken so far is handled (stop taking new ones first)."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
