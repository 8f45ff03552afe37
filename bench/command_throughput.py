"""Commands per second over the bus (many in flight) against eventsourcing's `save()` of equal
aggregates in a plain loop on the same kind of store: SQLite here, PostgreSQL in
`command_throughput_postgres`.

The command service and the baseline run in this process; the clients sending the commands
run in a process of their own, as clients do (until 2026-11-29 they shared the service's event
loop and their work counted as the product's)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import nats
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.harness import Result, stopwatch
from bench.stores import Store, sqlite
from domain.service import TenancyService
from tenantry.command_endpoint import CommandEndpoint
from tenantry.nats_server import NatsServer
from tenantry.settings import Settings
from tenantry.store import event_store_env


class _RawTeam(Aggregate):
    """The baseline's aggregate: the same fields as a Tenantry team, nothing else."""

    @event("Created")
    def __init__(self, name: str, members: list[str]) -> None:
        self.name = name
        self.members = members


def baseline(count: int, settings: Settings) -> float:
    app: Application = Application(event_store_env(settings))
    teams = [_RawTeam(name=f"team-{i}", members=["ana@example.com"]) for i in range(count)]
    with stopwatch() as elapsed:
        for team in teams:
            app.save(team)
    app.close()
    return count / elapsed[0]


async def product(
    count: int, folder: Path, settings: Settings, in_flight: int = 64
) -> tuple[float, dict[str, float]]:
    """The command service in this process; its clients in another (`_clients`), as they are
    in production, so that making the load does not take the service's CPU."""
    server = NatsServer(folder / "nats").start()
    service = TenancyService(event_store_env(settings))
    service.seed_default_environments()
    service_nc = await nats.connect(server.url)
    endpoint = CommandEndpoint(service_nc, service, max_in_flight=in_flight)
    await endpoint.start()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    clients = context.Process(target=_clients, args=(theirs, server.url, count, in_flight))
    try:
        clients.start()
        answer = await asyncio.to_thread(ours.recv)
        await asyncio.to_thread(clients.join)
    finally:
        if clients.is_alive():
            clients.kill()
        await endpoint.stop()
        await service_nc.drain()
        service.close()
        server.stop()
    if isinstance(answer, str):
        raise RuntimeError(f"the clients failed: {answer}")
    elapsed, latencies = answer
    latencies.sort()
    return count / elapsed, {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "in_flight": in_flight,
    }


def _clients(pipe: Connection, url: str, count: int, in_flight: int) -> None:
    """`count` create_team commands, `in_flight` at a time; sends (elapsed s, latencies)."""

    async def main() -> tuple[float, list[float]]:
        client = await nats.connect(url)
        slots = asyncio.Semaphore(in_flight)
        latencies: list[float] = []

        async def one(i: int) -> None:
            async with slots:
                body = json.dumps({"name": f"team-{i}", "members": ["ana@example.com"]}).encode()
                started = time.perf_counter()
                reply = await client.request(
                    "tenantry.cmd.create_team",
                    body,
                    timeout=60,
                    headers={"Tenantry-Command-Id": str(uuid.uuid4())},
                )
                latencies.append(time.perf_counter() - started)
                assert json.loads(reply.data)["ok"], reply.data

        try:
            with stopwatch() as elapsed:
                await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            await client.close()
        return elapsed[0], latencies

    try:
        pipe.send(asyncio.run(main()))
    except BaseException as exc:
        pipe.send(f"{type(exc).__name__}: {exc}")
        raise


def run(quick: bool) -> Result:
    return measure("command_throughput", 500 if quick else 5000, sqlite, floor=0.5)


def measure(scenario: str, count: int, store: Store, *, floor: float) -> Result:
    """Alternating rounds, medians of each side: the machine is shared and disk-bound."""
    rounds = 3
    raws: list[float] = []
    ours: list[float] = []
    notes: dict[str, float] = {}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            with store(folder / "raw") as settings:
                raws.append(baseline(count, settings))
            with store(folder / "state") as settings:
                rate, notes = asyncio.run(product(count, folder, settings))
            ours.append(rate)
    return Result(
        scenario,
        statistics.median(ours),
        statistics.median(raws),
        "commands/s",
        floor,
        1.0,
        {"commands": count, "rounds": rounds, **notes},
    )
