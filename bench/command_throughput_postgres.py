"""`command_throughput` on PostgreSQL: the product and the raw `save()` loop each in a fresh
schema, dropped afterwards. Floor 1.2 and goal 2.0 (issue 17)."""

from __future__ import annotations

from bench import command_throughput
from bench.harness import Result
from bench.stores import POSTGRES_URL, postgres, postgres_problem


def run(quick: bool) -> Result:
    problem = postgres_problem()
    if problem is not None:
        return Result(
            "command_throughput_postgres", 0, 0, "commands/s", 1.2, 2.0, {"skipped": problem}
        )
    result = command_throughput.measure(
        "command_throughput_postgres", 200 if quick else 5000, postgres, floor=1.2, goal=2.0
    )
    result.notes.update(store=POSTGRES_URL)
    return result
