"""Waiting for the first of several events, as the log's followers do."""

from __future__ import annotations

import asyncio

from domain.waiting import first_of


async def test_returns_when_one_of_the_events_is_set_and_leaves_no_waiter() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_soon(second.set)
    before = len(asyncio.all_tasks())
    await first_of(first, second)
    await asyncio.sleep(0)  # let the cancelled waiter finish
    assert second.is_set() and not first.is_set()
    assert len(asyncio.all_tasks()) == before


async def test_returns_after_within_when_none_is_set() -> None:
    never = asyncio.Event()
    await first_of(never, within=0.01)
    assert not never.is_set()
