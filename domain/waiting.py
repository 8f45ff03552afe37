"""Waiting for the first of several asyncio events, as every follower of the event log does
(the views' runner, the relay, the checkpointer, the query endpoint's read-your-writes wait).
Here, not in `tenantry/`, because the views may import only `domain`."""

from __future__ import annotations

import asyncio
import contextlib


async def first_of(*events: asyncio.Event, within: float | None = None) -> None:
    """Return once any of `events` is set, or after `within` seconds (None: no limit)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def set_on(stop: asyncio.Event, wakeup: asyncio.Event) -> None:
    """Set `wakeup` once `stop` is (run as a task): a follower can then await its wake-up
    alone, which a commit's `set` resumes in one turn of the loop; a wait on either of two
    events (`first_of`) takes three, interleaved with whatever else the loop runs."""
    await stop.wait()
    wakeup.set()


class StreamMark:
    """How far the relay in this process has put on the stream (acked) what this process
    committed, as store positions: the views' runner of the same process lets it go first.

    Both follow the same commits, and a thread of the views' runner holds the interpreter for
    the whole of its batch: begun at once, it held up the relay's publish and its ack (and the
    command's reply) by that batch. The views wait for the stream instead, within a bound: a
    relay that is stopped, failing or far behind never holds them up for longer."""

    def __init__(self) -> None:
        self.committed = 0  # the last position this process committed (as the relay was handed)
        self.on_stream = 0  # the last position the relay here has on the stream (acked)
        self.relaying = False  # whether a relay runs in this process
        self._moved = asyncio.Event()

    def commit(self, position: int) -> None:
        self.committed = max(self.committed, position)

    def publish(self, position: int) -> None:
        self.on_stream = max(self.on_stream, position)
        self._moved.set()

    def stop_relaying(self) -> None:
        self.relaying = False
        self._moved.set()

    def behind(self) -> bool:
        """Whether a relay here has not yet put on the stream all this process committed."""
        return self.relaying and self.on_stream < self.committed

    async def caught_up(self, within: float) -> bool:
        """Until what was committed here so far is on the stream (or no relay runs here), or
        `within` seconds passed; whether it is. Later commits don't extend the wait."""
        target = self.committed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.relaying and self.on_stream < target:
                    self._moved.clear()
                    await self._moved.wait()
        return not (self.relaying and self.on_stream < target)
