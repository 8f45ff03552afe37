"""End-to-end fixtures: `tenantry up` as a real process, driven over the bus."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from tenantry.server.nats_server import free_port


@dataclass
class Tenantry:
    """A `tenantry up` process with its own state directory and nats-server port."""

    state_dir: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # More settings for the next `start` (TENANTRY_EXPIRY_INTERVAL, …).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "TENANTRY_STATE_DIR": str(self.state_dir),
            "TENANTRY_NATS_PORT": str(self.port),
            "TENANTRY_LOG_FORMAT": "json",
            "TENANTRY_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }
        env.pop("TENANTRY_NATS_URL", None)
        return env

    def start(self) -> None:
        log = (self.state_dir.parent / "tenantry-up.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tenantry.cli", "up"], env=self.env(), stdout=log, stderr=log
        )

    def run_up(self, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
        """Another `tenantry up` with this one's settings (and `env`), to its end."""
        return subprocess.run(
            [sys.executable, "-m", "tenantry.cli", "up"],
            env={**self.env(), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until `nats.url` names this instance's bus (written once commands and queries
        answer) and the command service answers."""
        deadline = time.monotonic() + timeout
        url_file = self.state_dir / "nats.url"
        while not (url_file.exists() and url_file.read_text().strip() == self.url):
            assert self.process is not None and self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"no nats.url in {timeout}s:\n{self.log()}"
            await asyncio.sleep(0.02)
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                nc = await nats.connect(self.url, connect_timeout=1, allow_reconnect=False)
            except Exception:
                await asyncio.sleep(0.05)
                continue
            try:
                reply = await nc.request("tenantry.cmd.create_environment", b"{", timeout=1)
                if json.loads(reply.data)["error"]["code"] == "validation_error":
                    return
            except Exception:
                await asyncio.sleep(0.05)
            finally:
                await nc.close()
        raise TimeoutError(f"tenantry up not ready in {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def log(self) -> str:
        path = self.state_dir.parent / "tenantry-up.log"
        return path.read_text()[-4000:] if path.exists() else ""

    async def command(self, name: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        nc = await nats.connect(self.url)
        try:
            reply = await nc.request(
                f"tenantry.cmd.{name}",
                json.dumps(body).encode(),
                timeout=10,
                headers=headers or None,
            )
            answer: dict[str, Any] = json.loads(reply.data)
            return answer
        finally:
            await nc.close()


@pytest.fixture
def tenantry_up(tmp_path: Path) -> Iterator[Tenantry]:
    instance = Tenantry(tmp_path / "state")
    yield instance
    if instance.process is not None and instance.process.poll() is None:
        instance.process.kill()
        instance.process.wait()
