"""`relay_throughput` reading a PostgreSQL event store (a fresh schema, dropped afterwards).
Floor 0.6 and goal 1.2 (issue 17)."""

from __future__ import annotations

from bench import relay_throughput
from bench.harness import Result
from bench.stores import POSTGRES_URL, postgres, postgres_problem


def run(quick: bool) -> Result:
    problem = postgres_problem()
    if problem is not None:
        return Result("relay_throughput_postgres", 0, 0, "events/s", 0.6, 1.2, {"skipped": problem})
    result = relay_throughput.measure(
        "relay_throughput_postgres",
        1000 if quick else 20000,
        postgres,
        floor=0.6,
        rounds=relay_throughput.QUICK_ROUNDS if quick else relay_throughput.ROUNDS,
    )
    result.notes.update(store=POSTGRES_URL)
    return result
