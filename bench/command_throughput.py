"""Commands per second over the bus (many in flight) against eventsourcing's `save()` of equal
aggregates in a plain loop on the same kind of store: SQLite here, PostgreSQL in
`command_throughput_postgres`.

The command service and the baseline run in this process; the clients sending the commands
run in a process of their own, as clients do (until 2026-11-29 they shared the service's event
loop and their work counted as the product's)."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from uuid import UUID

import nats
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.harness import Result, stopwatch
from bench.stores import Store, sqlite
from domain.service import TenancyService
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.nats_server import NatsServer
from tenantry.server.store import event_store_env
from tenantry.settings import Settings

_REPO = Path(__file__).resolve().parents[1]  # where `python -m bench.clients` is found


class _RawTeam(Aggregate):
    """The baseline's aggregate: the same fields as a Tenantry team, nothing else."""

    @event("Created")
    def __init__(self, name: str, members: list[str]) -> None:
        self.name = name
        self.members = members


def baseline(count: int, settings: Settings) -> float:
    app: Application[UUID] = Application(event_store_env(settings))
    teams = [_RawTeam(name=f"team-{i}", members=["ana@example.com"]) for i in range(count)]
    with stopwatch() as elapsed:
        for team in teams:
            app.save(team)
    app.close()
    return count / elapsed[0]


async def product(
    count: int, folder: Path, settings: Settings, in_flight: int = 64, prefix: str = "team"
) -> tuple[float, dict[str, float]]:
    """The command service in this process; its clients in another (`python -m bench.clients`),
    as they are in production, so that making the load does not take the service's CPU.
    The teams it creates are named `<prefix>-<i>`."""
    server = NatsServer(folder / "nats").start()
    service = TenancyService(event_store_env(settings))
    service.seed_default_environments()
    service_nc = await nats.connect(server.url)
    endpoint = CommandEndpoint(service_nc, service, max_in_flight=in_flight)
    await endpoint.start()
    try:
        clients = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.clients",
            server.url,
            str(count),
            str(in_flight),
            prefix,
            stdout=asyncio.subprocess.PIPE,
            cwd=_REPO,
        )
        out, _ = await clients.communicate()
    finally:
        await endpoint.stop()
        await service_nc.drain()
        service.close()
        server.stop()
    if clients.returncode != 0:
        raise RuntimeError(f"the clients failed with exit code {clients.returncode}")
    answer = json.loads(out)
    elapsed, latencies = answer["elapsed"], answer["latencies"]
    latencies.sort()
    return count / elapsed, {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "in_flight": in_flight,
    }


def run(quick: bool) -> Result:
    return measure("command_throughput", 500 if quick else 5000, sqlite, floor=0.8, goal=1.2)


def measure(scenario: str, count: int, store: Store, *, floor: float, goal: float) -> Result:
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
        goal,
        {"commands": count, "rounds": rounds, **notes},
    )
