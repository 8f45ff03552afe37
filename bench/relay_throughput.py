"""Events per second from the store to JetStream, against nats-py publishing the same payloads
to a stream, pipelined (`publish_async`, 4,000 acks pending), in the same run. The store is
SQLite here, PostgreSQL in `relay_throughput_postgres` (the baseline does not read a store: it
is the bus's own pace). Floors and goals are issue 17's: 0.8 and 1.2 here."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import uuid
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from bench.harness import Result, stopwatch
from bench.stores import Store, sqlite
from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import (
    INTERNAL_TOPICS,
    STREAM_NAME,
    ZERO_HASH,
    canonical_json,
    chained_body,
    subject_of,
)
from domain.service import TenancyService
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer
from tenantry.server.store import event_store_env


def fill(service: TenancyService, commands: int, group: int = 64) -> None:
    """Set-up, not measured: grouped like concurrent commands, so that it is quick."""
    service.seed_default_environments()
    for start in range(0, commands, group):
        items = [
            (
                COMMANDS["create_team"].model_validate({"name": f"t-{i}", "members": []}),
                CommandContext("user:ana@example.com", str(uuid.uuid4()), "b"),
            )
            for i in range(start, min(start + group, commands))
        ]
        service.handle_batch(items)


async def _baseline(url: str, payloads: list[tuple[str, bytes]]) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4000)
    await js.add_stream(StreamConfig(name="RAW", subjects=["raw.>"], storage=StorageType.FILE))
    with stopwatch() as elapsed:
        acks = [await js.publish_async("raw." + subject, data) for subject, data in payloads]
        await asyncio.gather(*acks)
    await nc.close()
    return len(payloads) / elapsed[0]


async def _product(url: str, service: TenancyService, events: int) -> float:
    nc = await nats.connect(url)
    relay = Relay(service.recorder, nc, poll_interval=0.01)  # its production page size
    stop = asyncio.Event()
    await relay.ensure_stream()  # like the baseline's add_stream: set-up, not throughput
    with stopwatch() as elapsed:
        task = asyncio.create_task(relay.run(stop))
        while relay.published < events:  # noqa: ASYNC110 (a counter, checked each ms)
            await asyncio.sleep(0.001)
        stop.set()
        await task
    info = await nc.jetstream().stream_info(STREAM_NAME)
    assert info.state.messages == events, (info.state.messages, events)
    await nc.close()
    return events / elapsed[0]


def run(quick: bool) -> Result:
    return measure("relay_throughput", 2000 if quick else 20000, sqlite, floor=0.8)


def measure(scenario: str, commands: int, store: Store, *, floor: float) -> Result:
    with tempfile.TemporaryDirectory() as tmp, store(Path(tmp) / "state") as settings:
        folder = Path(tmp)
        service = TenancyService(event_store_env(settings))
        try:
            fill(service, commands)
            payloads = []
            prev = ZERO_HASH
            for n in service.recorder.select_notifications(None, 10_000_000):
                if n.topic in INTERNAL_TOPICS:
                    continue
                body = chained_body(n, prev)
                prev = body["hash"]
                payloads.append((subject_of(body), canonical_json(body)))
            raws, ours = [], []
            for round_ in range(3):  # alternating rounds, medians: the machine is shared
                server = NatsServer(folder / f"nats-{round_}").start()
                try:
                    raws.append(asyncio.run(_baseline(server.url, payloads)))
                    ours.append(asyncio.run(_product(server.url, service, len(payloads))))
                finally:
                    server.stop()
        finally:
            service.close()
    return Result(
        scenario,
        statistics.median(ours),
        statistics.median(raws),
        "events/s",
        floor,
        1.2,
        {"events": len(payloads), "rounds": 3},
    )
