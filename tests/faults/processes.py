"""`tenantry serve <role>` as real processes for the fault tests (started, SIGKILLed, restarted,
their JSON logs kept), and a bus client that retries the way a careful client does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from tenantry.server.nats_server import _die_with_parent

T = TypeVar("T")
# What a process inherits from the test run; every other TENANTRY_* is set per test.
_INHERITED = {"TENANTRY_NATS_SERVER_BIN"}


def serve_env(
    state_dir: Path, nats_url: str, database_url: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a `tenantry serve` process: this test's store and bus, JSON logs, no
    metrics port (several processes would fight over the default one), quick polling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_") or k in _INHERITED}
    env.update(
        TENANTRY_STATE_DIR=str(state_dir),
        TENANTRY_NATS_URL=nats_url,
        TENANTRY_LOG_FORMAT="json",
        TENANTRY_METRICS_PORT="0",
        TENANTRY_POLL_INTERVAL="0.05",
    )
    if database_url is not None:
        env["TENANTRY_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class Served:
    """One `tenantry serve <role>` process, which can be killed and started again."""

    role: str  # "command", "relay", "projections", "worker namespaces", "worker storage"
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Served:
        # From the event loop's thread, never a worker thread: the child gets SIGTERM when the
        # thread that started it ends (PDEATHSIG), and it must not outlive a killed test run.
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tenantry.cli", "serve", *self.role.split()],
                env=self.env,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then its exit code (it drains first)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.role} ({self.log}) ---\n{self.text()[-chars:]}"

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines whose `event` is `name`."""
        found = []
        for line in self.text().splitlines():
            if f'"{name}"' in line:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == name:
                    found.append(record)
        return found


def stop_all(processes: list[Served]) -> None:
    for served in processes:
        if served.alive():
            with contextlib.suppress(subprocess.TimeoutExpired):  # killed, then
                served.stop(10)


async def request(
    nc: Client,
    subject: str,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await nc.request(subject, data, timeout=timeout, headers=headers)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def request_until_answered(
    nc: Client,
    subject: str,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
    *,
    within: float = 30.0,
    timeout: float = 2.0,
) -> tuple[dict[str, Any], int]:
    """Send, and send again (the same headers: the same command id) while nobody answers: no
    responder, a timeout or a connection that is reconnecting. Returns the answer and how many
    sends it took."""
    deadline = time.monotonic() + within
    backoff = 0.05
    sends = 0
    while True:
        sends += 1
        try:
            return await request(nc, subject, body, headers, timeout), sends
        except (TimeoutError, NoRespondersError, NatsError) as exc:
            if time.monotonic() + backoff > deadline:
                raise TimeoutError(f"{subject}: no answer within {within}s ({exc!r})") from exc
        await asyncio.sleep(backoff)  # a retry's backoff, as any client has
        backoff = min(backoff * 2, 0.5)


async def wait_for_commands(nc: Client, within: float = 30.0) -> None:
    """Until a command service answers (a deliberately invalid command: it writes nothing)."""
    answer, _ = await request_until_answered(
        nc, "tenantry.cmd.create_environment", b"{", within=within, timeout=1.0
    )
    assert answer["error"]["code"] == "validation_error", answer


async def wait_until(
    check: Callable[[], Awaitable[T]], within: float, why: str, every: float = 0.05
) -> T:
    """Until `await check()` is truthy (a deadline, not a sleep); returns what it returned."""
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{why} (not within {within}s)")
        await asyncio.sleep(every)
