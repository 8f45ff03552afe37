"""Waiting for the first of several events, as the log's followers do; the views waiting for
the relay of their process (`StreamMark`)."""

from __future__ import annotations

import asyncio

from domain.waiting import StreamMark, first_of


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


async def test_the_mark_holds_a_waiter_until_the_relay_has_what_was_committed() -> None:
    mark = StreamMark()
    mark.relaying = True
    mark.commit(5)
    assert mark.behind()
    waiting = asyncio.create_task(mark.caught_up(within=30))
    mark.publish(3)  # part of it: still waiting
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    mark.publish(5)
    assert await waiting is True
    assert not mark.behind()


async def test_later_commits_do_not_extend_the_wait() -> None:
    mark = StreamMark()
    mark.relaying = True
    mark.commit(2)
    waiting = asyncio.create_task(mark.caught_up(within=30))
    await asyncio.sleep(0)
    mark.commit(9)  # committed after the waiter began: not what it waits for
    mark.publish(2)
    assert await waiting is True
    assert mark.behind()  # (the next waiter waits for 9)


async def test_without_a_relay_here_nothing_is_waited_for() -> None:
    mark = StreamMark()
    mark.commit(7)  # committed, but no relay of this process follows: nothing will publish
    assert not mark.behind()
    assert await mark.caught_up(within=30) is True


async def test_a_relay_that_stops_releases_the_waiter_and_one_that_lags_costs_the_bound() -> None:
    mark = StreamMark()
    mark.relaying = True
    mark.commit(4)
    waiting = asyncio.create_task(mark.caught_up(within=30))
    await asyncio.sleep(0)
    mark.stop_relaying()
    assert await waiting is True
    mark.relaying = True  # running again, but not publishing
    assert await mark.caught_up(within=0.01) is False
