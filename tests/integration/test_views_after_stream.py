"""The views' runner lets the relay of its process go first: a commit of this process is applied
to the views once the relay has it on the stream (or after a bound), as the roles wire them
(`FollowedLog.stream`). And a reader waiting for a position while that runner is applying (or
about to) waits for its batch, without reading the store's position in a thread meanwhile."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence

from nats.aio.client import Client
from sqlalchemy import Connection

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import Published
from domain.service import TenancyService
from projections.runner import PROJECTORS, ProjectionRunner
from projections.store import ViewStore
from tenantry.log.relay import Relay
from tenantry.protocol import query_subject
from tenantry.server.query_endpoint import QueryEndpoint
from tenantry.server.wakeups import FollowedLog


def _create_team(service: TenancyService, name: str) -> int:
    context = CommandContext("user:ana@example.com", str(uuid.uuid4()), "after-stream")
    body = {"name": name, "members": ["ana@example.com"]}
    return service.handle(COMMANDS["create_team"].model_validate(body), context).position


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(10_000):  # ten seconds at most
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never: {what}")


def _relay_of(
    service: TenancyService, store_env: dict[str, str], nc: Client
) -> tuple[FollowedLog, Relay]:
    """The relay of this process as the roles wire it: handed the rows `service` commits,
    marking what it has on the stream (`followed.stream`). A 60 s poll: it moves on wake-ups."""
    followed = FollowedLog(service.recorder, service.listeners)
    woken = followed.wakeups(store_env, take_rows=True, relaying=True)
    relay = Relay(
        service.recorder,
        nc,
        wakeup=woken.event,
        recent=woken.recent,
        poll_interval=60.0,
        stream=followed.stream,
    )
    return followed, relay


async def test_the_views_apply_a_commit_once_the_relay_here_has_it_on_the_stream(
    service: TenancyService, store_env: dict[str, str], nc: Client
) -> None:
    followed, relay = _relay_of(service, store_env, nc)
    views_woken = followed.wakeups(store_env, take_rows=True)
    views_rows, views_wakeup = views_woken.recent, views_woken.event
    assert views_rows is not None
    # What the relay had on the stream when the views applied each batch of events (the
    # runner's thread reads the mark: a plain int, written on the loop).
    seen: list[tuple[int, int]] = []

    def record(conn: Connection, events: Sequence[Published]) -> None:
        if events:
            seen.append((events[-1].body["position"], followed.stream.on_stream))

    runner = ProjectionRunner(
        service.recorder,
        ViewStore.in_memory(),
        projectors=(*PROJECTORS, record),
        take_rows=views_rows.take,
        after=followed.stream,
        after_within=30.0,  # longer than any ack: the order, not the bound, is what is tested
    )
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    await _until(lambda: followed.stream.relaying, "the relay runs")
    applying = asyncio.create_task(runner.run(stop, views_wakeup, poll_interval=60.0))
    seeded = service.recorder.max_notification_id() or 0
    # The seed, committed before: applied by the runner's first look, after which it waits for
    # a wake-up (a look still under way at a commit reads what the store has, as it must).
    await _until(lambda: runner.progress.position >= seeded, "the seed applied")
    seen.clear()
    try:
        for i in range(5):
            position = await asyncio.to_thread(_create_team, service, f"team-{i}")
            await _until(lambda: runner.progress.position >= position, "applied")  # noqa: B023
    finally:
        stop.set()
        await asyncio.gather(relaying, applying)
    assert len(seen) == 5
    for applied, on_stream in seen:
        assert on_stream >= applied, seen
    assert not followed.stream.relaying  # a stopped relay holds no one up


async def test_a_relay_that_never_publishes_holds_the_views_up_no_longer_than_the_bound(
    service: TenancyService, store_env: dict[str, str]
) -> None:
    followed = FollowedLog(service.recorder, service.listeners)
    woken = followed.wakeups(store_env, take_rows=True, relaying=True)  # as a relay's
    rows, wakeup = woken.recent, woken.event
    assert rows is not None
    followed.stream.relaying = True  # … that runs, but publishes nothing (the bus is away)
    runner = ProjectionRunner(
        service.recorder,
        ViewStore.in_memory(),
        take_rows=rows.take,
        after=followed.stream,
        after_within=0.05,
    )
    stop = asyncio.Event()
    applying = asyncio.create_task(runner.run(stop, wakeup, poll_interval=60.0))
    try:
        position = await asyncio.to_thread(_create_team, service, "team-alone")
        assert followed.stream.behind()
        await _until(lambda: runner.progress.position >= position, "applied all the same")
    finally:
        stop.set()
        await applying


async def test_a_reader_behind_a_batch_being_applied_waits_for_it_without_a_store_read(
    service: TenancyService, nc: Client
) -> None:
    store = ViewStore.in_memory()
    runner = ProjectionRunner(service.recorder, store)
    await asyncio.to_thread(runner.catch_up)
    looks: list[int] = []

    def position() -> int:  # the store's position, each read of it counted
        looks.append(1)
        return runner.position()

    endpoint = QueryEndpoint(nc, store, position, progress=runner.progress)
    await endpoint.start()
    try:
        wanted = await asyncio.to_thread(_create_team, service, "team-read")
        runner.progress.applying = True  # the runner here has begun the batch that holds it
        asking = asyncio.create_task(
            nc.request(
                query_subject("list_teams"),
                json.dumps({"min_position": wanted}).encode(),
                timeout=10,
            )
        )
        await _until(lambda: endpoint.waiting == 1, "the reader waits")
        assert looks == []  # it waits for the batch: no read of the store's position
        await asyncio.to_thread(runner.catch_up)
        runner.progress.applying = False
        runner.progress.notify(runner.position())
        answer = json.loads((await asyncio.wait_for(asking, 10)).data)
    finally:
        await endpoint.stop()
    assert answer["ok"] and answer["position"] >= wanted
    assert [team["name"] for team in answer["data"]] == ["team-read"]


def test_the_roles_of_one_process_share_one_mark(service: TenancyService) -> None:
    """The relay role marks, the projections role waits: on the same mark (`serve` passes each
    role the same application, and each follows it through `_followed`)."""
    from tenantry.server.roles import _followed

    assert _followed(service).stream is _followed(service).stream
    assert _followed(service).recorder is service.recorder


async def test_the_relay_marks_a_page_on_the_stream_from_its_ack_before_counting_it(
    service: TenancyService, store_env: dict[str, str], nc: Client
) -> None:
    """The mark moves in the ack's own callback, turns of the loop before the relay has
    settled the page (`published` counted): the views waiting for it start that much sooner."""
    followed, relay = _relay_of(service, store_env, nc)
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    seeded = service.recorder.max_notification_id() or 0
    await _until(lambda: followed.stream.relaying and relay.position >= seeded, "the seed")
    await _until(lambda: relay.published > 0, "the seed counted")
    counted = relay.published
    # Every turn of the loop from before the commit: what the mark and the count were.
    turns: list[tuple[int, int]] = []

    async def watch() -> None:
        while not stop.is_set():
            turns.append((followed.stream.on_stream, relay.published))
            await asyncio.sleep(0)

    watching = asyncio.create_task(watch())
    try:
        position = await asyncio.to_thread(_create_team, service, "team-marked")
        await _until(lambda: relay.published > counted, "the page counted")
    finally:
        stop.set()
        await asyncio.gather(relaying, watching)
    first_marked = next(count for on_stream, count in turns if on_stream >= position)
    assert first_marked == counted  # marked on the stream before the relay counted the page
