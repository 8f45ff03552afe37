"""SIGTERM stops `tenantry up` promptly: under a query load, and with its bus gone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import nats

from tenantry.server.nats_server import NatsServer, free_port
from tests.e2e.conftest import Tenantry

# Far more than a prompt stop takes, far less than what a stuck one does (drains that wait
# 30 s per subscription, readers waiting 30 s for a position nobody writes).
STOP_WITHIN = 25.0


def _start_on(instance: Tenantry, url: str) -> None:
    """`tenantry up` on an external bus (`TENANTRY_NATS_URL`), as the fixture starts it else."""
    env = {
        **os.environ,
        "TENANTRY_STATE_DIR": str(instance.state_dir),
        "TENANTRY_NATS_URL": url,
        "TENANTRY_LOG_FORMAT": "json",
        "TENANTRY_METRICS_PORT": str(instance.metrics_port),
    }
    log = (instance.state_dir.parent / "tenantry-up.log").open("ab")
    instance.process = subprocess.Popen(
        [sys.executable, "-m", "tenantry.cli", "up"], env=env, stdout=log, stderr=log
    )


async def test_sigterm_stops_promptly_when_the_bus_is_unreachable(
    tenantry_up: Tenantry, tmp_path: Path
) -> None:
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    tenantry_up.port = server.port
    _start_on(tenantry_up, server.url)
    try:
        await tenantry_up.wait_ready()
    finally:
        server.stop()
    code = await asyncio.to_thread(tenantry_up.stop, timeout=STOP_WITHIN)
    assert code == 0, tenantry_up.log()  # a clean stop, not a traceback


async def test_sigterm_stops_promptly_under_a_query_load(tenantry_up: Tenantry) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    nc = await nats.connect(tenantry_up.url)
    waiting = json.dumps({"min_position": 10**9, "min_position_timeout": 30}).encode()
    for i in range(2000):
        body = waiting if i % 20 == 0 else b"{}"
        await nc.publish("tenantry.query.list_environments", body, reply=f"_INBOX.load.{i}")
    await nc.flush()
    code = await asyncio.to_thread(tenantry_up.stop, timeout=STOP_WITHIN)
    await nc.close()
    assert code == 0, tenantry_up.log()
