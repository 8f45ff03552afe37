"""Events per second from the store to JetStream, against nats-py publishing the same payloads
to a stream, pipelined (`publish_async`, 4,000 acks pending), in the same run. The store is
SQLite here, PostgreSQL in `relay_throughput_postgres` (the baseline does not read a store: it
is the bus's own pace). Floors and goals are issue 17's: 0.8 and 1.2 here.

Each round starts a fresh nats-server, on which both sides publish to a fresh stream of their
own, one after the other, once the server has stored a first 2,000 messages elsewhere, half
of them as each side publishes (a server just started spends more CPU on its first messages:
the side that went first paid for it). The
side that goes first alternates from round to round all the same, so that neither always
publishes to a server that has just stored the other's messages. The medians of the rounds are
compared: the machine is shared, and a round's rate swings with the CPU others take while the
CPU each side spends per event does not (both are in the notes: this process's, and the
server's, in µs per event)."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
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
from domain.waiting import StreamMark
from tenantry.log.batches import Chained, Pipeline, atomic_batches
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer
from tenantry.server.store import event_store_env

# Rounds at full size and at `--quick` size (a quick round is ~0.1 s a side: more of them).
ROUNDS, QUICK_ROUNDS = 5, 9
# Messages a fresh server stores before a round (`_warm_up`).
WARM_UP = 2000


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


async def _warm_up(url: str, payloads: list[tuple[str, bytes]]) -> None:
    """Messages stored on a stream of neither side, not measured: half published as the
    baseline publishes, half as the relay does (atomic batches). A server just started spends
    more CPU on its first messages, and whichever side went first paid for it (quick size, the
    relay first: 90-110 ms of server CPU for 2,003 events, second: 60-70)."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4000)
    config = StreamConfig(
        name="WARM", subjects=["warm.>"], storage=StorageType.FILE, allow_atomic=True
    )
    await js.add_stream(config)
    half = len(payloads) // 2
    acks = [await js.publish_async("warm." + subject, data) for subject, data in payloads[:half]]
    await asyncio.gather(*acks)
    pipeline = Pipeline(nc)
    events = [Chained("warm." + s, data, n) for n, (s, data) in enumerate(payloads[half:], 1)]
    for batch in atomic_batches(events, half):
        await (await pipeline.send(batch))
    await nc.close()


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
    # Where the relay marks what it has on the stream (as for the views of its process): the
    # end is seen when the last ack comes, as the baseline's, without polling a counter (a
    # wake-up every millisecond took the interpreter from the relay's reader thread).
    mark = StreamMark()
    last = service.recorder.max_notification_id() or 0
    mark.commit(last)
    relay = Relay(service.recorder, nc, poll_interval=0.01, stream=mark)  # its page size
    stop = asyncio.Event()
    await relay.ensure_stream()  # like the baseline's add_stream: set-up, not throughput
    with stopwatch() as elapsed:
        task = asyncio.create_task(relay.run(stop))
        while mark.on_stream < last:
            if not mark.relaying:  # starting (its first requests): not yet marking
                await asyncio.sleep(0.001)
            elif not await mark.caught_up(within=60.0):
                raise TimeoutError("the relay did not publish the store in a minute")
        stop.set()
        await task
    info = await nc.jetstream().stream_info(STREAM_NAME)
    assert info.state.messages == events == relay.published, (info.state.messages, events)
    await nc.close()
    return events / elapsed[0]


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of process `pid` so far (Linux; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(quick: bool) -> Result:
    return measure(
        "relay_throughput",
        2000 if quick else 20000,
        sqlite,
        floor=0.8,
        rounds=QUICK_ROUNDS if quick else ROUNDS,
    )


def measure(
    scenario: str, commands: int, store: Store, *, floor: float, rounds: int = ROUNDS
) -> Result:
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
            sides = ("ours", "raw", "ours_server", "raw_server")
            cpu: dict[str, list[float]] = {side: [] for side in sides}
            for round_ in range(rounds):
                server = NatsServer(folder / f"nats-{round_}").start()
                assert server.process is not None
                pid = server.process.pid
                try:
                    asyncio.run(_warm_up(server.url, payloads[:WARM_UP]))
                    for side in ("raw", "ours") if round_ % 2 == 0 else ("ours", "raw"):
                        started, server_started = time.process_time(), _cpu_seconds(pid)
                        if side == "raw":
                            raws.append(asyncio.run(_baseline(server.url, payloads)))
                        else:
                            ours.append(asyncio.run(_product(server.url, service, len(payloads))))
                        cpu[side].append(time.process_time() - started)
                        cpu[side + "_server"].append(_cpu_seconds(pid) - server_started)
                finally:
                    server.stop()
        finally:
            service.close()
    per_event = {
        f"cpu_us_{name}": round(statistics.median(seconds) / len(payloads) * 1e6, 1)
        for name, seconds in cpu.items()
    }
    return Result(
        scenario,
        statistics.median(ours),
        statistics.median(raws),
        "events/s",
        floor,
        1.2,
        {
            "events": len(payloads),
            "rounds": rounds,
            "round_ratios": [round(o / r, 3) for o, r in zip(ours, raws, strict=True)],
            **per_event,
        },
    )
