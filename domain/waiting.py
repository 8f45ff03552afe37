"""Waiting for the first of several asyncio events, as every follower of the event log does
(the views' runner, the relay, the checkpointer, the query endpoint's read-your-writes wait).
Here, not in `tenantry/`, because the views may import only `domain`."""

from __future__ import annotations

import asyncio


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
