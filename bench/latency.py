"""How long after a command's reply its event is on the stream, and visible in a query.

The command, relay and projection roles run in this process (`serve`, SQLite under a temporary
state directory, a nats-server of our own). Commands are sent one at a time: this is latency, not
throughput. For each one, from the moment its reply arrives:
- to the stream: until an ordered JetStream consumer on TENANTRY_EVENTS receives its last event
  (matched by position: a command's events are saved just before its command record, whose
  position the reply carries). The relay is woken by the commit itself, so the event and the
  reply race: this one is signed, negative when the event was on the stream first;
- to a query: a `list_environments` query with `min_position` = the reply's position, sent at
  once (the endpoint waits for the views; nothing polls), until its answer arrives.

Raw baseline, sampled alternately with the commands on the same server: a JetStream publish of
the same payload to a stream of its own, until an ordered consumer receives it.

Floor 0.12, goal 0.3 (issue 17). The harness wants rates whose ratio is higher-is-better,
and reply→stream can be zero or negative, so product and baseline are 1 / p50 (per second) of
the two whole paths from intent to event at a consumer: command sent → its event received, and
raw publish → received. The ratio is raw p50 / product p50. The milliseconds (p50 and p99 of
every path) are in the notes."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench.harness import Result
from domain.event_log import STREAM_NAME, SUBJECT_PREFIX
from tenantry.protocol import ACTOR_HEADER, COMMAND_ID_HEADER, command_subject, query_subject
from tenantry.server.bootstrap import serve
from tenantry.server.nats_server import NatsServer, free_port
from tenantry.settings import Settings

ADMIN = "user:bench@example.com"
_RAW_STREAM = "BENCH_RAW_LATENCY"


class _Arrivals:
    """When each message of an ordered consumer arrived, by key; awaitable per key."""

    def __init__(self) -> None:
        self.at: dict[int, tuple[float, dict[str, Any]]] = {}
        self._waiting: dict[int, asyncio.Future[float]] = {}

    def record(self, key: int, body: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.at[key] = (now, body)
        waiter = self._waiting.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    async def arrival(self, key: int) -> float:
        if key in self.at:
            return self.at[key][0]
        waiter = self._waiting.setdefault(key, asyncio.get_running_loop().create_future())
        async with asyncio.timeout(10):
            return await waiter


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(samples, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(samples, 0.99) * 1000, 3),
    }


async def _until_serving(nc: Client, serving: asyncio.Task[None]) -> None:
    """Until the command and query services answer and the relay has made its stream."""
    js = nc.jetstream()
    while True:
        if serving.done():
            serving.result()  # raises what stopped it
            raise RuntimeError("serve() returned before it was ready")
        try:
            await nc.request(command_subject("create_team"), b"{", timeout=2)
            await nc.request(query_subject("list_environments"), b"{}", timeout=2)
            await js.stream_info(STREAM_NAME)
            return
        except (NoRespondersError, NotFoundError, TimeoutError):
            await asyncio.sleep(0.01)


async def _command(nc: Client, i: int) -> tuple[float, dict[str, Any]]:
    body = json.dumps({"name": f"team-{i}", "members": ["ana@example.com"]}).encode()
    headers = {COMMAND_ID_HEADER: str(uuid.uuid4()), ACTOR_HEADER: ADMIN}
    reply = await nc.request(command_subject("create_team"), body, timeout=10, headers=headers)
    received = time.perf_counter()
    answer: dict[str, Any] = json.loads(reply.data)
    assert answer["ok"], answer
    return received, answer


async def _query(nc: Client, min_position: int | None) -> float:
    params = {} if min_position is None else {"min_position": min_position}
    reply = await nc.request(
        query_subject("list_environments"), json.dumps(params).encode(), timeout=10
    )
    answered = time.perf_counter()
    answer = json.loads(reply.data)
    assert answer["ok"], answer
    assert answer["position"] >= (min_position or 0), answer
    return answered


@dataclass
class _Samples:
    """Seconds, one per command (or raw publish)."""

    sent_to_reply: list[float] = field(default_factory=list)
    sent_to_stream: list[float] = field(default_factory=list)
    reply_to_stream: list[float] = field(default_factory=list)
    reply_to_query: list[float] = field(default_factory=list)
    plain_query: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)


async def _measure(count: int, folder: Path) -> _Samples:
    server = NatsServer(folder / "nats").start()
    settings = Settings(
        state_dir=folder / "state", metrics_port=free_port(), admins=frozenset({ADMIN})
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(
        serve(settings, stop, server.url, ["command", "relay", "projections"])
    )
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    events, raw = _Arrivals(), _Arrivals()
    samples = _Samples()
    try:
        await _until_serving(nc, serving)

        async def on_event(msg: Msg) -> None:
            body = json.loads(msg.data)
            events.record(int(body["position"]), body)

        await js.subscribe(
            SUBJECT_PREFIX + ">", stream=STREAM_NAME, ordered_consumer=True, cb=on_event
        )
        await js.add_stream(
            StreamConfig(name=_RAW_STREAM, subjects=["bench.raw.>"], storage=StorageType.FILE)
        )

        async def on_raw(msg: Msg) -> None:
            raw.record(int(msg.headers["n"]) if msg.headers else -1, {})

        await js.subscribe("bench.raw.>", stream=_RAW_STREAM, ordered_consumer=True, cb=on_raw)
        warm_up = 20
        payload = b""
        for i in range(warm_up + count):
            sent = time.perf_counter()
            replied, answer = await _command(nc, i)
            position = int(answer["position"])
            # The command's record is saved right after its last event, in one transaction.
            last_event = position - 1
            querying = asyncio.create_task(_query(nc, position))
            on_stream = await events.arrival(last_event)
            answered = await querying
            body = events.at[last_event][1]
            assert body["type"] == answer["events"][-1], (body, answer)
            payload = payload or json.dumps(body).encode()
            plain_sent = time.perf_counter()
            plain_answered = await _query(nc, None)
            raw_sent = time.perf_counter()
            await js.publish("bench.raw.team", payload, headers={"n": str(i)})
            raw_received = await raw.arrival(i)
            if i < warm_up:
                continue
            samples.sent_to_reply.append(replied - sent)
            samples.sent_to_stream.append(on_stream - sent)
            samples.reply_to_stream.append(on_stream - replied)
            samples.reply_to_query.append(answered - replied)
            samples.plain_query.append(plain_answered - plain_sent)
            samples.raw.append(raw_received - raw_sent)
    finally:
        await nc.close()
        stop.set()
        await serving
        server.stop()
    return samples


@contextmanager
def _logs_on_stderr() -> Iterator[None]:
    """The roles run here and log (warnings pass the runner's filter): keep stdout for results,
    which `--json` promises are one JSON object per line."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**saved)


def run(quick: bool) -> Result:
    count = 60 if quick else 300
    with tempfile.TemporaryDirectory() as tmp, _logs_on_stderr():
        samples = asyncio.run(_measure(count, Path(tmp)))
    ours = _percentile(samples.sent_to_stream, 0.5)
    raw = _percentile(samples.raw, 0.5)
    return Result(
        "latency",
        1 / ours,
        1 / raw,
        "1/p50 s",
        0.12,  # issue 17's floor and goal
        0.3,
        {
            "commands": count,
            "reply_to_stream": _ms(samples.reply_to_stream),
            "on_stream_before_reply": sum(1 for s in samples.reply_to_stream if s < 0),
            "reply_to_query": _ms(samples.reply_to_query),
            "sent_to_reply": _ms(samples.sent_to_reply),
            "sent_to_stream": _ms(samples.sent_to_stream),
            "raw_publish_to_consume": _ms(samples.raw),
            "plain_query_round_trip": _ms(samples.plain_query),
        },
    )
