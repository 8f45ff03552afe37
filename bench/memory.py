"""Peak memory of a `tenantry up` process as its history grows.

`tenantry up` runs as a subprocess (SQLite under a temporary state directory, its own
nats-server, every role). Concurrent `create_team` commands over the bus push 100k events through
it (1k with --quick): each is stored, relayed to JetStream and projected. At 25%, 50%, 75% and
100% of the history, once the stream and the views have caught up, its /proc/<pid>/status is read:
VmHWM (the peak resident set so far) and VmRSS (now). The nats-server it started is a process of
its own; its resident set is noted beside.

Reported, not gated. The issue's goal is under 300 MB and flat as history grows. The harness wants
a higher-is-better ratio against a baseline from the same run, so product is the peak at 25% of
the history and baseline the peak at 100%: the ratio is 1.0 when memory is flat, 0.5 when the peak
doubled over the last three quarters. The figures at each sample are in the notes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError

from bench.harness import Result
from domain.event_log import STREAM_NAME
from tenantry.protocol import COMMAND_ID_HEADER, QueryTimeout, command_subject, query_subject
from tenantry.server.nats_server import free_port

GOAL_MB = 300
_SEEDED = 3  # dev, staging and prod, created at the first start
_IN_FLIGHT = 256
_MEMBERS = ["ana@example.com", "bo@example.com", "cy@example.com"]


def _status_kb(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of `pid`, in kB, from /proc (Linux)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.extend(int(child) for child in children)
    return found


class _Up:
    """`tenantry up` as a process, driven over the bus of the nats-server it starts."""

    def __init__(self, folder: Path) -> None:
        self.state_dir = folder / "state"
        self.port = free_port()
        self.log_path = folder / "tenantry-up.log"
        env = {
            **os.environ,
            "TENANTRY_STATE_DIR": str(self.state_dir),
            "TENANTRY_NATS_PORT": str(self.port),
            "TENANTRY_METRICS_PORT": str(free_port()),
            "TENANTRY_LOG_FORMAT": "json",
        }
        for name in ("TENANTRY_NATS_URL", "TENANTRY_DATABASE_URL"):
            env.pop(name, None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tenantry.cli", "up"], env=env, stdout=log, stderr=log
            )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def connect(self) -> Client:
        """A connection, once the command and query services answer (within a minute)."""
        deadline = time.monotonic() + 60
        nats_url_file = self.state_dir / "nats.url"  # written once its nats-server listens
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tenantry up exited: {self.log_path.read_text()[-2000:]}")
            if not nats_url_file.exists():
                await asyncio.sleep(0.05)
                continue
            nc = await nats.connect(self.url, connect_timeout=1, max_reconnect_attempts=0)
            try:
                await nc.request(command_subject("create_team"), b"{", timeout=2)
                await nc.request(query_subject("list_environments"), b"{}", timeout=2)
            except (NoRespondersError, TimeoutError):
                await nc.close()
                await asyncio.sleep(0.05)
                continue
            return nc
        raise TimeoutError(f"tenantry up not ready in a minute: {self.log_path}")

    def memory(self) -> dict[str, float]:
        own = _status_kb(self.process.pid)
        nats_rss = sum(_status_kb(child).get("VmRSS", 0) for child in _children(self.process.pid))
        return {
            "hwm_mb": round(own["VmHWM"] / 1024, 1),
            "rss_mb": round(own["VmRSS"] / 1024, 1),
            "nats_server_rss_mb": round(nats_rss / 1024, 1),
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _push(nc: Client, names: Iterator[int], count: int) -> int:
    """Send `count` create_team commands, `_IN_FLIGHT` at a time; the highest reply position."""
    highest = 0
    batch = itertools.islice(names, count)

    async def sender() -> None:
        nonlocal highest
        for i in batch:  # shared: each sender takes the next name
            body = json.dumps({"name": f"team-{i}", "members": _MEMBERS}).encode()
            reply = await nc.request(
                command_subject("create_team"),
                body,
                timeout=60,
                headers={COMMAND_ID_HEADER: str(uuid.uuid4())},
            )
            answer: dict[str, Any] = json.loads(reply.data)
            assert answer["ok"], answer
            highest = max(highest, int(answer["position"]))

    await asyncio.gather(*(sender() for _ in range(_IN_FLIGHT)))
    return highest


async def _caught_up(nc: Client, events: int, position: int) -> None:
    """Until the stream holds `events` messages and the views have applied `position`."""
    js = nc.jetstream()
    while (await js.stream_info(STREAM_NAME)).state.messages < events:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # a count on the server, looked at every 50 ms
    params = json.dumps({"min_position": position, "min_position_timeout": 30}).encode()
    while True:
        reply = json.loads(
            (await nc.request(query_subject("list_environments"), params, timeout=35)).data
        )
        if reply["ok"]:
            return
        assert reply["error"]["code"] == QueryTimeout.code, reply


async def _measure(up: _Up, events: int) -> tuple[list[dict[str, Any]], float]:
    nc = await up.connect()
    names = itertools.count()
    samples = []
    started = time.perf_counter()
    try:
        sent = 0
        for quarter in (1, 2, 3, 4):
            target = events * quarter // 4
            position = await _push(nc, names, target - sent)
            sent = target
            await _caught_up(nc, _SEEDED + sent, position)
            samples.append({"events": _SEEDED + sent, **up.memory()})
    finally:
        await nc.close()
    return samples, time.perf_counter() - started


def run(quick: bool) -> Result:
    events = 1_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        up = _Up(Path(tmp))
        try:
            samples, elapsed = asyncio.run(_measure(up, events))
        finally:
            up.stop()
    first, last = samples[0], samples[-1]
    return Result(
        "memory",
        first["hwm_mb"],
        last["hwm_mb"],
        "MB",
        0.0,
        0.9,
        {
            "samples": samples,
            "goal_mb": GOAL_MB,
            "under_goal": last["hwm_mb"] < GOAL_MB,
            "events_per_s": round(events / elapsed),
            "gated": False,
        },
    )
