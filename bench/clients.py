"""The clients of `command_throughput`, in a process of their own:
`python -m bench.clients URL COUNT IN_FLIGHT [NAME_PREFIX]` prints
`{"elapsed": s, "latencies": [s, …]}`.
It imports little (nats-py and the standard library), so that it starts in a fraction of a
second."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import nats

from tenantry.protocol import COMMAND_ID_HEADER, command_subject


def send_commands(
    url: str, count: int, in_flight: int, prefix: str = "team"
) -> tuple[float, list[float]]:
    """`count` create_team commands (teams `<prefix>-<i>`), `in_flight` at a time: (elapsed s,
    each one's latency)."""

    async def main() -> tuple[float, list[float]]:
        client = await nats.connect(url)
        slots = asyncio.Semaphore(in_flight)
        latencies: list[float] = []

        async def one(i: int) -> None:
            async with slots:
                team = {"name": f"{prefix}-{i}", "members": ["ana@example.com"]}
                body = json.dumps(team).encode()
                started = time.perf_counter()
                reply = await client.request(
                    command_subject("create_team"),
                    body,
                    timeout=60,
                    headers={COMMAND_ID_HEADER: str(uuid.uuid4())},
                )
                latencies.append(time.perf_counter() - started)
                assert json.loads(reply.data)["ok"], reply.data

        try:
            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            elapsed = time.perf_counter() - started
        finally:
            await client.close()
        return elapsed, latencies

    return asyncio.run(main())


if __name__ == "__main__":
    url, count, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    elapsed, latencies = send_commands(url, count, in_flight, *sys.argv[4:5])
    print(json.dumps({"elapsed": elapsed, "latencies": latencies}))
